"""Grading trained models the way the TinyStories paper did: GPT-Eval and its other evaluations."""
