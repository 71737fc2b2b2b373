"""``GET /api/timeline`` over the real app, with two fake upstreams that evict each other.

The picture is checked against what really happened: the fakes' own event
logs (a start each), the activity rows (the request marks' ids), and the
causal order of a swap (the evictee stops before the target starts).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.server.recording import RECORDING
from modelswap.server.timeline_api import BAD_SINCE
from tests.integration.server_harness import Server, fake, running_server

pytestmark = [pytest.mark.timeout(60)]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def chat(session: aiohttp.ClientSession, model: str) -> None:
    async with session.post("/v1/chat/completions", json={"model": model, **CHAT}) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def timeline(session: aiohttp.ClientSession, since: str | None = None) -> dict[str, Any]:
    params = {} if since is None else {"since": since}
    async with session.get("/api/timeline", params=params) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
        return body


async def flushed(server: Server) -> None:
    recorder = server.app[RECORDING].recorder
    assert recorder is not None
    async with asyncio.timeout(30):
        await recorder.wait_flushed()


def lane(body: dict[str, Any], model: str) -> list[tuple[str, bool]]:
    """A model's intervals as (state, still open)."""
    return [(s["state"], s["to"] is None) for s in body["states"] if s["model"] == model]


async def test_two_models_evicting_each_other(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, "a"), fake(tmp_path, "b")]
    async with running_server(fakes, together=False) as server, server.session() as session:
        await chat(session, "a")
        await chat(session, "b")
        await server.idle()
        await flushed(server)
        body = await timeline(session)
        async with session.get("/api/metrics/activity") as resp:
            rows = {row["model"]: row for row in (await resp.json())["data"]}

    assert [f.starts for f in fakes] == [1, 1]  # each model really started once
    assert body["models"] == ["a", "b"]
    assert body["now"] - 3600 == pytest.approx(body["since"], abs=1e-6)
    assert lane(body, "a") == [("starting", False), ("ready", False), ("stopping", False)]
    assert lane(body, "b") == [("starting", False), ("ready", True)]
    state = {(s["model"], s["state"]): s for s in body["states"]}
    for model in ("a", "b"):  # each interval ends where the next one starts
        assert state[model, "starting"]["to"] == state[model, "ready"]["from"]
    assert state["a", "ready"]["to"] == state["a", "stopping"]["from"]
    assert state["a", "stopping"]["to"] <= state["b", "starting"]["from"]  # evicted first

    swap_a, swap_b = body["swaps"]
    assert (swap_a["model"], swap_a["evict"], swap_a["error"]) == ("a", [], None)
    assert swap_b["model"] == "b" and swap_b["evict"] == ["a"]
    assert swap_b["reason"] == "group" and swap_b["error"] is None
    assert swap_b["id"] != swap_a["id"]
    for swap in (swap_a, swap_b):
        assert swap["started"] <= swap["evicted"] <= swap["finished"] <= body["now"]
    tolerance = 0.05  # monotonic facts vs wall-clock state changes: offset taken once
    assert swap_b["started"] <= state["a", "stopping"]["from"] + tolerance
    assert state["a", "stopping"]["to"] <= swap_b["evicted"] + tolerance
    assert state["b", "ready"]["from"] <= swap_b["finished"] + tolerance

    req_a, req_b = body["requests"]
    assert (req_a["model"], req_a["swap_id"], req_a["id"]) == ("a", swap_a["id"], rows["a"]["id"])
    assert (req_b["model"], req_b["swap_id"], req_b["id"]) == ("b", swap_b["id"], rows["b"]["id"])
    for req, swap in ((req_a, swap_a), (req_b, swap_b)):
        assert req["status"] == 200
        assert req["arrived"] <= req["granted"] <= req["ended"]
        assert req["arrived"] <= swap["started"] + tolerance
        assert req["granted"] >= swap["finished"] - tolerance
        assert req["load_ms"] == pytest.approx((swap["finished"] - swap["evicted"]) * 1000, abs=1)
        assert req["queue_ms"] >= 0
    assert req_b["ended"] <= body["now"]


async def test_since_filters_and_bad_since_is_400(tmp_path: Path) -> None:
    fakes = [fake(tmp_path, "a"), fake(tmp_path, "b")]
    async with running_server(fakes, together=False) as server, server.session() as session:
        await chat(session, "a")
        await chat(session, "b")
        await server.idle()
        await flushed(server)
        full = await timeline(session)
        b_ready = next(s for s in full["states"] if s["model"] == "b" and s["state"] == "ready")

        since = b_ready["from"] - 0.001  # RFC 3339 here carries microseconds: stay below
        since_b_ready = await timeline(session, rfc3339(since))
        assert since_b_ready["since"] == pytest.approx(since, abs=1e-5)
        assert lane(since_b_ready, "a") == []  # a stopped before b even started
        assert lane(since_b_ready, "b") == [("starting", False), ("ready", True)]
        assert [r["model"] for r in since_b_ready["requests"]] == ["b"]
        assert "a" not in {s["model"] for s in since_b_ready["swaps"]}

        future = await timeline(session, rfc3339(full["now"] + 60))
        assert lane(future, "b") == [("ready", True)]  # only what is still open
        assert future["swaps"] == [] and future["requests"] == []

        old = await timeline(session, "2000-01-01T00:00:00Z")  # clamped to the hour
        assert old["since"] == pytest.approx(old["now"] - 3600, abs=1e-6)
        assert len(old["requests"]) == 2

        offset = await timeline(session, rfc3339(since)[:-1] + "+00:00")
        assert offset["requests"] == since_b_ready["requests"]
        assert (await timeline(session, ""))["requests"] == full["requests"]

        for bad in ("yesterday", "2024-01-01", "2024-01-01T00:00:00", "1700000000"):
            async with session.get("/api/timeline", params={"since": bad}) as resp:
                assert resp.status == 400, bad
                body = await resp.json()
            assert body["error"]["message"] == BAD_SINCE
            assert BAD_SINCE == "invalid 'since' timestamp, use RFC3339 format"


async def test_a_swap_cancelled_by_unload_ends_as_cancelled(tmp_path: Path) -> None:
    slow = fake(tmp_path, "a", startup_delay=30)
    async with running_server([slow]) as server, server.session() as session:
        request = asyncio.create_task(chat(session, "a"))
        await server.until(lambda s: bool(s.scheduler.swaps))
        (running,) = (await timeline(session))["swaps"]
        assert running["finished"] is None and running["evicted"] is None
        await server.router.unload(["a"])
        with pytest.raises(AssertionError):  # the waiting request fails: model unloaded
            await request
        await server.idle()
        (cancelled,) = (await timeline(session))["swaps"]
    assert cancelled["id"] == running["id"]
    assert cancelled["error"] == "cancelled"
    assert cancelled["finished"] >= cancelled["started"]
