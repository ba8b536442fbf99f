"""What every `tinystories` service and dataset command shares: the error line and settings."""

from __future__ import annotations

from typing import Any, NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print one `error: ...` line and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def load_settings(**overrides: Any) -> Any:
    """The service settings with the CLI's overrides; a bad value is one error line."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
