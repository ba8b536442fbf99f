"""The embedded server shared by processes, and the CLI around it."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest

from service.pgserver import EmbeddedPostgres


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def home() -> Path:
    # Outside pytest's 0700 tmp tree: the Postgres user must reach it.
    path = Path(tempfile.mkdtemp(prefix="tinystories-home-"))
    yield path
    EmbeddedPostgres(path / "pg").stop(mode="immediate")
    shutil.rmtree(path, ignore_errors=True)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "TINYSTORIES_ADMIN_TOKEN")
    }
    env["TINYSTORIES_HOME"] = str(home)
    env.update(extra)
    return env


def test_concurrent_processes_share_one_embedded_server(home: Path) -> None:
    env = _env(home)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all("database at head" in out for out, _ in outs)
    state = json.loads((home / "pg" / "server.json").read_text())
    info = EmbeddedPostgres(home / "pg").running()
    assert info is not None and (info.port, info.pid) == (state["port"], state["pid"])
    with psycopg.connect(info.url("tinystories", driver="postgresql")) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    from tests.service.test_migrations import head_revision

    assert version == (head_revision(),)
    stopped = _run(["db", "stop"], env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert EmbeddedPostgres(home / "pg").running() is None


def test_cli_errors_are_one_line_exit_1_and_usage_errors_exit_2(home: Path) -> None:
    env = _env(home, TINYSTORIES_API_URL="http://127.0.0.1:9", TINYSTORIES_ADMIN_TOKEN="t")
    result = _run(["jobs", "list"], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the API")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    result = _run(["jobs", "show", "x"], _env(home))
    assert result.returncode == 1 and "no admin token" in result.stderr
    bad = _run(["worker", "--concurrency", "0"], _env(home))
    assert bad.returncode == 2 and "--concurrency" in bad.stderr
    bad = _run(["worker"], _env(home, TINYSTORIES_WORKER_CONCURRENCY="lots"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == (
        "error: setting TINYSTORIES_WORKER_CONCURRENCY='lots': Input should be a valid "
        "integer, unable to parse string as an integer"
    )


def one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and all(n in line for n in needles), line


def test_serve_and_job_commands_refuse_bad_values_in_one_line(home: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    with taken:
        busy = _run(["serve"], _env(home, TINYSTORIES_PORT=port))
    one_line(busy, 1, f"cannot listen on 127.0.0.1:{port}", "TINYSTORIES_PORT")
    one_line(_run(["serve"], _env(home, TINYSTORIES_PORT="99999")), 1, "TINYSTORIES_PORT")
    env = _env(home, TINYSTORIES_API_URL="http://127.0.0.1:9", TINYSTORIES_ADMIN_TOKEN="t")
    nan = _run(["jobs", "submit", "--n", "3", "--budget-usd", "nan"], env)
    one_line(nan, 2, "--budget-usd must be a finite number")
    one_line(_run(["jobs", "budget", "abc", "inf"], env), 2, "finite number")
    # Without TINYSTORIES_API_URL the CLI looks for the API where `serve` would listen.
    port_only = _run(
        ["jobs", "list"], _env(home, TINYSTORIES_PORT="9", TINYSTORIES_ADMIN_TOKEN="t")
    )
    one_line(port_only, 1, "cannot reach the API at http://127.0.0.1:9", "TINYSTORIES_API_URL")
    # Something that is not this API (a proxy's page) answering 200.
    page = http.server.HTTPServer(("127.0.0.1", 0), _HtmlPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{page.server_address[1]}"
        other = _run(
            ["jobs", "list"], _env(home, TINYSTORIES_API_URL=url, TINYSTORIES_ADMIN_TOKEN="t")
        )
    finally:
        page.shutdown()
    one_line(other, 1, "not JSON", "TINYSTORIES_API_URL")
    blocker = home / "a-file"
    blocker.write_text("")
    one_line(_run(["export", "--out", str(blocker / "sub")], _env(home)), 1, "not a directory")
    one_line(_run(["import", str(home)], _env(home)), 2, "is a directory")
    bad_log = _run(["serve"], _env(home, TINYSTORIES_LOG_FORMAT="xml"))
    one_line(bad_log, 1, "TINYSTORIES_LOG_FORMAT", "text, json")
    # The log settings are read from ./.env like every other setting.
    (home / ".env").write_text("TINYSTORIES_LOG_LEVEL=VERBOSE\n")
    from_dotenv = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env=_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line(from_dotenv, 1, "TINYSTORIES_LOG_LEVEL", "'VERBOSE'")
    gone = _run(["db", "stop"], _env(home / "typo"))
    assert gone.returncode == 0 and "no embedded database" in gone.stdout
    assert not (home / "typo").exists()


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>Sign in to the proxy</html>")

    def log_message(self, *args: object) -> None:
        pass


def test_api_errors_read_as_one_line_naming_the_field() -> None:
    import httpx

    from service.api_client import error_text

    request = httpx.Request("POST", "http://x/v1/jobs")
    body = {
        "error": "invalid request",
        "field": "model",
        "detail": [{"field": "model", "message": "Value error, no price known for model 'x'"}],
    }
    assert error_text(httpx.Response(422, json=body, request=request)) == (
        "model: no price known for model 'x'"
    )
    conflict = {"error": "m", "field": "Idempotency-Key", "detail": {"message": "key reused"}}
    assert error_text(httpx.Response(409, json=conflict, request=request)) == (
        "Idempotency-Key: key reused"
    )
    assert error_text(httpx.Response(502, text="Bad gateway\nmore", request=request)) == (
        "Bad gateway"
    )


def test_shared_buffers_follow_the_memory_the_server_may_use(monkeypatch, tmp_path) -> None:
    """A quarter of the machine's memory, or of its container's limit, 128 MB to 8 GB."""
    from service import pgserver

    gib = 1 << 30

    def machine(pages: int) -> None:
        monkeypatch.setattr(
            pgserver.os, "sysconf", lambda name: 4096 if name == "SC_PAGE_SIZE" else pages
        )

    machine(24 * gib // 4096)
    for limit, want in ((None, 6 * 1024), (2 * gib, 512), (256 << 20, 128), (64 * gib, 6 * 1024)):
        monkeypatch.setattr(pgserver, "_cgroup_memory_limit", lambda limit=limit: limit)
        assert pgserver._shared_buffers_mb() == want
    machine(1 << 30)  # 4 TiB
    monkeypatch.setattr(pgserver, "_cgroup_memory_limit", lambda: None)
    assert pgserver._shared_buffers_mb() == 8192
    monkeypatch.undo()
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    v2.write_text("max\n")
    v1.write_text("9223372036854771712\n")  # v1's "unlimited"
    assert pgserver._cgroup_memory_limit((str(v2), str(v1))) is None
    v1.write_text("2147483648\n")
    assert pgserver._cgroup_memory_limit((str(v2), str(v1))) == 2 * gib
    v2.write_text("1073741824\n")
    assert pgserver._cgroup_memory_limit((str(v2), str(tmp_path / "absent"))) == gib


def test_the_embedded_server_checkpoints_less_often_than_postgres_default(
    database_url: str,
) -> None:
    """The band index's random inserts write a full page image per page and checkpoint: the
    server started for tests (as for users) spaces checkpoints by 4 GB of WAL or 15 minutes."""
    import psycopg

    from service.store.exports import libpq_url

    with psycopg.connect(libpq_url(database_url)) as conn:
        got = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings "
                "WHERE name IN ('max_wal_size', 'checkpoint_timeout')"
            ).fetchall()
        )
    assert got == {"max_wal_size": "4096MB", "checkpoint_timeout": "900s"}
