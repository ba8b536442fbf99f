"""Option checks made before any model generates or any judge is paid.

Each failure is a GraderOptionError naming the flag: the CLI prints it as one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path

from grader.resources import GraderOptionError


def check_minimums(values: dict[str, tuple[float | None, float]]) -> None:
    """{flag: (value, minimum)}; a None value is an option left unset and passes."""
    for flag, (value, minimum) in values.items():
        # `not value >= minimum` also refuses NaN, which compares false with everything.
        if value is not None and not value >= minimum:
            raise GraderOptionError(f"{flag} must be >= {minimum:g} (got {value:g})")


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: Path, flag: str) -> None:
    """A directory that exists or can be made: not a file, nor under one."""
    if path.exists() and not path.is_dir():
        raise GraderOptionError(f"{flag} {path} is a file, not a directory")
    above = _existing_ancestor(path)
    if not above.is_dir():
        raise GraderOptionError(f"{flag} {path}: {above} is a file, not a directory")


def prepare_output_file(path: Path, flag: str) -> None:
    """Make the file's missing parent directories, as `grade --out` makes its directory."""
    if path.is_dir():
        raise GraderOptionError(f"{flag} {path} is a directory; give a file name")
    above = _existing_ancestor(path.parent)
    if not above.is_dir():
        raise GraderOptionError(f"{flag} {path}: {above} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GraderOptionError(f"{flag} {path}: cannot make its directory ({exc})") from exc
