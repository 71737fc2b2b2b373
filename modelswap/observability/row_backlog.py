"""Activity rows made when someone looks: the in-memory store's backlog of finished requests.

The in-memory activity store keeps only the newest ``metricsMaxInMemory``
rows. Turning every finished request into a row at once — parsing token
usage out of its body, the SQLite insert, the capture (redaction, trimming,
compression) — was the largest part of observability's cost per request
(BENCHMARKS.md, "Observability cost, round 3"), and under steady traffic
nobody reads most of those rows before they are evicted. So with the
in-memory store the recorder does only what must see every request at once
(it hands out the row id, feeds Prometheus and the timeline) and leaves the
request here, raw; the parse, the insert and the capture happen, oldest
first, when something reads:

* the store's reads (``/api/metrics/activity``, ``/api/metrics/stats``,
  :meth:`~modelswap.observability.activity_store.ActivityStore.entries`);
* a capture lookup (``/api/captures/<id>``);
* this backlog growing past :data:`MAX_BYTES` of bodies (memory stays
  bounded however large the bodies are: the oldest are made into rows then).

While an ``/api/events`` client listens, each row's JSON is needed at once
for the live ``metrics`` event: :meth:`RowBacklog.live_rows` parses the body
and builds the row JSON straight from those values, as the store would return
it; the parsed values are kept with the raw record, and the SQLite insert
still waits for a read — inserting a row only to select it back was a third of
what showing it cost (BENCHMARKS.md, "With the UI open"). The capture waits
too: its ``has_capture`` is known without making it whenever the capture
cannot fail (``CaptureRing.will_store``: nothing to decompress, bodies far
smaller than the buffer); otherwise it is made now to know.

At most ``cap`` records are kept raw: an older one is dropped unparsed — the
row the store would have deleted at its next insert anyway (ids are handed
out consecutively, so the dropped one is exactly ``newest − cap``). Its
capture is never made either: the capture cache then holds captures of kept
rows only (a capture of a row already evicted could only be fetched by
guessing its id; ``docs/architecture.md`` records this decision).

Row ids are assigned when the request is recorded, not when its row is
made, so ``/api/events``, the timeline and captures all name a request by
the same id whenever its row appears. Making rows runs under one lock, in id
order, from whichever thread reads (the activity API queries in a worker
thread); the event loop takes the same lock only to append a batch.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from modelswap.observability.records import RequestRecord

__all__ = ["MAX_BYTES", "RowBacklog", "RowWriter"]

log = logging.getLogger("modelswap.observability.row_backlog")

MAX_BYTES = 8 * 1024 * 1024
"""Body bytes kept raw at most; past it the oldest records are made into rows at once."""
BATCH = 64
"""Rows made per store transaction (and per hold of the lock the event loop may wait for)."""


class RowWriter(Protocol):
    def reserve_ids(self, count: int) -> range:
        """The next ``count`` row ids (the rows are made later)."""
        ...

    def insert_rows(
        self,
        rows: Sequence[tuple[int, RequestRecord]],
        prepared: Mapping[int, tuple[Any, ...]] | None = None,
    ) -> None:
        """Store these rows under the given (ascending, already handed out) ids."""
        ...

    def row_params(self, record: RequestRecord) -> tuple[Any, ...]:
        """A row's values (the body parsed), before it is stored."""
        ...

    def entry_of(self, row_id: int, params: tuple[Any, ...], has_capture: bool) -> dict[str, Any]:
        """The row JSON the store will return for these values."""
        ...


class CaptureWriter(Protocol):
    def store(self, row_id: int, record: RequestRecord) -> object: ...

    def will_store(self, record: RequestRecord) -> bool | None:
        """Whether ``store`` would keep it (None: unsure, make it to know)."""
        ...


def _weight(record: RequestRecord) -> int:
    """Bytes a raw record holds on to (its bodies; the rest is small and fixed)."""
    body = record.resp_body
    return (
        len(record.req_body or b"")
        + (len(record.resp_tail) if body is None else len(body))
        + 512  # the record, its headers and metadata, roughly
    )


