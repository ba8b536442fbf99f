"""Versioned prompt templates (data files only)."""
