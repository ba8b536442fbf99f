"""Every `tinystories` command of the README's user guide runs as written.

The commands are read from the README itself (code blocks and inline code), so a renamed flag
or subcommand fails here. What the test changes, and nothing else: placeholders (ID, PATH,
EXPORT_DIR, DIR, my.yaml, farm.txt) become real values made by earlier commands; `a | b ID | c ID`
alternatives each run; an optional `[...]` part is kept; sizes shrink (SMALLER) so the suite
stays fast; the API listens on a free port instead of 8000 (TINYSTORIES_PORT, as a user
would set it). Long-running commands (serve, worker) are started, checked, and stopped.
`make run` is `tinystories demo`, run by tests/tinystories/test_demo.py.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "service" / "data" / "TinyStories-train-sample1200.txt"
LONG_RUNNING = {"serve", "worker", "simulator"}
# Run after everything else: stopping the database under the running API is not the point.
LAST = ("tinystories db stop",)
# Option values scaled down for the suite: (command, option) -> value.
SMALLER = {
    ("generate", "--n"): "12",
    ("train", "--tokens"): "6000",
    ("train", "--batch-size"): "4",
}
# Options added to keep a command small where the README leaves the size to its default.
SMALL_EXTRA = {
    "train": [
        "--max-steps",
        "3",
        "--seq-len",
        "64",
        "--vocab-size",
        "512",
        "--final-eval-tokens",
        "2000",
    ],
    "grade": [
        "--prompts",
        "2",
        "--k",
        "1",
        "--noise-sample",
        "2",
        "--instruct-n",
        "2",
        "--memorization-n",
        "2",
        "--loss-texts",
        "20",
        "--suites",
        "none",
        "--no-checkpoints",
        "--max-new-tokens",
        "32",
    ],
    "grade-pairwise": ["--n", "2", "--max-new-tokens", "32"],
}
START_LIMIT_S = 180.0


def guide_commands() -> list[str]:
    """`tinystories ...` lines of the user guide, in order, with alternatives expanded."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    guide = text.split("## User guide", 1)[1].split("\n## ", 1)[0]
    found: list[str] = []
    in_block = False
    for raw in guide.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_block = not in_block
            continue
        candidates = [line] if in_block else re.findall(r"`(tinystories [^`]+)`", line)
        for candidate in candidates:
            if candidate.startswith("tinystories "):
                found.extend(expand(candidate.split("  #", 1)[0].strip()))
    return found


def expand(command: str) -> list[str]:
    """`tinystories jobs list | show ID` -> both commands; `[opts]` -> kept inline."""
    command = re.sub(r"\[([^\]]*)\]", r"\1", command).strip()
    head, *alternatives = [part.strip() for part in command.split(" | ")]
    if not alternatives:
        return [head]
    prefix = head.rsplit(" ", 1)[0]
    return [head, *(f"{prefix} {alt}" for alt in alternatives)]


def test_the_readme_has_the_commands_this_test_knows() -> None:
    commands = guide_commands()
    names = {shlex.split(c)[1] for c in commands}
    assert {"vocab", "prompt", "generate", "serve", "worker", "jobs", "db", "import"} <= names
    assert {"dedup", "export", "train", "train-presets", "sample", "grade"} <= names
    assert "tinystories jobs show ID" in commands and "tinystories jobs cancel ID" in commands


def answers(url: str) -> bool:
    """Whether a GET of `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Session:
    """Runs README commands in one fresh home and working directory, as a new user would."""

    def __init__(self, tmp: Path) -> None:
        self.cwd = tmp / "work"
        self.cwd.mkdir()
        self.port = free_port()
        self.simulator_port = free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TINYSTORIES_", "OPENAI_")) and k != "DATABASE_URL"
        }
        self.env.update(
            TINYSTORIES_HOME=str(tmp / "home"),
            TINYSTORIES_PORT=str(self.port),
            TINYSTORIES_API_URL=f"http://127.0.0.1:{self.port}",
            TINYSTORIES_PROGRESS_SECONDS="1",
        )
        self.values: dict[str, str] = {
            "PATH": str(SAMPLE),
            "my.yaml": str(self.vocabulary_file(tmp)),
            # Words only: a job takes the six standard features.
            "farm.txt": str(self.words_file(tmp)),
            "DIR": "exports/readme",
            "EXPORT_DIR": "exports/readme",
            # The guide grades a 1M and an 8M model; this session trains the 8M one.
            "models/1M": "models/8M",
        }
        self.background: list[subprocess.Popen] = []

    @staticmethod
    def vocabulary_file(tmp: Path) -> Path:
        path = tmp / "my.yaml"
        path.write_text(
            "nouns: [dog, ball, tree]\nverbs: [run, jump]\nadjectives: [happy, big]\n"
            "features:\n  - {name: Dialogue, phrase: should contain at least one dialogue}\n"
        )
        return path

    @staticmethod
    def words_file(tmp: Path) -> Path:
        path = tmp / "farm.txt"
        path.write_text("cow\tnoun\nhen\tnoun\nmilk\tverb\nfeed\tverb\nmuddy\tadjective\n")
        return path

    def argv(self, command: str) -> list[str]:
        words = shlex.split(command)[1:]
        out = []
        for i, word in enumerate(words):
            if i and (words[0], words[i - 1]) in SMALLER:
                word = SMALLER[(words[0], words[i - 1])]
            out.append(self.values.get(word, word))
        out += SMALL_EXTRA.get(words[0], [])
        if words[0] == "simulator" and "--port" not in words:  # a free port, not the default
            out += ["--port", str(self.simulator_port)]
        return [sys.executable, "-m", "tinystories", *out]

    def run(self, command: str) -> str:
        started = time.monotonic()
        result = subprocess.run(
            self.argv(command),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
        print(f"{time.monotonic() - started:6.1f} s  {command}")
        return result.stdout

    def start(self, command: str, log: Path) -> None:
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                self.argv(command),
                cwd=self.cwd,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append(proc)
        started = time.monotonic()
        while not self.ready(command):
            assert proc.poll() is None, f"{command} exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() - started < START_LIMIT_S, log.read_text()[-3000:]
            time.sleep(0.3)

    def ready(self, command: str) -> bool:
        if " serve" in command:
            return answers(f"http://127.0.0.1:{self.port}/healthz")
        if command.startswith("tinystories simulator"):
            return answers(f"http://127.0.0.1:{self.simulator_port}/v1/simulator/stats")
        return True  # a worker is ready once it runs; the jobs below show it working

    def stop_background(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.background:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self) -> None:
        self.stop_background()
        subprocess.run(
            [sys.executable, "-m", "tinystories", "db", "stop"],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            check=False,
            timeout=120,
        )


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_every_user_guide_command_runs_as_written(tmp_path: Path) -> None:
    session = Session(tmp_path)
    commands = guide_commands()
    ordered = [c for c in commands if c not in LAST] + [c for c in commands if c in LAST]
    try:
        for command in ordered:
            name = shlex.split(command)[1]
            if name in LONG_RUNNING:
                session.start(command, tmp_path / f"{name}.log")
                continue
            if command in LAST:
                session.stop_background()
            output = session.run(command)
            if command.startswith("tinystories jobs submit"):
                session.values["ID"] = re.search(r"^job (\S+) ", output, re.M).group(1)[:8]
    finally:
        session.stop()
    assert (session.cwd / "exports" / "readme" / "dataset_dict.json").exists()
    assert (session.cwd / "models" / "8M" / "config.json").exists()
