"""Observability end to end: every request recorded exactly, explained, and counted.

Real app, real fake upstreams that really swap. The fakes' own reports (their
event logs, the token counts their answers carry) are the ground truth the
activity rows, ``Server-Timing`` and ``/metrics`` are checked against.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from modelswap.server.recording import RECORDING
from modelswap.testing import fake_shapes
from tests.integration.server_harness import Server, fake, running_server, sse_events


def chat(model: str, words: int, stream: bool) -> dict[str, Any]:
    prompt = " ".join(["word"] * words)
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}


async def flushed(server: Server) -> None:
    recorder = server.app[RECORDING].recorder
    assert recorder is not None
    async with asyncio.timeout(30):
        await recorder.wait_flushed()


async def all_rows(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        async with session.get(f"/api/metrics/activity?limit=999&page={page}") as resp:
            assert resp.status == 200
            body = await resp.json()
        rows += body["data"]
        if page >= body["total_pages"]:
            return rows
        page += 1


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) → value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in found.items() if sample == name)


async def test_a_thousand_requests_through_two_swapping_models(tmp_path: Path) -> None:
    """1,000 requests (half streaming), a and b evicting each other, in mixed bursts."""
    fakes = [fake(tmp_path, m, settings={"concurrencyLimit": 1000}) for m in ("a", "b")]
    sent: collections.Counter[tuple[str, bool, int]] = collections.Counter()
    rng = random.Random(7)
    head = "metricsMaxInMemory: 5000"
    async with running_server(fakes, head, together=False) as server, server.session() as session:

        async def one(model: str, words: int, stream: bool) -> None:
            async with session.post(
                "/v1/chat/completions", json=chat(model, words, stream)
            ) as resp:
                assert resp.status == 200, await resp.text()
                assert "queue;dur=" in resp.headers["Server-Timing"]
                await resp.read()

        for _ in range(10):  # ten bursts of 100, each needing both models
            burst = []
            for n in range(100):
                model, stream, words = rng.choice("ab"), n % 2 == 0, rng.randint(1, 40)
                sent[model, stream, words] += 1
                burst.append(one(model, words, stream))
            await asyncio.gather(*burst)
        await server.idle()
        await flushed(server)

        rows = await all_rows(session)
        async with session.get("/metrics") as resp:
            found = samples(await resp.text())

    assert len(rows) == 1000
    recorded = collections.Counter(
        (row["model"], row["resp_content_type"].startswith("text/event-stream"),
         row["tokens"]["input_tokens"])
        for row in rows
    )  # fmt: skip
    assert recorded == sent  # every prompt's token count, as the fake counted it
    completion = len(fake_shapes.split_text("Hello from a", 5))
    assert {row["tokens"]["output_tokens"] for row in rows} == {completion}
    assert all(row["resp_status_code"] == 200 and "explain" in row for row in rows)

    starts = {f.model_id: f.starts for f in fakes}
    assert starts["a"] + starts["b"] >= 10  # each burst needs both models: a swap at least
    for model, count in starts.items():
        assert found["modelswap_swaps_total", (("model", model),)] == count
    for name in (
        "modelswap_request_duration_seconds_count",
        "modelswap_time_to_first_byte_seconds_count",
        "modelswap_queue_wait_seconds_count",
    ):
        assert total(found, name) == 1000, name
    assert total(found, "modelswap_requests_total") == 1000
    waited = sum(1 for row in rows if row["explain"]["waited_for_swap"])
    assert waited >= starts["a"] + starts["b"]  # at least the request that started each load


async def test_server_timing_load_is_the_upstreams_own_load_time(tmp_path: Path) -> None:
    """A request that waited for a swap: ``load`` ≈ the fake's boot + its startup delay."""
    delay = 2.0
    fakes = [fake(tmp_path, "slow", startup_delay=delay), fake(tmp_path, "other")]
    async with running_server(fakes, together=False) as server, server.session() as session:
        async with session.post("/v1/chat/completions", json=chat("other", 3, False)) as r:
            assert r.status == 200
        sent_at = time.time()
        async with session.post("/v1/chat/completions", json=chat("slow", 3, False)) as r:
            assert r.status == 200
            timing = r.headers["Server-Timing"]
        await flushed(server)
        rows = await all_rows(session)
    figures = {
        part.split(";")[0].strip(): float(part.split("dur=")[1].split(";")[0])
        for part in timing.split(",")
    }
    # The child's own boot: from the load's start (after the queue and the eviction,
    # which a loaded machine stretches) to its "listening" line.
    boot_ms = (fakes[0].events("listening")[-1]["t"] - sent_at) * 1000.0
    boot_ms -= figures["queue"] + figures["evict"]
    assert figures["load"] >= delay * 1000.0
    # Beyond the child's own boot, the load figure is the startup delay within 10 %.
    assert abs(figures["load"] - boot_ms - delay * 1000.0) <= 0.1 * delay * 1000.0, timing
    assert "evict;dur=" in timing and 'desc="other"' in timing
    assert 'desc="slow"' in timing and "ttfb;dur=" in timing
    explain = rows[0]["explain"]
    assert explain["swap_model"] == "slow" and explain["evicted"] == ["other"]
    assert explain["evict_reason"] == "group"
    assert abs(explain["load_ms"] - figures["load"]) < 0.2


