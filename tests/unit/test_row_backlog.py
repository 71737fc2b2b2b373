"""The row backlog: in-memory activity rows and captures made when something reads.

A real in-memory ActivityStore and CaptureRing; no sockets, no sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from modelswap.observability.activity_query import parse_activity_query
from modelswap.observability.activity_store import ActivityStore
from modelswap.observability.captures import CaptureRing
from modelswap.observability.recorder import Recorder
from modelswap.observability.records import Explain, RequestRecord
from modelswap.observability.row_backlog import RowBacklog


def rec(n: int, *, body_bytes: int = 0, model: str = "m1") -> RequestRecord:
    usage = {"usage": {"prompt_tokens": n, "completion_tokens": 2 * n}, "pad": "x" * body_bytes}
    return RequestRecord(
        request_id=n,
        model=model,
        method="POST",
        req_path="/v1/chat/completions",
        started_wall=1000.0 + n,
        ended_wall=1000.5 + n,
        duration_ms=500.0,
        status=200,
        resp_content_type="application/json",
        req_headers={"Authorization": "Bearer secret", "Content-Type": "application/json"},
        req_body=b'{"model":"m1"}',
        resp_headers={"Content-Type": "application/json"},
        resp_body=json.dumps(usage).encode(),
    )


def made(store: ActivityStore) -> list[int]:
    """Row ids in the table right now, without triggering the read hook."""
    rows = store._conn.execute("SELECT id FROM activity ORDER BY id").fetchall()
    return [row[0] for row in rows]


def wired(cap: int, **kw: Any) -> tuple[ActivityStore, CaptureRing, RowBacklog]:
    store = ActivityStore(None, cap)
    ring = CaptureRing(1024 * 1024)  # 1 MiB: a 300 kB body is too large to be sure of
    store.set_capture_lookup(ring.has)
    backlog = RowBacklog(store, ring, cap, **kw)
    store.set_before_read(backlog.make_rows)
    ring.set_before_read(backlog.make_rows)
    return store, ring, backlog


def page(store: ActivityStore, **query: str) -> dict[str, Any]:
    return store.activity(parse_activity_query({"limit": "100", **query}.items()))


def test_ids_now_rows_and_captures_when_read() -> None:
    store, ring, backlog = wired(10)
    stored = backlog.add([rec(1), rec(2), rec(3)])
    assert [row_id for row_id, _ in stored] == [1, 2, 3]
    assert made(store) == [] and len(ring) == 0  # nothing parsed, stored or captured yet
    result = page(store, order="asc")
    assert [r["id"] for r in result["data"]] == [1, 2, 3]
    assert [r["tokens"]["input_tokens"] for r in result["data"]] == [1, 2, 3]
    assert [r["tokens"]["output_tokens"] for r in result["data"]] == [2, 4, 6]
    assert all(r["has_capture"] for r in result["data"])
    assert len(backlog) == 0 and backlog.made == 3
    assert made(store) == [1, 2, 3]


def test_every_read_makes_pending_rows_first() -> None:
    store, ring, backlog = wired(10)
    backlog.add([rec(1)])
    assert store.stats()["total_requests"] == 1
    backlog.add([rec(2)])
    assert [r["id"] for r in store.entries([2])] == [2]
    backlog.add([rec(3)])
    capture = ring.get(3)
    assert capture is not None and capture["req_headers"]["Authorization"] == "[REDACTED]"
    backlog.add([rec(4)])
    assert ring.has(4)
    assert made(store) == [1, 2, 3, 4] and len(backlog) == 0


def test_beyond_the_cap_the_oldest_are_dropped_unparsed_as_the_store_would_evict_them() -> None:
    cap = 5
    store, ring, backlog = wired(cap)
    eager = ActivityStore(None, cap)  # the same records, made at once
    records = [rec(n) for n in range(1, 13)]
    for chunk in (records[:4], records[4:9], records[9:]):
        backlog.add(chunk)
        eager.record_many(chunk)
    assert backlog.dropped == 12 - cap and len(backlog) == cap
    lazy_rows = page(store)["data"]
    assert [r["id"] for r in lazy_rows] == [12, 11, 10, 9, 8]
    eager_rows = page(eager)["data"]
    for row in eager_rows:
        row["has_capture"] = True  # the eager store here has no capture ring
    assert lazy_rows == eager_rows
    assert sorted(ring._blobs) == [8, 9, 10, 11, 12]  # no capture was made for dropped ones
    # ids go on from where they were, made rows or not
    assert [row_id for row_id, _ in backlog.add([rec(13)])] == [13]
    assert [r["id"] for r in page(store)["data"]] == [13, 12, 11, 10, 9]


def test_bodies_past_the_byte_bound_are_made_into_rows_at_once() -> None:
    store, _, backlog = wired(1000, max_bytes=20_000)
    backlog.add([rec(n, body_bytes=3000) for n in range(1, 6)])  # ~16 KB: under the bound
    assert made(store) == []
    backlog.add([rec(n, body_bytes=3000) for n in range(6, 9)])  # past it: oldest made
    assert made(store)[:1] == [1] and len(backlog) < 8
    assert backlog._bytes <= 10_000  # down to half the bound
    assert [r["id"] for r in page(store, order="asc")["data"]] == list(range(1, 9))


def test_a_failed_insert_is_counted_and_later_rows_still_made() -> None:
    store, _, backlog = wired(10)
    bad = RequestRecord(
        request_id=1, model=None, method="POST", req_path="/v1/chat/completions",  # type: ignore[arg-type]
        started_wall=0.0, ended_wall=0.0, duration_ms=1.0, status=200, resp_content_type="",
    )  # fmt: skip
    backlog.add([bad])
    assert page(store)["data"] == [] and backlog.failed == 1
    backlog.add([rec(2)])
    assert [r["id"] for r in page(store)["data"]] == [2]


def test_a_reader_thread_and_the_loop_never_lose_or_repeat_a_row() -> None:
    store, _, backlog = wired(100_000)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            store.stats()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for start in range(1, 2001, 50):
            backlog.add([rec(n) for n in range(start, start + 50)])
    finally:
        stop.set()
        reader.join()
    assert store.stats()["total_requests"] == 2000
    assert made(store) == list(range(1, 2001))


async def test_the_recorder_with_a_backlog_observes_and_publishes_every_request() -> None:
    store, ring, backlog = wired(1000)
    observed: list[int] = []
    published: list[int] = []

    class Metrics:
        def observe(self, record: RequestRecord) -> None:
            observed.append(record.request_id)

    def on_stored(stored: Sequence[tuple[int, RequestRecord]]) -> None:
        published.extend(row_id for row_id, _ in stored)

    recorder = Recorder(
        store, captures=ring, metrics=Metrics(), on_stored=on_stored, backlog=backlog
    )
    recorder.start()
    for n in range(1, 201):
        recorder.submit(rec(n))
    recorder.submit_load("m1", 2.0, 0.0)
    await recorder.wait_flushed()
    assert observed == list(range(1, 201))  # Prometheus sees every request at once
    assert published == list(range(1, 201))  # ids handed out in order
    assert store.recent_loads("m1") == [2.0]
    assert made(store) == [] and len(ring) == 0  # no one read: nothing parsed
    assert store.stats()["total_requests"] == 200
    assert len(ring) == 200
    await recorder.close()


def varied() -> list[RequestRecord]:
    """Rows whose values SQLite would change on the way back (ints in REAL columns, …)."""
    timings = {
        "timings": {"prompt_n": 20, "predicted_n": 50, "prompt_per_second": 100,
                    "predicted_per_second": 40.5, "prompt_ms": 200.0, "predicted_ms": 1250,
                    "cache_n": 8},
    }  # fmt: skip
    explain = Explain(queue_ms=1.0, swap_model="m1", evicted=("b", "a"), evict_reason="group",
                      evict_ms=3.0, load_ms=2500.5, ttfb_ms=4.25, gen_ms=None)  # fmt: skip
    return [
        rec(1),
        replace(rec(2), resp_body=json.dumps(timings).encode(), duration_ms=12.0),
        replace(rec(3), status=502, resp_body=b'{"error":{"message":"no"}}', explain=explain),
        replace(rec(4), metadata={"z": "1", "a": "2"}, duration_ms=7.5),
        replace(rec(5), resp_body=b"not json", req_path="/v1/embeddings"),
        # Not decodable: no capture (known only by trying); too large to be sure of: tried.
        replace(rec(6), resp_headers={"Content-Encoding": "gzip"}, resp_body=b"not gzip"),
        replace(rec(7), req_body=b"x" * 300_000),
    ]


def test_live_rows_are_the_rows_the_store_returns_later_without_a_second_parse() -> None:
    """Shown live before they are stored: the same JSON, one capture each, one parse each."""
    store, ring, backlog = wired(10)
    stored = backlog.add(varied())
    parsed: list[int] = []
    row_params = store.row_params

    def counting(record: RequestRecord) -> tuple[Any, ...]:
        parsed.append(record.request_id)
        return row_params(record)

    store.row_params = counting  # type: ignore[method-assign]
    live = backlog.live_rows(stored)
    ids = [1, 2, 3, 4, 5, 6, 7]
    assert sorted(live) == ids and parsed == ids
    assert made(store) == [] and len(ring) == 1  # only 6 and 7 tried now (7 kept)
    assert backlog.live_rows(stored) == {}  # shown once
    later = {row["id"]: row for row in store.entries(ids)}
    assert parsed == ids  # the insert used the values parsed for the live rows
    assert made(store) == ids and len(ring) == 6  # every capture but 6's, each made once
    for row_id in later:
        assert json.dumps(live[row_id]) == json.dumps(later[row_id])  # types and key order too
    assert live[2]["tokens"]["prompt_per_second"] == 100.0
    assert live[4]["metadata"] == {"a": "2", "z": "1"}
    assert [live[i]["has_capture"] for i in ids] == [True] * 5 + [False, True]


def test_live_rows_leave_out_records_no_longer_raw() -> None:
    """Made by a reader meanwhile, or dropped past the cap: the caller asks the store."""
    store, _, backlog = wired(2)
    first = backlog.add([rec(1)])
    store.entries([1])  # a reader made it
    later = backlog.add([rec(2), rec(3), rec(4)])  # 2 is dropped past the cap
    assert backlog.live_rows(first) == {}
    assert sorted(backlog.live_rows(later)) == [3, 4]
    assert backlog.dropped == 1
