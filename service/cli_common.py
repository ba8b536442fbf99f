"""What every `tinystories` service and dataset command shares: the error line and settings."""

from __future__ import annotations

from typing import Any, NoReturn

import typer


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one `error: ...` line and exit (1: the run failed; 2: the command line is wrong)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def usage_error(message: str) -> NoReturn:
    """A bad option value: one line, exit 2 like any other usage error."""
    fail(message, code=2)


def load_settings(**overrides: Any) -> Any:
    """The service settings with the CLI's overrides; a bad value is one error line, exit 1."""
    from service.settings import SettingsInvalid, get_settings

    try:
        return get_settings(**overrides)
    except SettingsInvalid as exc:
        fail(f"setting {exc}")


def database_url(settings: Any, *, migrate: bool = True) -> str:
    """The database every command uses, reachable and (with migrate) at the newest schema:
    a fresh TINYSTORIES_HOME works without `db upgrade`; a problem is one line naming the
    setting."""
    from service.db import resolve_database_url
    from service.migrate import DatabaseUnavailable, ensure_schema
    from service.pgserver import EmbeddedPostgresError

    try:
        url = resolve_database_url(settings)
    except ValueError as exc:
        fail(f"setting DATABASE_URL: {exc}")
    except OSError as exc:
        fail(
            f"setting TINYSTORIES_HOME={settings.home}: cannot keep the embedded database "
            f"there ({exc.strerror or exc})"
        )
    except EmbeddedPostgresError as exc:
        fail(f"embedded database under TINYSTORIES_HOME={settings.home}: {exc}")
    if migrate:
        try:
            ensure_schema(url)
        except DatabaseUnavailable as exc:
            fail(str(exc))
    return url