async def test_load_history_survives_a_restart_and_the_loading_stream_says_it(
    tmp_path: Path,
) -> None:
    """A file-backed store keeps each model's load times; the next load announces its ETA."""
    store = f"store:\n  path: {tmp_path / 'activity.db'}\nsendLoadingState: true"
    fakes = [fake(tmp_path, "m", startup_delay=1.5)]  # long enough for the ETA line
    async with running_server(fakes, store) as server:
        assert server.state.load_estimates.expected("m") is None
        async with (
            server.session() as session,
            session.post("/v1/chat/completions", json=chat("m", 2, False)) as r,
        ):
            assert r.status == 200
        await flushed(server)
    async with running_server(fakes, store) as server:
        estimate = server.state.load_estimates.expected("m")
        assert estimate is not None and estimate.samples == 1
        assert estimate.seconds >= 1.5
        async with server.session() as session:
            async with session.post("/v1/chat/completions", json=chat("m", 2, True)) as r:
                assert r.status == 200
                events = await sse_events(r)
            await flushed(server)
            rows = await all_rows(session)
    thinking = "".join(
        event["choices"][0]["delta"].get("reasoning_content", "")
        for event in events
        if isinstance(event, dict) and event.get("choices")
    )
    assert f"expected {estimate.describe()}" in thinking
    assert len(rows) == 2  # the first app's row survived the restart too


async def test_inflight_cancel_through_a_real_stream_and_its_row(tmp_path: Path) -> None:
    """A slow stream shows up in flight on /api/events; cancelling it ends it and records it."""
    from tests.integration.test_events_api import open_events

    fakes = [fake(tmp_path, "m", chunks=200, chunk_interval=0.05)]
    async with running_server(fakes) as server, server.session() as session:
        events = await open_events(session)
        await events.take(6)  # the initial burst
        async with session.post("/v1/chat/completions", json=chat("m", 4, True)) as stream:
            assert stream.status == 200
            _, upsert = await events.until(
                lambda kind, data: kind == "inflight" and data["operation"] == "upsert"
            )
            entry = upsert["request"]
            assert (entry["model"], entry["req_path"], entry["method"]) == (
                "m", "/v1/chat/completions", "POST",
            )  # fmt: skip
            async with session.post(f"/api/inflight/{entry['id']}/cancel") as resp:
                assert resp.status == 200
            # The stream ends early instead of running 10 s, and cleanly: a closing
            # error event and [DONE], then the end of the body (no cut connection).
            body = await stream.read()
        events_text = [e for e in body.decode().split("\n\n") if e.strip()]
        assert events_text[-1] == "data: [DONE]"
        closing = json.loads(events_text[-2].removeprefix("data: "))
        assert closing["error"]["message"].endswith("request cancelled")
        assert closing["error"]["code"] == "service_unavailable"
        assert all(e.startswith("data: ") for e in events_text)  # no event was cut in half
        assert len(events_text) < 200  # ended early, not after every chunk
        _, removed = await events.until(
            lambda kind, data: kind == "inflight" and data["operation"] == "remove"
        )
        assert removed["id"] == entry["id"]
        await server.idle()
        await flushed(server)
        rows = await all_rows(session)
        events.response.close()
    assert len(rows) == 1 and rows[0]["model"] == "m"


