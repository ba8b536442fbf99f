"""The `tinystories` application: each pipeline package registers its own commands."""

import typer

from generator import cli as generator_cli
from grader import cli as grader_cli
from service import cli as service_cli
from tinystories import demo
from trainer import cli as trainer_cli
from vocab import cli as vocab_cli

app = typer.Typer(
    name="tinystories",
    help="Make TinyStories-style datasets, train small models on them, grade them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"tinystories {version('tinystories-factory')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("tinystories (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Make TinyStories-style datasets, train small models on them, grade them."""


for module in (vocab_cli, generator_cli, service_cli, trainer_cli, grader_cli):
    module.register(app)
app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    app()
