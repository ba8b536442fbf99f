"""The `tinystories` command: one entry point over every pipeline stage."""
