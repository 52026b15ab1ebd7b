"""Micro-batching for async callers: pairs from concurrent queries share forward passes.

Async rerankers elsewhere just push each blocking call onto a thread, so 64 concurrent queries
still mean 64 separate small forward passes competing for the cores. Here one worker thread per
(model, settings) collects requests for up to ``max_wait_ms`` (or until ``max_pairs`` are queued),
scores them together in length-sorted batches, and resolves each caller's future with its slice.
Cancelled requests are skipped before any work is spent on them.

The batcher knows nothing about models: it is given the function that scores token inputs when
it is made, together with its settings, so two Rerankers with different settings never share
(or overwrite) one batcher's configuration.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

# (ids, types, batch_size) -> raw score per input row
ScoreTokens = Callable[[list[list[int]], list[list[int]], int], np.ndarray]


@dataclass
class _Request:
    ids: list[list[int]]
    types: list[list[int]]
    batch_size: int
    future: Future[np.ndarray] = field(default_factory=Future)


class MicroBatcher:
    """One worker thread; ``submit`` is safe from any thread or event loop."""

    def __init__(self, score_tokens: ScoreTokens, *, max_wait_ms: float = 3.0, max_pairs: int = 512) -> None:
        self._score_tokens = score_tokens
        self.max_wait_ms = float(max_wait_ms)
        self.max_pairs = int(max_pairs)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # forward groups run, for observability and tests
        self.requests = 0

    def submit(self, ids: list[list[int]], types: list[list[int]], *, batch_size: int) -> Future[np.ndarray]:
        """Queue token inputs for scoring; the future resolves to their raw scores, in order."""
        req = _Request(ids, types, batch_size)
        if not ids:
            req.future.set_result(np.empty(0, dtype=np.float32))
            return req.future
        self._ensure_started()
        self._queue.put(req)
        return req.future

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (an approximate queue depth, for metrics)."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="crossrank-microbatcher", daemon=True)
                self._thread.start()

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        reqs, pairs = [first], len(first.ids)
        deadline = time.monotonic() + self.max_wait_ms / 1000.0
        while pairs < self.max_pairs:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                nxt = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if nxt is None:
                return reqs, True
            reqs.append(nxt)
            pairs += len(nxt.ids)
        return reqs, False

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            reqs, closing = self._gather(first)
            live = [r for r in reqs if r.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)
            if closing:
                return

    def _run(self, live: list[_Request]) -> None:
        ids = [x for r in live for x in r.ids]
        types = [x for r in live for x in r.types]
        self.batches += 1
        self.requests += len(live)
        try:
            raw = self._score_tokens(ids, types, max(r.batch_size for r in live))
        except BaseException as exc:
            for r in live:
                r.future.set_exception(exc)
            return
        offset = 0
        for r in live:
            r.future.set_result(raw[offset : offset + len(r.ids)])
            offset += len(r.ids)
