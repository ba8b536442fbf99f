"""The export's per-story analysis: decontamination and the card's diversity sketch.

Both read each story's normalised words, and together they cost about half of an export's CPU
(the other half writes five formats). `Analyser` runs them per batch of rows, in one worker
process when the machine has a second core, while the writer writes the batch before. Results
come back in batch order and the sketch merges exactly (sums, register maxima, counters updated
in order), so an export is byte-identical with or without the worker.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from service.dataset.decontam import Decontaminator
from service.dataset.export_rows import ExportError
from service.dataset.minhash import normalized_words
from service.store.diversity_sketch import Sketch, StoryFacts

# Below this many rows the worker's start (~0.5 s of imports) costs more than it saves.
MIN_ROWS_FOR_WORKER = 20_000
# (text, verb, noun, adjective, features, split) of one story to export.
Item = tuple[str, str, str, str, Sequence[str], str]


@dataclass
class BatchResult:
    contaminated: list[bool]  # per item, in order
    sketches: dict[str, Sketch]  # per split, of the items not contaminated


def analyse(items: Sequence[Item], decontaminator: Decontaminator | None) -> BatchResult:
    """Each item's contamination verdict, and per split a sketch of the clean ones."""
    flags: list[bool] = []
    facts: dict[str, list[StoryFacts]] = {}
    words_of: dict[str, list[list[str]]] = {}
    for text, verb, noun, adjective, features, split in items:
        words = normalized_words(text)
        bad = decontaminator is not None and decontaminator.check(text, words=words).contaminated
        flags.append(bad)
        if not bad:
            facts.setdefault(split, []).append(StoryFacts(text, verb, noun, adjective, features))
            words_of.setdefault(split, []).append(words)
    sketches = {s: Sketch().add_stories(facts[s], words_of[s]) for s in facts}
    return BatchResult(flags, sketches)


class _Worker:
    """`python -m service.dataset.export_analysis`: batches in on stdin, results out on stdout.

    A plain subprocess, not multiprocessing: spawn and forkserver re-import the caller's
    `__main__`, which in a script without a main guard would run the whole script again (a
    generation run, say) in the child.
    """

    def __init__(self, decontaminator: Decontaminator | None) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self.results: queue.Queue[Any] = queue.Queue()
        # Results are drained as they come: a worker blocked writing one while this process
        # blocks writing it the next batch would be a deadlock.
        self.reader = threading.Thread(target=self._read, name="export-analysis", daemon=True)
        self.reader.start()
        try:
            self.send(decontaminator)
        except BaseException:  # not sendable: no worker may outlive the failed export
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                self.results.put(pickle.load(self.proc.stdout))
        except Exception:  # end of output or a garbled one: receive() reports the worker's end
            pass
        finally:
            self.results.put(None)

    def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        try:
            pickle.dump(obj, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._stopped() from None

    def receive(self) -> BatchResult:
        result = self.results.get()
        if isinstance(result, BatchResult):
            return result
        if isinstance(result, str):  # the worker's own error
            raise ExportError(f"export analysis failed: {result}")
        raise self._stopped()

    def _stopped(self) -> ExportError:  # one CLI line, a failed export row in the API
        code = self.proc.wait()
        return ExportError(f"the export's analysis worker stopped (exit code {code})")

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()  # end of input: the worker exits
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=30)


class Analyser:
    """Batches in, (batch, result) out in the same order; at most `depth` batches in flight.

    `worker`: None picks the worker process when the machine has two cores or more and the
    export is known to be large enough (`total` rows); False analyses in this process.
    """

    def __init__(
        self,
        decontaminator: Decontaminator | None,
        *,
        total: int | None,
        worker: bool | None = None,
        depth: int = 2,
    ) -> None:
        if worker is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
            worker = cores >= 2 and total is not None and total >= MIN_ROWS_FOR_WORKER
        self.decontaminator = decontaminator
        self.depth = depth
        self.in_flight: deque[tuple[Any, BatchResult | None]] = deque()
        self.worker: _Worker | None = None
        if worker:
            self.worker = _Worker(decontaminator)

    def submit(self, batch: Any, items: Sequence[Item]) -> Iterator[tuple[Any, BatchResult]]:
        """Queue `batch` (analysed from `items`); yields the batches that are done with it."""
        if self.worker is None:
            self.in_flight.append((batch, analyse(items, self.decontaminator)))
        else:
            self.worker.send(list(items))
            self.in_flight.append((batch, None))
        while len(self.in_flight) > self.depth:
            yield self._pop()

    def drain(self) -> Iterator[tuple[Any, BatchResult]]:
        while self.in_flight:
            yield self._pop()

    def _pop(self) -> tuple[Any, BatchResult]:
        batch, result = self.in_flight.popleft()
        if result is None:
            assert self.worker is not None
            result = self.worker.receive()
        return batch, result

    def close(self) -> None:
        """Stop the worker, also after an error (batches still in flight are dropped)."""
        self.in_flight.clear()
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def __enter__(self) -> Analyser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve() -> None:
    """The worker's loop: a decontaminator (or None), then batches until end of input."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    decontaminator = pickle.load(stdin)
    while True:
        try:
            items = pickle.load(stdin)
        except EOFError:
            return
        try:
            reply: BatchResult | str = analyse(items, decontaminator)
        except Exception as exc:  # sent back, raised by the writer
            reply = f"{type(exc).__name__}: {exc}"
        pickle.dump(reply, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()


if __name__ == "__main__":
    # Through the module's own name: results pickled as __main__.BatchResult would not load.
    from service.dataset.export_analysis import _serve as serve

    serve()
