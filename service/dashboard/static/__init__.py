"""Vendored static files of the dashboard (package so the files ship with the wheel)."""
