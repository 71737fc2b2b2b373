"""The recorder: finished requests in; activity rows, captures, metrics out — off the request path.

The HTTP layer calls :meth:`Recorder.submit` once per finished request; that
is an append to a bounded deque and nothing else. Later, after the response
went out, what has accumulated is processed in batches: token parsing and
the SQLite insert (:meth:`ActivitySink.record_many`, one transaction per
batch), the capture, Prometheus observations; then ``activity`` events are
published and :meth:`wait_flushed` callers woken, on the event loop.

Where the work runs depends on the store:

* **In memory** (the default): the costly part — token parsing, the insert,
  the capture — waits in a :class:`~modelswap.observability.row_backlog.RowBacklog`
  until something reads rows or captures (or an ``/api/events`` client
  listens); the store keeps only the newest rows, so most would be evicted
  unread. What must see every request at once — the row id, Prometheus, the
  timeline, ``activity`` events — runs on the event loop, in slices of at most
  :data:`INLINE_SLICE` records per loop turn, once per :data:`WAKE_DELAY`
  window. Measured (BENCHMARKS.md): a writer thread cost *more* CPU than the
  work itself — ~100 µs per request at 50 connections against ~40 µs inline —
  because it fights the loop for the GIL after every batch; inline the proxy
  served 10–20 % more requests per second. A slice stalls the loop for a few
  milliseconds at most, and nothing in it can block (no disk).
* **In a file** (``store.path``): one writer thread, so a slow disk (a WAL
  checkpoint, a busy lock) can never stall the loop. One thread: the store's
  writes are serial anyway, and batches grow by themselves under load (the
  thread drains everything queued while it was busy).

When the deque is full (the writer has fallen far behind), new records are
dropped and counted — a request is never made to wait for its own bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelswap.observability.records import RequestRecord
from modelswap.observability.row_backlog import RowBacklog

__all__ = [
    "ActivitySink",
    "CaptureSink",
    "MetricsSink",
    "Recorder",
    "RecorderStatistics",
]

log = logging.getLogger("modelswap.observability.recorder")

MAX_PENDING = 10_000
BATCH = 512
INLINE_SLICE = 64
"""Records processed per event-loop turn in inline mode (bounds the loop's stall)."""
WAKE_DELAY = 0.05
"""Records submitted within this window wake the writer once (one batch, one transaction)."""


class ActivitySink(Protocol):
    def record_many(self, records: Sequence[RequestRecord]) -> list[int]:
        """Store the rows (one transaction); their ids, in order."""
        ...

    def record_load(self, model_id: str, seconds: float, wall: float) -> None:
        """Remember one load duration of ``model_id`` (for load ETAs)."""
        ...


class CaptureSink(Protocol):
    def store(self, row_id: int, record: RequestRecord) -> object: ...


class MetricsSink(Protocol):
    def observe(self, record: RequestRecord) -> None: ...


StoredListener = Callable[[Sequence[tuple[int, RequestRecord]]], None]
"""Called on the event loop after a batch was stored: ``(row id, record)`` pairs."""


@dataclass(frozen=True, slots=True)
class _Load:
    model_id: str
    seconds: float
    wall: float


@dataclass(frozen=True, slots=True)
class RecorderStatistics:
    submitted: int
    processed: int
    dropped: int
    failed: int
    pending: int


class Recorder:
    """Feeds the activity store, captures and metrics: on the loop or a thread (module doc)."""

    def __init__(
        self,
        store: ActivitySink | None,
        *,
        captures: CaptureSink | None = None,
        metrics: MetricsSink | None = None,
        on_stored: StoredListener | None = None,
        max_pending: int = MAX_PENDING,
        inline: bool = False,
        backlog: RowBacklog | None = None,
    ) -> None:
        self._store = store
        self._inline = inline or backlog is not None
        """Process on the event loop (in-memory store), not in a writer thread."""
        self._backlog = backlog
        """Rows and captures made when someone reads (in-memory store; module doc)."""
        self._captures = captures
        self._metrics = metrics
        self._on_stored = on_stored
        self._max_pending = max_pending
        self._pending: deque[RequestRecord | _Load] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._submitted = 0
        self._processed = 0
        self._dropped = 0
        self._failed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        st = self.statistics()
        return (
            f"<Recorder submitted={st.submitted} processed={st.processed} "
            f"dropped={st.dropped} pending={st.pending}>"
        )

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            self._submitted, self._processed, self._dropped, self._failed, len(self._pending)
        )

    # --- the loop's side --------------------------------------------------------------

    def start(self) -> None:
        """Start (call from the event loop that will read the results); inline: no thread."""
        if self._thread is not None or self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._inline:
            return
        self._thread = threading.Thread(target=self._run, name="modelswap-recorder", daemon=True)
        self._thread.start()

    def submit(self, record: RequestRecord) -> None:
        """Queue one finished request; never blocks (drops and counts when far behind)."""
        self._enqueue(record)

    def submit_load(self, model_id: str, seconds: float, wall: float) -> None:
        """Queue one load duration for the store's load history."""
        self._enqueue(_Load(model_id, seconds, wall))

    def _enqueue(self, item: RequestRecord | _Load) -> None:
        if self._stopping or len(self._pending) >= self._max_pending:
            self._dropped += 1
            return
        self._submitted += 1
        self._pending.append(item)
        if self._wake_timer is None and self._loop is not None:
            # Wake the writer once per window, not per request: a thread wake-up
            # costs about as much as the bookkeeping itself at low load.
            self._wake_timer = self._loop.call_later(WAKE_DELAY, self._wake_now)
        elif self._loop is None:
            self._wake.set()

    def _wake_now(self) -> None:
        self._wake_timer = None
        if self._inline:
            self._drain_slice()
        else:
            self._wake.set()

    def _drain_slice(self) -> None:
        """Inline mode: process one slice on the loop; the rest at the next turn."""
        pending = self._pending
        batch: list[RequestRecord | _Load] = []
        while pending and len(batch) < INLINE_SLICE:
            batch.append(pending.popleft())
        if batch:
            self._batch_done(len(batch), self._process(batch))
        if pending and self._wake_timer is None and self._loop is not None:
            self._wake_timer = self._loop.call_later(0, self._wake_now)

    async def wait_flushed(self) -> None:
        """Return once everything submitted before this call has been processed."""
        target = self._submitted
        if self._processed >= target:
            return
        if self._inline:  # do not wait for the batching window
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            self._wake_timer = asyncio.get_running_loop().call_later(0, self._wake_now)
        else:
            self._wake.set()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        await waiter

    async def close(self) -> None:
        """Process what is queued, then stop the thread."""
        self._stopping = True
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        if self._inline:
            while self._pending:  # what is queued still becomes rows
                self._drain_slice()
                if self._wake_timer is not None:
                    self._wake_timer.cancel()
                    self._wake_timer = None
            return
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _batch_done(self, count: int, stored: Sequence[tuple[int, RequestRecord]]) -> None:
        """On the loop: count the batch, publish it, wake waiters."""
        self._processed += count
        if stored and self._on_stored is not None:
            try:
                self._on_stored(stored)
            except Exception:
                log.exception("activity listener failed")
        if self._waiters:
            ready = [w for w in self._waiters if w[0] <= self._processed]
            self._waiters = [w for w in self._waiters if w[0] > self._processed]
            for _, waiter in ready:
                if not waiter.done():
                    waiter.set_result(None)

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch: list[RequestRecord | _Load] = []
                while self._pending and len(batch) < BATCH:
                    batch.append(self._pending.popleft())
                stored = self._process(batch)
                self._report(len(batch), stored)
            if self._stopping and not self._pending:
                return

    def _report(self, count: int, stored: Sequence[tuple[int, RequestRecord]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._processed += count
            return
        try:
            loop.call_soon_threadsafe(self._batch_done, count, stored)
        except RuntimeError:  # the loop closed under us (shutdown)
            self._processed += count

    def _process(self, batch: Sequence[RequestRecord | _Load]) -> list[tuple[int, RequestRecord]]:
        records = [item for item in batch if isinstance(item, RequestRecord)]
        stored: list[tuple[int, RequestRecord]] = []
        store = self._store
        backlog = self._backlog
        try:
            for item in batch:
                if isinstance(item, _Load) and store is not None:
                    store.record_load(item.model_id, item.seconds, item.wall)
            if backlog is not None:
                stored = backlog.add(records)  # ids now; rows and captures when read
            elif records and store is not None:
                stored = list(zip(store.record_many(records), records, strict=True))
        except Exception:
            self._failed += len(records)
            log.exception("failed to store %d activity rows", len(records))
        for row_id, record in stored:
            if self._captures is not None and backlog is None:
                try:
                    self._captures.store(row_id, record)
                except Exception:
                    log.exception("failed to store the capture of activity row %d", row_id)
        if self._metrics is not None:
            for record in records:
                try:
                    self._metrics.observe(record)
                except Exception:
                    log.exception("failed to observe request metrics")
        return stored
