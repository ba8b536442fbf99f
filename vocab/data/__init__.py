"""Packaged word lists (data files only)."""
