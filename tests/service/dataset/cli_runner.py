"""The `import` / `dedup` / `export` commands run in-process against one database."""

from __future__ import annotations

import pytest
from click.testing import Result
from typer.testing import CliRunner


def dataset_cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """`tinystories ARGS` for the dataset commands, with DATABASE_URL set to `url`."""
    import typer

    from service.dataset import cli as dataset_cli_module

    monkeypatch.setenv("DATABASE_URL", url)
    app = typer.Typer()
    dataset_cli_module.register(app)
    app.command("noop", hidden=True)(lambda: None)  # typer runs a lone command without its name
    return CliRunner().invoke(app, list(args))
