"""``/api/metrics/activity`` and ``/api/metrics/stats`` over real HTTP (spec §17; scenarios 73–77).

Rows go into the app's own store (``app[ACTIVITY_STORE]``) directly; the
request path that produces them in production is tested elsewhere. Nothing
here needs an upstream, so no fake is ever started.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from modelswap.observability.activity_store import ActivityStore
from modelswap.observability.captures import CAPTURES
from modelswap.observability.records import Explain, RequestRecord
from modelswap.server.activity_api import ACTIVITY_STORE
from tests.integration.server_harness import Server, fake, running_server

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def rec(model: str, ts: int, *, prompt: int = 1, completion: int = 2, **kw: Any) -> RequestRecord:
    body = {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    fields: dict[str, Any] = {
        "request_id": 1,
        "model": model,
        "method": "POST",
        "req_path": "/v1/chat/completions",
        "started_wall": ts - 1.0,
        "ended_wall": float(ts),
        "duration_ms": 100.0,
        "status": 200,
        "resp_content_type": "application/json",
        "resp_body": json.dumps(body).encode(),
    }
    fields.update(kw)
    return RequestRecord(**fields)


def rfc(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server([fake(tmp_path, "m1")]) as srv:
        yield srv


def store_of(server: Server) -> ActivityStore:
    return server.app[ACTIVITY_STORE]


async def get(server: Server, path: str, params: Any = None) -> tuple[int, Any]:
    async with server.session() as http, http.get(path, params=params) as response:
        return response.status, await response.json()


async def activity_ids(server: Server, params: Any = None) -> list[int]:
    status, page = await get(server, "/api/metrics/activity", params)
    assert status == 200, page
    return [row["id"] for row in page["data"]]


async def test_73_empty_store(server: Server) -> None:
    assert await get(server, "/api/metrics/activity") == (
        200,
        {"data": [], "page": 1, "limit": 25, "total": 0, "total_pages": 0},
    )
    status, stats = await get(server, "/api/metrics/stats")
    assert (status, stats["total_requests"], stats["prompt_histogram"]) == (200, 0, None)


async def test_74_model_filter_and_capture_flag(server: Server) -> None:
    store = store_of(server)
    first = store.record(rec("m1", 1000))
    store.record(rec("m2", 1001))
    store.set_capture_lookup(lambda row_id: row_id == first)
    status, page = await get(
        server, "/api/metrics/activity", [("model", "m1"), ("limit", "10"), ("page", "1")]
    )
    assert status == 200
    assert (page["total"], page["limit"], page["page"], page["total_pages"]) == (1, 10, 1, 1)
    assert [(r["id"], r["model"], r["has_capture"]) for r in page["data"]] == [(first, "m1", True)]


async def test_has_capture_comes_from_the_apps_capture_cache(server: Server) -> None:
    store = store_of(server)
    kept, lost = rec("m1", 1000, req_body=b'{"model":"m1"}'), rec("m1", 1001)
    kept_id, _ = store.record_many([kept, lost])
    assert server.app[CAPTURES].store(kept_id, kept)
    _, page = await get(server, "/api/metrics/activity")
    assert [(r["id"], r["has_capture"]) for r in page["data"]] == [(2, False), (1, True)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("model", "m1"), ("model", "m3")], [4, 3, 1]),
        ([("min_id", "2"), ("max_id", "3")], [3, 2]),
        ([("model", "m1"), ("min_id", "2")], [3]),
        ([("start", rfc(1002))], [4, 3]),
        ([("start", rfc(1001)), ("end", rfc(1002))], [3, 2]),
        ([("start", rfc(1000)), ("end", rfc(1003)), ("model", "m1")], [3, 1]),
        ([("sort", "model"), ("order", "asc")], [1, 3, 2, 4]),
        ([], [4, 3, 2, 1]),
    ],
)
async def test_75_filters_over_http(
    server: Server, params: list[tuple[str, str]], expected: list[int]
) -> None:
    store_of(server).record_many([rec(m, 1000 + i) for i, m in enumerate(["m1", "m2", "m1", "m3"])])
    assert await activity_ids(server, params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_id": "abc"}, "min_id must be >= 1"),
        ({"max_id": "0"}, "max_id must be >= 1"),
        ({"min_id": "-1"}, "min_id must be >= 1"),
        ({"min_id": "9", "max_id": "2"}, "min_id must be <= max_id"),
        ({"start": "nonsense"}, "invalid 'start' timestamp, use RFC3339 format"),
        ({"end": "2026-01-01"}, "invalid 'end' timestamp, use RFC3339 format"),
        ({"start": rfc(2000), "end": rfc(1000)}, "start must be before end"),
        ({"limit": "1000"}, "limit must be between 1 and 999"),
        ({"limit": "x"}, "invalid limit"),
        ({"page": "0"}, "page must be >= 1"),
        ({"sort": "bogus"}, "invalid sort column"),
        ({"order": "sideways"}, "order must be asc or desc"),
    ],
)
async def test_76_bad_parameters_are_400(
    server: Server, params: dict[str, str], message: str
) -> None:
    status, body = await get(server, "/api/metrics/activity", params)
    assert status == 400
    assert body["error"]["message"] == message
    assert body["error"]["type"] == "invalid_request_error"


async def test_77_stats_for_one_model(server: Server) -> None:
    timings_a = {
        "prompt_n": 1,
        "predicted_n": 2,
        "cache_n": 1,
        "prompt_per_second": 10,
        "predicted_per_second": 20,
    }
    timings_b = {
        "prompt_n": 3,
        "predicted_n": 4,
        "prompt_per_second": 30,
        "predicted_per_second": 40,
    }
    store = store_of(server)
    for timings in (timings_a, timings_b):
        store.record(rec("m1", 1000, resp_body=json.dumps({"timings": timings}).encode()))
    store.record(rec("m2", 1000, prompt=50, completion=50))
    status, stats = await get(server, "/api/metrics/stats", {"model": " m1 "})
    assert status == 200
    assert {k: v for k, v in stats.items() if not k.endswith("histogram")} == {
        "total_requests": 2,
        "total_input_tokens": 4,
        "total_output_tokens": 6,
        "total_cache_tokens": 1,
    }
    assert stats["prompt_histogram"]["bins"] == [1, 0, 0, 0, 1]
    assert stats["gen_histogram"]["min"] == 20 and stats["gen_histogram"]["max"] == 40
    _, everything = await get(server, "/api/metrics/stats")
    assert everything["total_requests"] == 3 and everything["total_input_tokens"] == 54


async def test_rows_carry_explain_and_errors(server: Server) -> None:
    explain = Explain(
        queue_ms=3.0,
        swap_model="m1",
        evicted=("m2",),
        evict_reason="group",
        evict_ms=40.0,
        load_ms=1200.0,
        ttfb_ms=15.0,
        gen_ms=300.0,
    )
    store = store_of(server)
    store.record(rec("m1", 1000, explain=explain, metadata={"client": "web"}))
    store.record(rec("m1", 1001, status=502, resp_body=b"upstream down"))
    _, page = await get(server, "/api/metrics/activity")
    failed, ok = page["data"]
    assert failed["error_msg"] == "502 Bad Gateway" and "explain" not in failed
    assert "metadata" not in failed
    assert ok["explain"] == explain.as_json()
    assert ok["metadata"] == {"client": "web"}
    assert "error_msg" not in ok


async def test_store_failure_is_a_500(server: Server) -> None:
    store_of(server).close()
    status, body = await get(server, "/api/metrics/activity")
    assert (status, body["error"]["message"]) == (500, "failed to get activity")
    status, body = await get(server, "/api/metrics/stats")
    assert (status, body["error"]["message"]) == (500, "failed to get activity stats")


async def test_config_picks_the_store(tmp_path: Path) -> None:
    """``metricsMaxInMemory`` caps the in-memory store; ``store.path`` persists across apps."""
    async with running_server([fake(tmp_path, "m1")], "metricsMaxInMemory: 2\n") as srv:
        store_of(srv).record_many([rec("m1", 1000 + i) for i in range(3)])
        assert await activity_ids(srv) == [3, 2]

    path = tmp_path / "activity.db"
    head = f"store:\n  path: {path}\nmetricsMaxInMemory: 1\n"
    async with running_server([fake(tmp_path, "m1")], head) as srv:
        store_of(srv).record_many([rec("m1", 1000 + i) for i in range(3)])
        assert await activity_ids(srv) == [3, 2, 1]  # a file store is unbounded
    async with running_server([fake(tmp_path, "m1")], head) as srv:
        assert store_of(srv).record(rec("m1", 2000)) == 4
        assert await activity_ids(srv) == [4, 3, 2, 1]