async def test_capture_of_a_proxied_request_never_holds_the_key(tmp_path: Path) -> None:
    key = "sk-very-secret-key"
    async with running_server([fake(tmp_path, "m")], f"apiKeys: [{key}]") as server:
        server.headers = {"Authorization": f"Bearer {key}"}
        async with server.session() as session:
            async with session.post("/v1/chat/completions", json=chat("m", 3, False)) as r:
                assert r.status == 200
            await flushed(server)
            (row,) = await all_rows(session)
            assert row["has_capture"] is True
            async with session.get(f"/api/captures/{row['id']}") as r:
                assert r.status == 200
                raw = await r.text()
                capture = await r.json()
    assert key not in raw
    assert capture["req_headers"]["Authorization"] == "[REDACTED]"
    assert capture["req_path"] == "/v1/chat/completions"
    assert b'"word word word"' in base64.b64decode(capture["req_body"])
    assert b"Hello from m" in base64.b64decode(capture["resp_body"])


async def test_load_progress_events_while_a_model_loads(tmp_path: Path) -> None:
    from tests.integration.test_events_api import open_events

    fakes = [fake(tmp_path, "m", startup_delay=1.2)]
    async with running_server(fakes) as server, server.session() as session:
        events = await open_events(session)
        await events.take(6)
        request = asyncio.ensure_future(
            session.post("/v1/chat/completions", json=chat("m", 1, False))
        )
        phases = []
        while not phases or phases[-1]["phase"] not in ("ready", "failed"):
            _, progress = await events.until(lambda kind, _: kind == "loadProgress")
            phases.append(progress)
        (await request).close()
        events.response.close()
    assert phases[0]["phase"] == "loading" and phases[0]["elapsed_ms"] == 0
    assert phases[0]["expected_ms"] is None  # never loaded before
    assert any(p["phase"] == "loading" and p["elapsed_ms"] >= 1000 for p in phases)
    assert phases[-1]["phase"] == "ready" and phases[-1]["elapsed_ms"] >= 1200


async def test_rows_unread_past_the_cap_are_dropped_and_the_rest_made_when_read(
    tmp_path: Path,
) -> None:
    """In memory, rows and captures are made when read; ids are the request's from the start."""
    async with (
        running_server([fake(tmp_path, "m")], "metricsMaxInMemory: 4") as server,
        server.session() as session,
    ):
        for words in range(1, 8):  # 7 requests, one at a time: ids 1..7 in order
            async with session.post("/v1/chat/completions", json=chat("m", words, False)) as r:
                assert r.status == 200
                await r.read()
        await flushed(server)
        backlog_len = len(server.app[RECORDING].recorder._backlog or ())  # type: ignore[union-attr]
        assert backlog_len == 4  # nobody read: the newest 4 raw, the 3 older dropped unparsed
        async with session.get("/api/timeline") as resp:
            marks = [mark["id"] for mark in (await resp.json())["requests"]]
        async with session.get("/api/captures/7") as resp:  # a capture lookup makes the rows
            assert resp.status == 200
            assert b"word " * 6 + b"word" in base64.b64decode((await resp.json())["req_body"])
        async with session.get("/api/captures/3") as resp:
            assert resp.status == 404  # dropped with its row, as the store would have evicted it
        rows = await all_rows(session)
    assert marks == [1, 2, 3, 4, 5, 6, 7]
    assert [row["id"] for row in rows] == [7, 6, 5, 4]
    assert [row["tokens"]["input_tokens"] for row in rows] == [7, 6, 5, 4]  # the fake counts words
    assert all(row["has_capture"] for row in rows)
