"""A real OpenAI-compatible server for tests: `transformers serve` with a GPT-Neo that our
trainer makes in seconds from the real stories in tests/trainer/data (no download)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

STORIES = Path(__file__).parent / "trainer" / "data" / "tinystories-300.txt"
SEPARATOR = "<|endoftext|>"
MODEL_NAME = "tiny-neo"
# The model is trained on 512-token windows and has 512 positions; a longer prompt makes
# transformers serve answer 500 (an index error in the position embedding). The judge's
# conversation runs to ~1,500 characters, so the template keeps the conversation's last
# 400 characters: at worst one token per character, 400 plus an answer fit in 512.
TAIL_CHARS = 400
CHAT_TEMPLATE = (
    "{%- set text = messages | map(attribute='content') | join('\\n') -%}"
    f"{{{{ text[-{TAIL_CHARS}:] }}}}\n"
)
# The server makes no output while it imports torch and transformers; its CPU time shows it
# is still working. Fail only after this long without log output or CPU time.
STALL_S = 45.0


@dataclass(frozen=True)
class LocalServer:
    """A running `transformers serve`: base URL (ending in /v1), the model name it serves."""

    base_url: str
    model: str
    model_dir: Path
    log: Path


def train_chat_model(root: Path, *, steps: int = 60) -> Path:
    """Train a tiny GPT-Neo on 270 real stories (~5 s on one core) and give its tokenizer a
    chat template, so /v1/chat/completions can render messages. Returns the model directory."""
    import torch
    from transformers import AutoTokenizer

    from trainer.config import TrainConfig
    from trainer.train import train

    stories = [s.strip() for s in STORIES.read_text().split(SEPARATOR) if s.strip()]
    data = root / "text-export"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.txt").write_text(SEPARATOR.join(stories[:270]))
    (data / "validation.txt").write_text(SEPARATOR.join(stories[270:]))
    out = root / MODEL_NAME
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more, and the cores are shared
    try:
        train(
            TrainConfig(
                data=str(data),
                out=str(out),
                preset="tiny",
                vocab_size=512,
                seq_len=512,
                batch_size=4,
                max_steps=steps,
                lr=1e-2,  # high for 60 steps: enough to write word-like text
                warmup_steps=3,
                eval_every=steps,
                log_every=10,
                checkpoint_every=10 * steps,
                eval_tokens=4096,
                final_eval_tokens=4096,
                seed=1,
                cache_dir=str(root / "cache"),
            )
        )
    finally:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    return out


def transformers_cli() -> str | None:
    """The `transformers` command of this environment (else of PATH), or None."""
    beside = Path(sys.executable).parent / "transformers"
    return str(beside) if beside.is_file() else shutil.which("transformers")


def serve_unavailable_reason() -> str | None:
    """Why `transformers serve` cannot start here, or None."""
    from transformers.utils.import_utils import is_serve_available

    if transformers_cli() is None:
        return "the `transformers` command is not installed"
    if not is_serve_available():
        return "transformers serve needs its serving extras (fastapi, uvicorn, openai)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_healthy(proc: subprocess.Popen, base: str, log: Path) -> None:
    """Poll /health; the deadline moves on while the server writes output or uses CPU."""
    watched = psutil.Process(proc.pid)
    progress_at = time.monotonic()
    seen = (-1, -1.0)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"transformers serve exited with {proc.returncode}:\n{_log_tail(log)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=2.0).status_code == 200:
                return
        with contextlib.suppress(psutil.Error):
            cpu = watched.cpu_times()
            now = (log.stat().st_size, cpu.user + cpu.system)
            if now != seen:
                seen, progress_at = now, time.monotonic()
        if time.monotonic() - progress_at > STALL_S:
            raise RuntimeError(
                f"transformers serve made no progress for {STALL_S:g} s:\n{_log_tail(log)}"
            )
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not gone in 10 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def serve_model(model_dir: Path) -> Iterator[LocalServer]:
    """Run `transformers serve` pinned to `model_dir` on a free loopback port until the block
    ends, whatever happens in it. The server runs in the model's parent directory and is given
    the directory's name, so the model name clients send is `tiny-neo`, not a path."""
    reason = serve_unavailable_reason()
    if reason:
        pytest.skip(f"transformers serve cannot start: {reason}")
    cli = transformers_cli()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",  # a local directory; never reach for the Hub
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # OpenMP spinning collapses on cores shared with the tests
        "TOKENIZERS_PARALLELISM": "false",
    }
    log = model_dir.parent / "transformers-serve.log"
    flags = ["--device", "cpu", "--log-level", "info"]
    for _ in range(3):  # the free port may be taken between picking and binding it
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [cli, "serve", model_dir.name, "--host", "127.0.0.1", "--port", str(port), *flags],
                cwd=model_dir.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped whole
            )
        try:
            try:
                _wait_healthy(proc, base, log)
            except RuntimeError:
                if "address already in use" in _log_tail(log).lower():
                    continue
                raise
            yield LocalServer(f"{base}/v1", model_dir.name, model_dir, log)
            return
        finally:
            _stop(proc)
    raise RuntimeError(f"transformers serve found no free port:\n{_log_tail(log)}")
