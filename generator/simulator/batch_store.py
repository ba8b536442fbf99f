"""The simulator's Batch API state: uploaded files, batches, their progress and persistence.

A batch's progress is a function of the wall clock: request i of n is answered at
`in_progress_at + completion_s * (i + 1) / n`, so whoever looks at a batch (retrieve, list,
cancel) advances it to "now". No background task is needed, and a simulator restarted on the
same state directory resumes every batch where it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from generator.errors import usage_of
from generator.simulator.batch_config import (
    BATCH_ENDPOINT,
    TERMINAL,
    BatchConfig,
    InputError,
    parse_input,
)

_YIELD_EVERY = 200  # answers between event-loop yields while a batch catches up
# Answers one request body, with a forced simulator fault or None: (status, JSON body).
Respond = Callable[[dict, str | None], Awaitable[tuple[int, Any]]]


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    created_at: int
    content: bytes = field(repr=False)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class BatchRecord:
    id: str
    input_file_id: str
    metadata: dict[str, str]
    config: BatchConfig
    created_at: float
    status: str = "validating"
    model: str | None = None
    times: dict[str, float] = field(default_factory=dict)  # in_progress_at, completed_at, ...
    errors: list[dict] = field(default_factory=list)
    done: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    out_lines: list[bytes] = field(default_factory=list, repr=False)
    err_lines: list[bytes] = field(default_factory=list, repr=False)
    requests: list[tuple[str, dict]] = field(default_factory=list, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def to_api(self) -> dict[str, Any]:
        stamp = {k: int(v) for k, v in self.times.items()}
        total = len(self.requests)
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "expires_at": int(self.created_at + self.config.window_s),
            **{
                name: stamp.get(name)
                for name in (
                    "in_progress_at",
                    "finalizing_at",
                    "completed_at",
                    "failed_at",
                    "expired_at",
                    "cancelling_at",
                    "cancelled_at",
                )
            },
            "request_counts": {"total": total, "completed": self.completed, "failed": self.failed},
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata or None,
        }


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class BatchStore:
    """Files and batches of one simulator process, optionally mirrored to `config.state_dir`."""

    def __init__(self, config: BatchConfig, respond: Respond, counts: dict[str, int]) -> None:
        self.config = config
        self.respond = respond
        self.counts = counts  # the simulator's own counters: batch work shows up as batch_*
        self.billed: dict[str, dict[str, int]] = {}  # model -> prompt, completion, cached, answers
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, BatchRecord] = {}
        self.dir = Path(config.state_dir) if config.state_dir else None
        if self.dir is not None:
            (self.dir / "files").mkdir(parents=True, exist_ok=True)
            (self.dir / "batches").mkdir(parents=True, exist_ok=True)
            self._load()

    def _bump(self, key: str, by: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + by

    # ---- files --------------------------------------------------------------------------

    def add_file(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-sim"), filename, purpose, int(time.time()), content)
        self.files[stored.id] = stored
        if self.dir is not None:
            path = self.dir / "files" / stored.id
            _write_atomic(path.with_suffix(".bin"), content)
            meta = {k: v for k, v in dataclasses.asdict(stored).items() if k != "content"}
            _write_atomic(path.with_suffix(".json"), orjson.dumps(meta))
        return stored

    # ---- batches ------------------------------------------------------------------------

    def create(self, input_file_id: str, metadata: dict[str, str]) -> BatchRecord:
        stored = self.files.get(input_file_id)
        if stored is None:
            raise InputError(f"No such File object: {input_file_id}", "input_file_id", 404)
        if stored.purpose != "batch":
            raise InputError("The input file must have purpose 'batch'.", "input_file_id")
        try:
            config = self.config.overridden(metadata)
        except ValueError as exc:
            raise InputError(str(exc), "metadata") from None
        record = BatchRecord(new_id("batch_sim"), input_file_id, metadata, config, time.time())
        record.requests, errors = parse_input(stored.content, max_requests=config.max_requests)
        if record.requests:
            record.model = record.requests[0][1]["model"]
        if errors:
            record.status, record.errors = "failed", errors
            record.times["failed_at"] = record.created_at
        self.batches[record.id] = record
        self._bump("batch_batches")
        self._save(record)
        return record

    async def advance(self, record: BatchRecord) -> None:
        """Bring `record` up to the wall clock: answer what is due, finish what is over."""
        async with record.lock:
            if record.status in TERMINAL:
                return
            now, config = time.time(), record.config
            saved_times = dict(record.times)
            if record.status == "validating":
                started = record.created_at + config.validation_s
                if now < started:
                    return
                record.status, record.times["in_progress_at"] = "in_progress", started
            if record.status == "cancelling":
                await self._finish(record, "cancelled", now)
                return
            deadline = record.created_at + config.window_s
            total = len(record.requests)
            elapsed = min(now, deadline) - record.times["in_progress_at"]
            due = total
            if config.completion_s > 0 and elapsed < config.completion_s:
                due = min(total, math.floor(total * max(0.0, elapsed) / config.completion_s))
            answered = record.done
            await self._answer_until(record, due)
            if record.done == total:
                done_at = record.times["in_progress_at"] + config.completion_s
                await self._finish(record, "completed", min(done_at, now))
            elif now >= deadline:
                await self._finish(record, "expired", deadline)
            elif record.done != answered or "in_progress_at" not in saved_times:
                self._save(record)

    async def cancel(self, record: BatchRecord) -> None:
        """Start cancelling: what is due now is answered, the rest is reported cancelled."""
        if record.status not in ("validating", "in_progress"):
            raise InputError(f"Cannot cancel a batch with status {record.status!r}.")
        await self.advance(record)
        async with record.lock:
            if record.status in ("validating", "in_progress"):
                record.status = "cancelling"
                record.times["cancelling_at"] = time.time()
                self._save(record)

    async def _answer_until(self, record: BatchRecord, due: int) -> None:
        config = record.config
        while record.done < due:
            index = record.done
            custom_id, body = record.requests[index]
            rng = random.Random(f"{config.seed}:{record.id}:{index}")
            fault = config.failure_fault if rng.random() < config.failure_rate else None
            status, answer = await self.respond(body, fault)
            self._bump("batch_requests")
            if status == 200:
                record.completed += 1
                usage = answer.get("usage") or {}
                prompt, completion = (
                    usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", 0),
                )
                record.input_tokens += prompt
                record.output_tokens += completion
                row = self.billed.setdefault(
                    body["model"], {"prompt": 0, "completion": 0, "cached": 0, "answers": 0}
                )
                row["prompt"] += prompt
                row["completion"] += completion
                row["cached"] += usage_of(answer).cached_tokens
                row["answers"] += 1
                self._bump("batch_ok")
                self._bump("batch_prompt_tokens", prompt)
                self._bump("batch_completion_tokens", completion)
            else:
                record.failed += 1
                self._bump("batch_failed")
            line = orjson.dumps(
                {
                    "id": f"batch_req_{record.id[-12:]}_{index}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": status,
                        "request_id": f"req_sim_{record.id[-12:]}_{index}",
                        "body": answer,
                    },
                    "error": None,
                }
            )
            if rng.random() < config.drop_rate:
                self._bump("batch_dropped_lines")
            else:
                if rng.random() < config.malformed_rate:
                    line = line[: len(line) // 2]
                    self._bump("batch_malformed_lines")
                (record.out_lines if status == 200 else record.err_lines).append(line)
            record.done += 1
            if record.done % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let other requests in while a big batch catches up

    async def _finish(self, record: BatchRecord, status: str, at: float) -> None:
        reason = "expired" if status == "expired" else "cancelled"
        message = {
            "expired": "This request could not be executed before the completion window expired.",
            "cancelled": "This request was not executed because the batch was cancelled.",
        }[reason]
        for index in range(record.done, len(record.requests)):
            record.err_lines.append(
                orjson.dumps(
                    {
                        "id": f"batch_req_{record.id[-12:]}_{index}",
                        "custom_id": record.requests[index][0],
                        "response": None,
                        "error": {"code": f"batch_{reason}", "message": message},
                    }
                )
            )
            record.failed += 1
            self._bump(f"batch_{reason}")
        record.done = len(record.requests)
        name = f"batch_{record.id}"
        if record.out_lines:
            record.output_file_id = self._output_file(f"{name}_output.jsonl", record.out_lines)
        if record.err_lines:
            record.error_file_id = self._output_file(f"{name}_error.jsonl", record.err_lines)
        record.status = status
        record.times["finalizing_at"] = at
        record.times[f"{status}_at"] = at
        self._save(record)

    def _output_file(self, filename: str, lines: list[bytes]) -> str:
        return self.add_file(filename, "batch_output", b"".join(x + b"\n" for x in lines)).id

    # ---- persistence --------------------------------------------------------------------

    def _save(self, record: BatchRecord) -> None:
        if self.dir is None:
            return
        base = self.dir / "batches" / record.id
        state = {name: getattr(record, name) for name in _SAVED_FIELDS}
        state["config"] = dataclasses.asdict(record.config)
        # Result lines so far; rewritten whole, so a crash leaves the old or the new state.
        state["out_lines"] = [x.decode("utf-8", "replace") for x in record.out_lines]
        state["err_lines"] = [x.decode("utf-8", "replace") for x in record.err_lines]
        _write_atomic(base.with_suffix(".json"), orjson.dumps(state))

    def _load(self) -> None:
        assert self.dir is not None
        for meta_path in sorted((self.dir / "files").glob("*.json")):
            meta = orjson.loads(meta_path.read_bytes())
            content = meta_path.with_suffix(".bin").read_bytes()
            self.files[meta["id"]] = StoredFile(**meta, content=content)
        for path in sorted((self.dir / "batches").glob("*.json")):
            state = orjson.loads(path.read_bytes())
            state["config"] = BatchConfig(**state["config"])
            state["out_lines"] = [x.encode() for x in state["out_lines"]]
            state["err_lines"] = [x.encode() for x in state["err_lines"]]
            record = BatchRecord(**state)
            source = self.files.get(record.input_file_id)
            if source is not None:
                record.requests, _ = parse_input(source.content, max_requests=None)
            self.batches[record.id] = record


_SAVED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(BatchRecord)
    if f.name not in ("out_lines", "err_lines", "requests", "lock", "config")
)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
