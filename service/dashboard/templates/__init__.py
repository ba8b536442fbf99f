"""Jinja2 templates of the dashboard (package so the files ship with the wheel)."""
