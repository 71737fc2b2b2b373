"""The SQLite activity store: rows, filters, retention, files, migration, explain, loads.

Scenarios 73–77 of server spec §24; queries are built with the same parser the
API uses. No sockets, no sleeps (the store is synchronous).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelswap.observability.activity_query import ActivityQuery, parse_activity_query
from modelswap.observability.activity_store import (
    DEFAULT_MAX_IN_MEMORY,
    LOADS_KEPT,
    ActivityStore,
    format_timestamp,
)
from modelswap.observability.records import Explain, RequestRecord

SPEC_SCHEMA = """
CREATE TABLE activity (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts_created INTEGER NOT NULL,
  model_id TEXT NOT NULL,
  req_path TEXT NOT NULL DEFAULT '',
  resp_content_type TEXT NOT NULL DEFAULT '',
  resp_status_code INTEGER NOT NULL DEFAULT 0,
  cache_tokens INTEGER NOT NULL DEFAULT 0,
  draft_tokens INTEGER NOT NULL DEFAULT 0,
  draft_acc_tokens INTEGER NOT NULL DEFAULT 0,
  input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  prompt_per_second REAL NOT NULL DEFAULT 0,
  tokens_per_second REAL NOT NULL DEFAULT 0,
  duration_ms INTEGER NOT NULL DEFAULT 0,
  error_msg TEXT NOT NULL DEFAULT '',
  metadata_json TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idx_activity_created_id ON activity (ts_created DESC, id DESC);
CREATE INDEX idx_activity_model_created_id ON activity (model_id, ts_created DESC, id DESC);
"""


def usage_body(prompt: int, completion: int, **timings: Any) -> bytes:
    body: dict[str, Any] = {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    if timings:
        body["timings"] = timings
    return json.dumps(body).encode()


def rec(model: str = "m1", ts: float = 1000.0, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": 1,
        "model": model,
        "method": "POST",
        "req_path": "/v1/chat/completions",
        "started_wall": ts - 1,
        "ended_wall": ts,
        "duration_ms": 850.0,
        "status": 200,
        "resp_content_type": "application/json",
        "resp_body": usage_body(1, 2),
    }
    fields.update(kw)
    return RequestRecord(**fields)


def rfc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def ids(store: ActivityStore, query: str = "") -> list[int]:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    page = store.activity(parse_activity_query(pairs))  # type: ignore[arg-type]
    return [row["id"] for row in page["data"]]


@pytest.fixture
def store() -> Iterator[ActivityStore]:
    s = ActivityStore(None, 1000)
    yield s
    s.close()


# --- scenarios 73–75 ---------------------------------------------------------------------


def test_73_empty_store(store: ActivityStore) -> None:
    assert store.activity(ActivityQuery()) == {
        "data": [],
        "page": 1,
        "limit": 25,
        "total": 0,
        "total_pages": 0,
    }


def test_74_model_filter_and_has_capture() -> None:
    captured: set[int] = set()
    store = ActivityStore(None, 1000, has_capture=captured.__contains__)
    first = store.record(rec("m1"))
    store.record(rec("m2"))
    captured.add(first)
    page = store.activity(parse_activity_query([("model", "m1"), ("limit", "10"), ("page", "1")]))
    assert (page["total"], page["limit"], page["page"], page["total_pages"]) == (1, 10, 1, 1)
    assert [(r["id"], r["model"], r["has_capture"]) for r in page["data"]] == [(first, "m1", True)]
    second = store.activity(parse_activity_query([("model", "m2")]))["data"][0]
    assert second["has_capture"] is False
    store.set_capture_lookup(lambda row_id: True)
    assert store.activity(parse_activity_query([("model", "m2")]))["data"][0]["has_capture"]


@pytest.fixture
def four(store: ActivityStore) -> ActivityStore:
    """Rows 1..4 at ts 1000..1003 for models m1, m2, m1, m3."""
    assert store.record_many(
        [rec(m, ts=1000 + i) for i, m in enumerate(["m1", "m2", "m1", "m3"])]
    ) == [1, 2, 3, 4]
    return store


TS = [rfc(1000 + i) for i in range(4)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("model=m1&model=m3", [4, 3, 1]),
        ("model=m2", [2]),
        ("min_id=2&max_id=3", [3, 2]),
        ("min_id=4", [4]),
        ("max_id=2", [2, 1]),
        ("model=m1&min_id=2", [3]),
        (f"start={TS[2]}", [4, 3]),
        (f"end={TS[1]}", [2, 1]),
        (f"start={TS[1]}&end={TS[2]}", [3, 2]),
        (f"start={TS[0]}&end={TS[3]}&model=m1", [3, 1]),
        (f"start={TS[0]}&min_id=3", [4, 3]),
        ("", [4, 3, 2, 1]),
        ("model=nope", []),
        ("order=asc", [1, 2, 3, 4]),
        ("sort=model&order=asc", [1, 3, 2, 4]),
        ("sort=model", [4, 2, 3, 1]),
        ("sort=time&order=asc&limit=2&page=2", [3, 4]),
        ("limit=3&page=2", [1]),
        ("limit=3&page=3", []),
    ],
)
def test_75_filters_and_order(four: ActivityStore, query: str, expected: list[int]) -> None:
    assert ids(four, query) == expected


def test_paging_counts(four: ActivityStore) -> None:
    page = four.activity(parse_activity_query([("limit", "3"), ("page", "2")]))
    assert (page["total"], page["total_pages"], page["page"], page["limit"]) == (4, 2, 2, 3)


def test_every_sort_column_sorts(store: ActivityStore) -> None:
    store.record(rec(resp_body=usage_body(5, 1, prompt_n=5, predicted_n=1, prompt_per_second=9)))
    store.record(rec(resp_body=usage_body(1, 5, prompt_n=1, predicted_n=5, prompt_per_second=3)))
    assert ids(store, "sort=prompt&order=asc") == [2, 1]
    assert ids(store, "sort=generated&order=asc") == [1, 2]
    assert ids(store, "sort=prompt_speed") == [1, 2]
    for key in ("cached", "drafted", "gen_speed", "duration", "req_path", "resp_status_code"):
        assert ids(store, f"sort={key}") == [2, 1]  # ties: id descending


# --- scenario 77 --------------------------------------------------------------------------


def test_77_stats(store: ActivityStore) -> None:
    store.record(
        rec(
            "m1",
            resp_body=usage_body(
                0,
                0,
                prompt_n=1,
                predicted_n=2,
                cache_n=1,
                prompt_per_second=10,
                predicted_per_second=20,
            ),
        )
    )
    store.record(
        rec(
            "m1",
            resp_body=usage_body(
                0, 0, prompt_n=3, predicted_n=4, prompt_per_second=30, predicted_per_second=40
            ),
        )
    )
    store.record(rec("m2", resp_body=usage_body(100, 100)))
    stats = store.stats("m1")
    assert {k: v for k, v in stats.items() if not k.endswith("histogram")} == {
        "total_requests": 2,
        "total_input_tokens": 4,
        "total_output_tokens": 6,
        "total_cache_tokens": 1,
    }
    assert stats["prompt_histogram"]["min"] == 10 and stats["prompt_histogram"]["max"] == 30
    assert stats["gen_histogram"]["min"] == 20 and stats["gen_histogram"]["max"] == 40
    everything = store.stats()
    assert (everything["total_requests"], everything["total_input_tokens"]) == (3, 104)
    m2 = store.stats("m2")
    assert (m2["prompt_histogram"], m2["gen_histogram"]) == (None, None)  # rates -1 are unknown
    assert store.stats("nope")["total_requests"] == 0


# --- row JSON ------------------------------------------------------------------------------


def test_row_json_is_the_spec_entry(store: ActivityStore) -> None:
    row_id = store.record(rec(ts=1000.9, metadata={"selector": "public", "client": "web"}))
    assert store.activity(ActivityQuery())["data"] == [
        {
            "id": row_id,
            "timestamp": format_timestamp(1000),
            "model": "m1",
            "req_path": "/v1/chat/completions",
            "resp_content_type": "application/json",
            "resp_status_code": 200,
            "tokens": {
                "cache_tokens": -1,
                "draft_tokens": -1,
                "draft_acc_tokens": -1,
                "input_tokens": 1,
                "output_tokens": 2,
                "prompt_per_second": -1,
                "tokens_per_second": -1,
            },
            "duration_ms": 850,
            "has_capture": False,
            "metadata": {"client": "web", "selector": "public"},
        }
    ]


def test_error_rows_carry_error_msg(store: ActivityStore) -> None:
    store.record(rec(status=502, resp_body=b'{"error":{"message":"model unavailable"}}'))
    row = store.activity(ActivityQuery())["data"][0]
    assert row["error_msg"] == "model unavailable"
    assert row["resp_status_code"] == 502
    assert row["tokens"]["input_tokens"] == 0 and row["tokens"]["cache_tokens"] == 0
    assert "metadata" not in row


def test_timestamp_uses_the_local_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    for tz, expected in (
        ("UTC", "1970-01-01T00:16:40Z"),
        ("Etc/GMT-2", "1970-01-01T02:16:40+02:00"),
    ):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        assert format_timestamp(1000) == expected
    monkeypatch.undo()
    time.tzset()


# --- explain -------------------------------------------------------------------------------


def test_explain_round_trips(store: ActivityStore) -> None:
    explain = Explain(
        queue_ms=1.25,
        swap_model="m1",
        evicted=("a", "b"),
        evict_reason="group",
        evict_ms=30.0,
        load_ms=2500.5,
        ttfb_ms=12.0,
        gen_ms=800.0,
    )
    waited = store.record(rec(explain=explain))
    plain = store.record(rec(explain=Explain(queue_ms=0.0)))
    peer = store.record(rec(explain=None))
    rows = {row["id"]: row for row in store.activity(ActivityQuery())["data"]}
    assert rows[waited]["explain"] == explain.as_json()
    assert rows[plain]["explain"] == Explain(queue_ms=0.0).as_json()
    assert rows[plain]["explain"]["evicted"] == []
    assert "explain" not in rows[peer]


# --- retention and files ------------------------------------------------------------------


def test_in_memory_store_keeps_the_newest_rows() -> None:
    store = ActivityStore(None, 3)
    assert store.record_many([rec() for _ in range(2)]) == [1, 2]
    assert store.record_many([rec() for _ in range(3)]) == [3, 4, 5]
    assert ids(store) == [5, 4, 3]
    assert store.record(rec()) == 6  # ids never reused
    assert ids(store) == [6, 5, 4]
    assert store.max_rows == 3
    assert repr(store) == "<ActivityStore ':memory:' keep=3 last_id=6>"


@pytest.mark.parametrize("configured", [0, -5])
def test_a_non_positive_cap_means_1000(configured: int) -> None:
    store = ActivityStore(None, configured)
    assert store.max_rows == DEFAULT_MAX_IN_MEMORY
    store.record_many([rec() for _ in range(1005)])
    assert store.activity(ActivityQuery())["total"] == 1000


def test_file_store_survives_reopening_and_is_unbounded(tmp_path: Path) -> None:
    path = str(tmp_path / "activity.db")
    store = ActivityStore(path, 1)
    assert store.record_many([rec(), rec()]) == [1, 2]
    store.record_load("m1", 3.0, 1000.0)
    store.close()
    store.close()  # idempotent
    with pytest.raises(sqlite3.ProgrammingError):
        store.activity(ActivityQuery())

    again = ActivityStore(path, 1)
    assert again.max_rows is None
    assert ids(again) == [2, 1]
    assert again.record(rec()) == 3
    assert ids(again) == [3, 2, 1]
    assert again.recent_loads("m1") == [3.0]
    again.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ids_continue_after_deletions_in_a_file(tmp_path: Path) -> None:
    path = str(tmp_path / "activity.db")
    store = ActivityStore(path, 0)
    store.record_many([rec(), rec(), rec()])
    store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM activity WHERE id = 3")
    again = ActivityStore(path, 0)
    assert again.record(rec()) == 4  # AUTOINCREMENT: 3 is never handed out again
    again.close()


def test_a_llama_swap_file_is_migrated(tmp_path: Path) -> None:
    path = str(tmp_path / "llama-swap.db")
    with sqlite3.connect(path) as raw:
        raw.executescript(SPEC_SCHEMA)
        raw.execute(
            "INSERT INTO activity (ts_created, model_id, req_path, input_tokens, output_tokens,"
            " metadata_json) VALUES (1000, 'old', '/v1/completions', 5, 6, '')"
        )
    store = ActivityStore(path, 0)
    new = store.record(rec(explain=Explain(queue_ms=2.0, swap_model="m1", load_ms=10.0)))
    rows = {row["id"]: row for row in store.activity(ActivityQuery())["data"]}
    assert new == 2
    assert "explain" not in rows[1]
    assert rows[1]["tokens"]["input_tokens"] == 5 and rows[1]["model"] == "old"
    assert rows[2]["explain"]["load_ms"] == 10.0
    store.close()
    with sqlite3.connect(path) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(activity)")]
        # llama-swap's own columns first and unchanged; modelswap's appended.
        assert columns[:16] == [row[1] for row in _spec_columns()]
        assert columns[16:] == [
            "queue_ms",
            "swap_model",
            "evicted",
            "evict_reason",
            "evict_ms",
            "load_ms",
            "ttfb_ms",
            "gen_ms",
        ]
        # A spec-only reader still reads every row.
        assert raw.execute("SELECT COUNT(*), SUM(input_tokens) FROM activity").fetchone() == (2, 6)
    ActivityStore(path, 0).close()  # reopening a migrated file adds nothing


def _spec_columns() -> list[Any]:
    with sqlite3.connect(":memory:") as raw:
        raw.executescript(SPEC_SCHEMA)
        return raw.execute("PRAGMA table_info(activity)").fetchall()


# --- writes -----------------------------------------------------------------------------------


def test_record_many_ids_match_their_rows(store: ActivityStore) -> None:
    assert store.record_many([]) == []
    models = [f"m{i}" for i in range(50)]
    assigned = store.record_many([rec(m) for m in models])
    page = store.activity(parse_activity_query([("limit", "999"), ("order", "asc")]))
    assert [(r["id"], r["model"]) for r in page["data"]] == list(zip(assigned, models, strict=True))


def test_a_failed_batch_stores_nothing(store: ActivityStore) -> None:
    store.record(rec())
    bad = rec(metadata={"k": "v"})
    object.__setattr__(bad, "model", None)  # NOT NULL model_id: the insert fails midway
    with pytest.raises(sqlite3.IntegrityError):
        store.record_many([rec(), bad])
    assert ids(store) == [1]
    assert store.record(rec()) == 2  # the rollback also undid the id counter


def test_a_writer_thread_and_readers_share_the_store(store: ActivityStore) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(100):
                store.record_many([rec(), rec()])
                store.record_load("m1", 1.0, 0.0)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        page = store.activity(ActivityQuery(limit=5))
        assert page["data"] == sorted(page["data"], key=lambda r: -r["id"])
        assert page["total"] % 2 == 0  # a batch is seen whole or not at all
        store.stats()
        store.expected_load("m1")
    thread.join()
    assert not errors
    assert store.activity(ActivityQuery())["total"] == 200


# --- load history -----------------------------------------------------------------------------


def test_load_history_and_median(store: ActivityStore) -> None:
    assert store.expected_load("m1") is None
    assert store.recent_loads("m1") == []
    for seconds in (9.0, 1.0, 2.0):
        store.record_load("m1", seconds, 1000.0)
    assert store.recent_loads("m1") == [2.0, 1.0, 9.0]
    assert store.expected_load("m1") == (2.0, 3)
    for seconds in (4.0, 6.0, 8.0):
        store.record_load("m1", seconds, 1000.0)
    assert store.recent_loads("m1") == [8.0, 6.0, 4.0, 2.0, 1.0]  # the 9 s load aged out
    assert store.expected_load("m1") == (4.0, 5)
    store.record_load("m2", 0.5, 1000.0)
    assert store.expected_load("m2") == (0.5, 1)
    assert store.load_history(2) == {"m1": [8.0, 6.0], "m2": [0.5]}


def test_load_history_is_bounded_per_model(store: ActivityStore) -> None:
    for i in range(LOADS_KEPT + 10):
        store.record_load("m1", float(i), 1000.0)
    store.record_load("m2", 1.0, 1000.0)
    kept = store.recent_loads("m1", 1000)
    assert len(kept) == LOADS_KEPT
    assert kept[0] == LOADS_KEPT + 9 and kept[-1] == 10
    assert store.recent_loads("m2", 1000) == [1.0]


def test_entries_by_id(store: ActivityStore) -> None:
    first, second, third = store.record_many([rec("a"), rec("b"), rec("c")])
    assert store.entries([]) == []
    got = store.entries([third, first, 999])
    assert [(e["id"], e["model"]) for e in got] == [(first, "a"), (third, "c")]
    assert got == [r for r in store.activity(ActivityQuery())["data"] if r["id"] != second][::-1]
