"""Versioned grader data files (see SOURCES.md)."""