class RowBacklog:
    """Finished requests with row ids but no row yet (module doc)."""

    def __init__(
        self,
        store: RowWriter,
        captures: CaptureWriter | None,
        cap: int,
        *,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._store = store
        self._captures = captures
        self._cap = max(1, cap)
        self._max_bytes = max_bytes
        self._raw: deque[tuple[int, RequestRecord, int]] = deque()
        self._prepared: dict[int, tuple[tuple[Any, ...], bool]] = {}
        """Raw rows already shown live: their values, and whether their capture is made."""
        self._bytes = 0
        self._lock = threading.RLock()
        self.dropped = 0
        """Records dropped unparsed (older than the newest ``cap``: their rows were evicted)."""
        self.made = 0
        self.failed = 0

    def __repr__(self) -> str:
        return (
            f"<RowBacklog raw={len(self._raw)} bytes={self._bytes} made={self.made} "
            f"dropped={self.dropped} failed={self.failed}>"
        )

    def __len__(self) -> int:
        return len(self._raw)

    def add(self, records: Sequence[RequestRecord]) -> list[tuple[int, RequestRecord]]:
        """Give these records their row ids and keep them raw; the (row id, record) pairs.

        On the event loop, after the responses ended. Only the id counter is
        touched now; parsing and storing wait for a reader (module doc).
        """
        if not records:
            return []
        stored = list(zip(self._store.reserve_ids(len(records)), records, strict=True))
        raw = self._raw
        with self._lock:  # a reader may be making rows from the other end
            for row_id, record in stored:
                weight = _weight(record)
                raw.append((row_id, record, weight))
                self._bytes += weight
            while len(raw) > self._cap:
                row_id, _, weight = raw.popleft()
                self._bytes -= weight
                self.dropped += 1
                if self._prepared:
                    self._prepared.pop(row_id, None)
            if self._bytes > self._max_bytes:
                self.make_rows(until_bytes=self._max_bytes // 2)
        return stored

    def make_rows(self, until_bytes: int = 0) -> None:
        """Make the oldest raw records into rows (and captures) until at most ``until_bytes``.

        One batch per lock hold, so the event loop's :meth:`add` waits for one
        batch at most (a few milliseconds), never for a whole backlog being
        made by a reader's thread. When it returns, every record added before
        the call has its row: a batch another thread took is written before
        that thread lets go of the lock.
        """
        raw = self._raw
        while True:  # the lock even when empty: another thread may be writing the last batch
            with self._lock:
                if not raw or self._bytes <= until_bytes:
                    return
                batch: list[tuple[int, RequestRecord]] = []
                while raw and len(batch) < BATCH and self._bytes > until_bytes:
                    row_id, record, weight = raw.popleft()
                    self._bytes -= weight
                    batch.append((row_id, record))
                self._write(batch)

    def live_rows(self, stored: Sequence[tuple[int, RequestRecord]]) -> dict[int, dict[str, Any]]:
        """The row JSON of these just-added records, made now without the store (module doc).

        Parses each body now; the insert (and, when ``has_capture`` is known
        without it, the capture) still waits for a read, with the values
        kept. Records no longer raw (made by a reader's thread meanwhile, or
        dropped) are left out: ask the store.
        """
        out: dict[int, dict[str, Any]] = {}
        store, captures = self._store, self._captures
        with self._lock:
            raw = self._raw
            if not raw:
                return out
            first, last = raw[0][0], raw[-1][0]
            for row_id, record in stored:
                if not first <= row_id <= last or row_id in self._prepared:
                    continue
                try:
                    params = store.row_params(record)
                except Exception:
                    log.exception("failed to make activity row %d", row_id)
                    continue
                has_capture, made = False, True
                if captures is not None:
                    try:
                        known = captures.will_store(record)
                        if known is None:
                            has_capture = bool(captures.store(row_id, record))
                        else:
                            has_capture, made = known, not known
                    except Exception:
                        log.exception("failed to store the capture of activity row %d", row_id)
                self._prepared[row_id] = (params, made)
                out[row_id] = store.entry_of(row_id, params, has_capture)
        return out

    def _write(self, batch: Sequence[tuple[int, RequestRecord]]) -> None:
        prepared: dict[int, tuple[Any, ...]] = {}
        captured: set[int] = set()
        if self._prepared:
            for row_id, _ in batch:
                known = self._prepared.pop(row_id, None)
                if known is not None:
                    prepared[row_id] = known[0]
                    if known[1]:
                        captured.add(row_id)
        try:
            self._store.insert_rows(batch, prepared)
        except Exception:
            self.failed += len(batch)
            log.exception("failed to store %d activity rows", len(batch))
            return
        self.made += len(batch)
        captures = self._captures
        if captures is not None:
            for row_id, record in batch:
                if row_id in captured:
                    continue  # made when the row was shown live
                try:
                    captures.store(row_id, record)
                except Exception:
                    log.exception("failed to store the capture of activity row %d", row_id)
