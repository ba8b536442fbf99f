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

for module in (vocab_cli, generator_cli, service_cli, trainer_cli, grader_cli):
    module.register(app)
app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    app()
