"""Command-line commands of the grader package."""

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `tinystories` application."""
