"""Batch API jobs through the official `openai` SDK: upload, create, poll, download, parse.

Each step is one call that returns what the caller must store before the next, so a crash
loses nothing: store the file id after `upload`, the batch id after `create`, then `wait` (or
`retrieve` on a schedule) and `results`. A crash between `create` and storing its id is
recovered with `find(metadata key, value)`. The SDK's own retries are off, as for online
calls: every failure is a classified `ProviderError`, and `generator.retry` decides.

Building request files and reading result files are pure functions in `generator.batch_files`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from generator.batch_files import BATCH_ENDPOINT, BatchFile, BatchResults, parse_results
from generator.endpoint import Endpoint
from generator.errors import (
    ProviderError,
    error_message,
    kept_headers,
    parse_retry_after,
    redact,
    register_secret,
    response_json_or_none,
    status_class,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchStatus:
    """What the provider says of one batch; `terminal` once it will not change again."""

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()  # validation errors of a failed batch: "line 3: code: message"
    created_at: int = 0
    expires_at: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_sdk(cls, batch: Any) -> BatchStatus:
        """From an `openai.types.Batch`."""
        counts = batch.request_counts
        errors = []
        for error in (batch.errors.data or []) if batch.errors else []:
            where = f"line {error.line}: " if error.line else ""
            errors.append(f"{where}{error.code}: {error.message}")
        return cls(
            id=batch.id,
            status=batch.status,
            input_file_id=batch.input_file_id,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            total=counts.total if counts else 0,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            errors=tuple(errors),
            created_at=batch.created_at,
            expires_at=batch.expires_at,
            metadata=dict(batch.metadata or {}),
        )


class BatchClient:
    """The provider's Files and Batches API for one endpoint and key."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,  # uploads of up to 200 MB
        provider: str = "openai",
    ) -> None:
        import openai  # importing the SDK takes a second; only batch jobs pay for it

        self.provider = provider
        self.base_url = base_url or "https://api.openai.com/v1"
        register_secret(api_key)
        endpoint = Endpoint.parse(self.base_url)
        auth = endpoint.auth_headers(api_key or "not-needed")
        self._sdk = openai.AsyncOpenAI(
            base_url=endpoint.base,
            api_key=api_key or "not-needed",
            max_retries=0,
            timeout=timeout_s,
            default_query=endpoint.query or None,
            default_headers={"api-key": auth["api-key"]} if "api-key" in auth else None,
        )

    def __repr__(self) -> str:  # the key stays out of logs
        return f"BatchClient(base_url={redact(self.base_url)!r}, provider={self.provider!r})"

    async def aclose(self) -> None:
        await self._sdk.close()

    async def __aenter__(self) -> BatchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call; any failure becomes a classified `ProviderError`."""
        import openai

        started = time.perf_counter()
        try:
            return await call()
        except openai.APIStatusError as exc:
            body = response_json_or_none(exc.response)
            headers = kept_headers(exc.response.headers)
            raise ProviderError(
                status_class(exc.status_code, body),
                status=exc.status_code,
                message=f"{what}: {error_message(body, str(exc))}",
                retry_after=parse_retry_after(headers),
                headers=headers,
                latency_s=time.perf_counter() - started,
            ) from exc
        except openai.APITimeoutError as exc:
            raise ProviderError(
                "timeout", message=f"{what}: no answer", latency_s=time.perf_counter() - started
            ) from exc
        except openai.APIConnectionError as exc:
            raise ProviderError(
                "connection",
                message=f"{what}: connection to {self.base_url} failed: {exc.__cause__ or exc}",
                latency_s=time.perf_counter() - started,
            ) from exc

    async def upload(self, batch_file: BatchFile, *, filename: str | None = None) -> str:
        """Upload an input file (purpose `batch`); returns its file id."""
        name = (
            filename or f"{batch_file.model.replace('/', '_')}-{len(batch_file.custom_ids)}.jsonl"
        )
        uploaded = await self._call(
            "upload",
            lambda: self._sdk.files.create(file=(name, batch_file.content), purpose="batch"),
        )
        log.info(
            "batch_file_uploaded file_id=%s requests=%d bytes=%d",
            uploaded.id,
            len(batch_file.custom_ids),
            batch_file.size,
        )
        return uploaded.id

    async def create(
        self, input_file_id: str, *, metadata: Mapping[str, str] | None = None
    ) -> BatchStatus:
        """Start a batch on an uploaded file (24 h window); store the returned id at once."""
        batch = await self._call(
            "create batch",
            lambda: self._sdk.batches.create(
                input_file_id=input_file_id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata=dict(metadata) if metadata else None,
            ),
        )
        log.info("batch_created batch_id=%s input_file_id=%s", batch.id, input_file_id)
        return BatchStatus.from_sdk(batch)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        return BatchStatus.from_sdk(
            await self._call("retrieve batch", lambda: self._sdk.batches.retrieve(batch_id))
        )

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Ask the provider to stop; the batch ends `cancelled` with what it had done."""
        return BatchStatus.from_sdk(
            await self._call("cancel batch", lambda: self._sdk.batches.cancel(batch_id))
        )

    async def find(self, key: str, value: str, *, max_pages: int = 10) -> BatchStatus | None:
        """The newest batch whose metadata has `key: value`, among the last `max_pages` pages."""
        after: str | None = None
        for _ in range(max_pages):
            kwargs: dict[str, Any] = {"limit": 100}
            if after is not None:
                kwargs["after"] = after
            page = await self._call(
                "list batches", functools.partial(self._sdk.batches.list, **kwargs)
            )
            for batch in page.data:
                if (batch.metadata or {}).get(key) == value:
                    return BatchStatus.from_sdk(batch)
            if not page.has_more or not page.data:
                return None
            after = page.data[-1].id
        return None

    async def download(self, file_id: str) -> bytes:
        """The content of an output or error file."""
        content = await self._call("download", lambda: self._sdk.files.content(file_id))
        return content.content

    async def results(self, status: BatchStatus, expected_ids: Iterable[str]) -> BatchResults:
        """Download and read a finished batch's files: one result per id, or missing."""
        if not status.terminal:
            raise ValueError(f"batch {status.id} is {status.status}, not finished")
        output = await self.download(status.output_file_id) if status.output_file_id else None
        errors = await self.download(status.error_file_id) if status.error_file_id else None
        results = parse_results(expected_ids, output, errors)
        log.info(
            "batch_results batch_id=%s status=%s ok=%d failed=%d missing=%d malformed_lines=%d",
            status.id,
            status.status,
            len(results.successes),
            len(results.failures),
            len(results.missing),
            results.malformed_lines,
        )
        return results

    async def wait(
        self,
        batch_id: str,
        *,
        poll_s: float = 60.0,
        timeout_s: float | None = None,
        on_poll: Callable[[BatchStatus], Awaitable[None]] | None = None,
    ) -> BatchStatus:
        """Poll until the batch is finished. A retryable failure of one poll is logged and the
        next poll goes on; TimeoutError after `timeout_s` (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                status = await self.retrieve(batch_id)
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                log.warning("batch_poll_failed batch_id=%s error=%s", batch_id, exc)
            else:
                if on_poll is not None:
                    await on_poll(status)
                if status.terminal:
                    return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} not finished after {timeout_s:g} s")
            await asyncio.sleep(poll_s)
