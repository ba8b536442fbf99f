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


# What a user types: `TINYSTORIES_ADMIN_TOKEN=... docker compose --profile offline up`.
USER_ENV = {"TINYSTORIES_ADMIN_TOKEN": "compose-test-token-1f2e3d"}
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_]\w*))"
)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable rules: $$, $X, ${X}, ${X:-d}, ${X-d}, ${X:?e}, ${X?e}, ${X:+a},
    ${X+a}. An unset ${X} (and ${X:-}) becomes an empty string, as compose passes it."""

    def one(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and not value)
        if op in (":-", "-"):
            return arg if unset_or_empty else str(value)
        if op in (":?", "?"):
            if unset_or_empty:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VARIABLE.sub(one, value)


def rendered(node: Any, env: dict[str, str]) -> Any:
    """The compose file's values after interpolation (keys are never interpolated)."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [rendered(v, env) for v in node]
    if isinstance(node, dict):
        return {k: rendered(v, env) for k, v in node.items()}
    return node


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET:-}", env) == "x d  d "
    assert interpolate("$$HOME ${SET:+alt} ${EMPTY:+alt} $SET", env) == "$HOME alt  x"
    with pytest.raises(ValueError, match="UNSET is missing: say it"):
        interpolate("${UNSET:?say it}", env)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return rendered(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), USER_ENV)


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


EXTERNAL_IMAGES = {"postgres", "prometheus", "grafana"}


def test_every_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    seen = set()
    for name, service in compose["services"].items():
        if "build" not in service:
            assert name in EXTERNAL_IMAGES, f"{name}: not built from the project's Dockerfile"
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
    assert checked >= 10
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    log_format = raw["x-service-env"]["TINYSTORIES_LOG_FORMAT"]
    default = re.search(r":-(\w+)\}", log_format)
    assert default and default.group(1) in logformat.FORMATS
    api_env = compose["services"]["api"]["environment"]
    assert api_env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in api_env["DATABASE_URL"]


def test_empty_variables_are_unset_for_the_settings(compose: dict[str, Any]) -> None:
    """Every variable a user leaves unset reaches the containers as "": the settings must
    read that as unset (no provider, no limits), not fail or turn the simulator off."""
    api_env = {k: str(v) for k, v in compose["services"]["api"]["environment"].items()}
    assert api_env["OPENAI_API_KEY"] == "" and api_env["TINYSTORIES_MODEL_LIMITS"] == ""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in api_env.items():
            mp.setenv(name, value)
        settings = Settings(_env_file=None)
    assert settings.uses_simulator and settings.model_limits == {}
    assert settings.export_dir == Path("/export") and settings.admin_token is not None


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
    profiles = {name: set(s.get("profiles", [])) for name, s in services.items()}
    assert profiles["simulator"] == {"offline"}
    assert profiles["trainer"] == profiles["grader"] == {"train"}
    assert profiles["trainer-gpu"] == {"gpu"}
    assert profiles["prometheus"] == profiles["grafana"] == {"observability"}
    assert not (profiles["postgres"] | profiles["api"] | profiles["worker"])

    # One export location: the API writes TINYSTORIES_EXPORT_DIR on the export volume, the
    # jobs read its `latest` link from the same volume.
    api_mounts = dict(v.split(":")[:2] for v in services["api"]["volumes"])
    export_dir = services["api"]["environment"]["TINYSTORIES_EXPORT_DIR"]
    assert api_mounts["export"] == export_dir
    for job in ("trainer", "trainer-gpu", "grader"):
        mounts = {v.split(":")[0]: v.split(":")[1] for v in services[job]["volumes"]}
        assert mounts["export"] == export_dir
        command = services[job]["command"]
        assert command[command.index("--data") + 1] == f"{export_dir}/latest"
        assert services[job].get("restart") == "no"
    assert "models" in named_volumes(services["trainer"])
    assert "models" in named_volumes(services["grader"])

    gpu = services["trainer-gpu"]
    assert gpu["build"]["target"] == "train-gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["command"][gpu["command"].index("--device") + 1] == "cuda"
    # The long-running services run the image without torch; the jobs the one with it.
    for name in ("api", "worker", "simulator"):
        assert services[name]["build"]["target"] == "service", name
    for name in ("trainer", "grader"):
        assert services[name]["build"]["target"] == "train", name

    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    for name, service in services.items():
        if "command" in service and service.get("restart") != "no":
            assert "healthcheck" in service, f"{name}: long-running without a healthcheck"
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


def test_observability_files_match_the_metrics(compose: dict[str, Any]) -> None:
    import json

    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["api:8000"]
    assert job["authorization"]["credentials_file"] in " ".join(
        compose["services"]["prometheus"]["command"]
    )
    from service.api import metrics

    source = Path(metrics.__file__).read_text()
    exported = set(re.findall(r'"(tinystories_\w+)"', source))
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/tinystories.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"tinystories_\w+", target["expr"])
    }
    assert used, "the dashboard shows no metric"
    # The exposition names a counter's samples NAME_total: a query for NAME matches nothing.
    counters = set(re.findall(r'CounterMetricFamily\(\s*"(tinystories_\w+)"', source))
    assert {"tinystories_requests", "tinystories_cost_usd"} <= counters
    served = (exported - counters) | {f"{name}_total" for name in counters}
    unknown = {n for n in used if re.sub(r"_(bucket|sum|count)$", "", n) not in served}
    assert unknown == set()


def test_dockerfile_targets() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert stages[0] == ("python:3.11-slim", "python")
    assert {"source", "service", "train", "train-gpu"} <= {name for _, name in stages}
    body = {
        name: text.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]
        for name in ("source", "service", "train", "train-gpu")
    }
    assert "torch" not in body["service"] and "pip install .\n" in body["service"]
    cpu_index = r"torch==2\.13\.0 --index-url https://download\.pytorch\.org/whl/cpu"
    assert re.search(cpu_index, body["train"])
    assert "pip install torch==2.13.0\n" in body["train-gpu"]
    # Triton compiles torch.compile's kernels with the host C compiler: the slim base has none.
    assert re.search(r"apt-get install .*\bgcc\b", body["train-gpu"])
    for name in ("train", "train-gpu"):
        assert "pip install '.[train]'" in body[name]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject
    copied = re.findall(r"^COPY (\S+) \./\1$", body["source"], re.M)
    for package in ("vocab", "generator", "service", "trainer", "grader", "tinystories"):
        assert package in copied and (ROOT / package).is_dir()
    assert "migrations" in copied
    assert text.rstrip().rsplit("\nFROM ", 1)[1].startswith("python AS service")
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd
    argv = yaml.safe_load(cmd.group(1))
    assert argv[0] == "tinystories"
    path, options = resolve_command(argv[1:])
    assert path == ["serve"] and {"--host", "--port"} <= options


def test_composes_postgres_checkpoints_as_the_embedded_server(compose: dict[str, Any]) -> None:
    from service.pgserver import WAL_OPTIONS

    command = compose["services"]["postgres"]["command"]
    assert command[0] == "postgres"  # the image's entrypoint runs its init, then this
    assert " ".join(command[1:]) == WAL_OPTIONS
