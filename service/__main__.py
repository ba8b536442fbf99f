"""`python -m service ...`: the service commands alone (used to spawn workers)."""

import typer

from service.cli import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
register(app)

if __name__ == "__main__":
    app()
