"""docker-compose.yml and Dockerfile against the real CLI, settings and each other.

No Docker engine runs here: the checks read the files and compare them with the typer
application and the settings object the containers will run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from service import logformat
from service.settings import Settings
from tinystories.cli import app

ROOT = Path(__file__).resolve().parents[1]
CHECKED_ENV = re.compile(r"^(TINYSTORIES_\w+|DATABASE_URL|OPENAI_\w+)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def resolve_command(argv: list[str]) -> tuple[list[str], set[str]]:
    """The subcommand path of `argv` after `tinystories` and the option names it accepts."""
    node: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(argv)
    while hasattr(node, "commands"):
        assert rest, f"{' '.join(argv)}: a group ({' '.join(path) or 'tinystories'}), not a command"
        name = rest.pop(0)
        assert name in node.commands, f"tinystories {' '.join(path)}: no subcommand {name!r}"
        node = node.commands[name]
        path.append(name)
    options = {opt for param in node.params for opt in (*param.opts, *param.secondary_opts)}
    return path, options


def settings_env_names() -> set[str]:
    """Environment variable names the service's Settings reads."""
    names = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(c for c in choices if isinstance(c, str) and c.isupper())
        names.add(f"{prefix}{name}".upper())
    return names


def documented_env_names() -> set[str]:
    """Variables documented outside Settings: the log format ones and .env.example entries."""
    names = set(logformat.ENV_VARS)
    example = ROOT / ".env.example"
    if example.exists():
        names.update(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example.read_text(), re.M))
    return names


def env_names(environment: Any) -> list[str]:
    if environment is None:
        return []
    if isinstance(environment, dict):
        return list(environment)
    return [item.split("=", 1)[0] for item in environment]


def named_volumes(service: dict[str, Any]) -> list[str]:
    out = []
    for volume in service.get("volumes", []):
        source = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
        if not source.startswith((".", "/", "~", "$")):
            out.append(source)
    return out


def test_the_cli_walker_rejects_what_does_not_exist() -> None:
    assert resolve_command(["jobs", "submit"])[0] == ["jobs", "submit"]
    with pytest.raises(AssertionError, match="no subcommand 'nope'"):
        resolve_command(["nope"])
    with pytest.raises(AssertionError, match="a group"):
        resolve_command(["jobs"])
    assert "--concurrency" in resolve_command(["worker"])[1]


def test_every_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    seen = set()
    for name, service in compose["services"].items():
        if "build" not in service:
            assert name == "postgres", f"{name}: not built from the project's Dockerfile"
            continue
        command = service["command"]
        assert isinstance(command, list), f"{name}: command must be an exec-form list"
        assert command[0] == "tinystories", f"{name}: runs {command[0]!r}"
        path, options = resolve_command(command[1:])
        seen.add(path[0])
        flags = [arg.split("=", 1)[0] for arg in command[1 + len(path) :] if arg.startswith("--")]
        assert flags, f"{name}: expected explicit options"
        for flag in flags:
            assert flag in options, f"{name}: tinystories {' '.join(path)} has no option {flag}"
    assert {"serve", "worker", "simulator", "train", "grade"} <= seen


def test_environment_names_are_settings_or_documented(compose: dict[str, Any]) -> None:
    known = settings_env_names() | documented_env_names()
    assert {"DATABASE_URL", "OPENAI_API_KEY", "TINYSTORIES_ADMIN_TOKEN"} <= known
    checked = 0
    for name, service in compose["services"].items():
        for var in env_names(service.get("environment")):
            if CHECKED_ENV.match(var):
                checked += 1
                assert var in known, f"{name}: {var} is neither a setting nor documented"
        values = service.get("environment") or {}
        if isinstance(values, dict) and "TINYSTORIES_LOG_FORMAT" in values:
            default = re.search(r":-(\w+)\}", values["TINYSTORIES_LOG_FORMAT"])
            assert default and default.group(1) in logformat.FORMATS
    assert checked >= 10
    api_env = compose["services"]["api"]["environment"]
    assert api_env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in api_env["DATABASE_URL"]


def test_volumes_profiles_and_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for volume in named_volumes(service):
            assert volume in declared, f"{name}: volume {volume!r} is not declared"
            used.add(volume)
    assert used == declared, f"declared but unused: {declared - used}"

    assert "pgdata" in named_volumes(services["postgres"])
    assert "healthcheck" in services["postgres"]
    profiles = {name: set(s.get("profiles", [])) for name, s in services.items()}
    assert profiles["simulator"] == {"offline"}
    assert profiles["trainer"] == profiles["grader"] == {"train"}
    assert not (profiles["postgres"] | profiles["api"] | profiles["worker"])
    for job in ("trainer", "grader"):
        assert "export" in named_volumes(services[job])
        assert services[job].get("restart") == "no"
    assert "export" in named_volumes(services["api"])  # where `tinystories export` writes
    assert "models" in named_volumes(services["trainer"])
    assert "models" in named_volumes(services["grader"])

    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for target, spec in depends.items() if isinstance(depends, dict) else []:
            assert target in services, f"{name} depends on unknown {target}"
            # A default service must not need one that only starts under a profile.
            if profiles[target] and not profiles[name]:
                assert spec.get("required") is False, f"{name} requires profiled {target}"


def test_api_healthcheck_probes_a_real_route(compose: dict[str, Any]) -> None:
    from service.api import create_app

    paths = set(create_app(Settings(_env_file=None)).openapi()["paths"])
    probe = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    (path,) = re.findall(r"127\.0\.0\.1:8000(/\w+)", probe)
    assert path in paths


def test_dockerfile_builds_the_project_on_cpu_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"torch==2\.13\.0 --index-url https://download\.pytorch\.org/whl/cpu", text)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject
    copied = re.findall(r"^COPY (\S+) \./\1$", text, re.M)
    for package in (
        "vocab",
        "generator",
        "service",
        "trainer",
        "grader",
        "tinystories",
        "migrations",
    ):
        assert package in copied and (ROOT / package).is_dir()
    assert re.search(r"^RUN pip install \.", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd
    argv = yaml.safe_load(cmd.group(1))
    assert argv[0] == "tinystories"
    path, options = resolve_command(argv[1:])
    assert path == ["serve"] and {"--host", "--port"} <= options
