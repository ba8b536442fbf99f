"""Command-line commands of the service package."""

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
