"""The recorder: batches off the request path, counts drops, reports back on the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from modelswap.observability.recorder import Recorder
from modelswap.observability.records import RequestRecord


def record(n: int, model: str = "m") -> RequestRecord:
    return RequestRecord(
        request_id=n,
        model=model,
        method="POST",
        req_path="/v1/chat/completions",
        started_wall=0.0,
        ended_wall=0.0,
        duration_ms=1.0,
        status=200,
        resp_content_type="application/json",
    )


class FakeStore:
    def __init__(self) -> None:
        self.rows: list[RequestRecord] = []
        self.loads: list[tuple[str, float]] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def record_many(self, records: Sequence[RequestRecord]) -> list[int]:
        self.entered.set()
        self.gate.wait()
        self.threads.add(threading.current_thread().name)
        first = len(self.rows) + 1
        self.rows.extend(records)
        return list(range(first, first + len(records)))

    def record_load(self, model_id: str, seconds: float, wall: float) -> None:
        self.loads.append((model_id, seconds))


class FakeSink:
    def __init__(self) -> None:
        self.captured: list[int] = []
        self.observed: list[int] = []

    def store(self, row_id: int, rec: RequestRecord) -> None:
        self.captured.append(row_id)

    def observe(self, rec: RequestRecord) -> None:
        self.observed.append(rec.request_id)


async def test_every_record_is_stored_captured_observed_and_published() -> None:
    store, sink = FakeStore(), FakeSink()
    published: list[int] = []
    recorder = Recorder(
        store,
        captures=sink,
        metrics=sink,
        on_stored=lambda stored: published.extend(row for row, _ in stored),
    )
    recorder.start()
    for n in range(1, 301):
        recorder.submit(record(n))
    recorder.submit_load("m", 2.5, 0.0)
    await recorder.wait_flushed()
    assert [r.request_id for r in store.rows] == list(range(1, 301))
    assert sink.captured == published == list(range(1, 301))
    assert sink.observed == list(range(1, 301))
    assert store.loads == [("m", 2.5)]
    assert store.threads == {"modelswap-recorder"}  # never on the event loop's thread
    st = recorder.statistics()
    assert (st.submitted, st.processed, st.dropped, st.pending) == (301, 301, 0, 0)
    await recorder.close()


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    store = FakeStore()
    store.gate.clear()  # the writer is stuck inside the store
    recorder = Recorder(store, max_pending=3)
    recorder.start()
    recorder.submit(record(1))
    await asyncio.to_thread(store.entered.wait, 10)  # the writer holds record 1, stuck
    for n in range(2, 10):
        recorder.submit(record(n))
    st = recorder.statistics()
    assert (st.pending, st.dropped) == (3, 5)
    store.gate.set()
    await recorder.wait_flushed()
    assert [r.request_id for r in store.rows] == [1, 2, 3, 4]
    await recorder.close()


async def test_close_processes_what_is_queued() -> None:
    store = FakeStore()
    recorder = Recorder(store)
    recorder.start()
    recorder.submit(record(1))
    await recorder.close()
    assert len(store.rows) == 1
    recorder.submit(record(2))  # after close: dropped, never raises
    assert recorder.statistics().dropped == 1


async def test_inline_mode_processes_on_the_loop_in_slices() -> None:
    """The in-memory store's mode: no thread; at most INLINE_SLICE records per loop turn."""
    from modelswap.observability.recorder import INLINE_SLICE

    store, sink = FakeStore(), FakeSink()
    slices: list[int] = []
    recorder = Recorder(
        store,
        captures=sink,
        metrics=sink,
        on_stored=lambda stored: slices.append(len(stored)),
        inline=True,
    )
    recorder.start()
    for n in range(1, 2 * INLINE_SLICE + 11):
        recorder.submit(record(n))
    recorder.submit_load("m", 1.5, 0.0)
    assert store.rows == []  # nothing on the request's path
    await recorder.wait_flushed()
    assert [r.request_id for r in store.rows] == list(range(1, 2 * INLINE_SLICE + 11))
    assert store.threads == {threading.current_thread().name}  # the loop's own thread
    assert max(slices) <= INLINE_SLICE and sum(slices) == 2 * INLINE_SLICE + 10
    assert sink.observed == list(range(1, 2 * INLINE_SLICE + 11))
    assert store.loads == [("m", 1.5)]
    recorder.submit(record(999))
    await recorder.close()  # what is queued at close still becomes a row
    assert store.rows[-1].request_id == 999
    assert recorder.statistics().pending == 0
