"""Nothing lost when an upstream dies before answering (issue 13 item 2).

Real app, real fake upstreams that really crash (``--crash-after``, or a
SIGKILL standing in for a segfault). To have requests *inside* an upstream when
it dies — sent, not yet answered — the fake is frozen with SIGSTOP while they
are granted and forwarded, then let go (it answers some and crashes) or killed.
Waits are on the router's own notifications and the fakes' event logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.process import ProcessState, StateChange
from modelswap.server.replay import wait_crash_noticed
from tests.integration.server_harness import Server, fake, running_server, sse_events
from tests.integration.test_observability import all_rows, flushed, samples

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
REPLAYED = "modelswap_replayed_requests_total"


def pid_of(server: Server, model: str) -> int:
    pid: int = server.fakes[model].events("listening")[-1]["pid"]
    return pid


async def load(session: aiohttp.ClientSession, model: str) -> None:
    """Start ``model`` without an inference request (``--crash-after`` counts only those)."""
    async with session.get(f"/upstream/{model}/health") as resp:
        assert resp.status == 200


async def frozen_burst(
    server: Server, session: aiohttp.ClientSession, model: str, count: int, *, then: int
) -> list[asyncio.Task[tuple[int, bytes]]]:
    """``count`` chat completions sent into a frozen ``model``; ``then`` signals it.

    Returns once every request was granted (so forwarded to this very process)
    and the signal was sent: SIGCONT lets it answer and crash, SIGKILL kills it.
    """
    pid = pid_of(server, model)
    os.kill(pid, signal.SIGSTOP)

    async def one() -> tuple[int, bytes]:
        async with session.post("/v1/chat/completions", json={"model": model, **CHAT}) as resp:
            return resp.status, await resp.read()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await server.until(lambda st: st.in_flight.get(model) == count)
    os.kill(pid, then)
    return tasks


async def replayed_metric(session: aiohttp.ClientSession, model: str) -> float:
    async with session.get("/metrics") as resp:
        found = samples(await resp.text())
    return found.get((REPLAYED, (("model", model),)), 0.0)


async def test_requests_inside_a_crashing_upstream_are_replayed_on_the_restarted_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashy = fake(tmp_path, "crashy", crash_after=2)  # the restarted one survives the replays
    async with running_server([crashy]) as server, server.session() as session:
        await load(session, "crashy")
        with caplog.at_level(logging.WARNING, logger="modelswap.server.dispatch"):
            tasks = await frozen_burst(server, session, "crashy", 4, then=signal.SIGCONT)
            answers = await asyncio.gather(*tasks)
        assert [status for status, _ in answers] == [200] * 4, answers
        served_by = {json.loads(body)["model_id"] for _, body in answers}
        assert served_by == {"crashy"}
        await server.idle()
        await flushed(server)
        rows = await all_rows(session)
        replayed = [row for row in rows if row["metadata"].get("replayed") == "1"]
        metric = await replayed_metric(session, "crashy")
    assert len(crashy.events("crash")) >= 1
    assert crashy.starts == 2  # crashed once, restarted once for all the replays
    assert len(rows) == 4 and all(row["resp_status_code"] == 200 for row in rows)
    # The fake answers two requests and dies; those still inside it are replayed.
    assert 1 <= len(replayed) <= 2 and metric == len(replayed)
    lines = [m for m in caplog.messages if "upstream died before answering" in m]
    assert len(lines) == len(replayed)
    assert lines[0].startswith("[crashy] upstream died before answering; re-admitting")


async def test_retry_on_crash_false_answers_502(tmp_path: Path) -> None:
    crashy = fake(tmp_path, "crashy", crash_after=2, settings={"retryOnCrash": False})
    async with running_server([crashy]) as server, server.session() as session:
        await load(session, "crashy")
        tasks = await frozen_burst(server, session, "crashy", 4, then=signal.SIGCONT)
        statuses = sorted(status for status, _ in await asyncio.gather(*tasks))
        await server.until(lambda st: st.state("crashy") == "stopped")
        await server.idle()
        metric = await replayed_metric(session, "crashy")
    assert set(statuses) == {200, 502} and statuses.count(200) >= 2, statuses
    assert crashy.starts == 1 and metric == 0


async def test_every_request_inside_a_killed_upstream_is_replayed(tmp_path: Path) -> None:
    """SIGKILL while frozen: none of them was answered, so all are replayed — exactly once."""
    async with running_server([fake(tmp_path, "m")]) as server, server.session() as session:
        await load(session, "m")
        tasks = await frozen_burst(server, session, "m", 3, then=signal.SIGKILL)
        statuses = [status for status, _ in await asyncio.gather(*tasks)]
        await server.idle()
        metric = await replayed_metric(session, "m")
    assert statuses == [200] * 3 and metric == 3
    assert server.fakes["m"].starts == 2


async def test_a_streamed_body_is_not_replayed(tmp_path: Path) -> None:
    """``/upstream`` streams the client's body through: spent, so the crash is a 502."""
    async with running_server([fake(tmp_path, "m")]) as server, server.session() as session:
        await load(session, "m")
        pid = pid_of(server, "m")
        os.kill(pid, signal.SIGSTOP)
        post = session.post("/upstream/m/v1/chat/completions", data=b"not json, streamed")
        sent = asyncio.create_task(post)
        await server.until(lambda st: st.in_flight.get("m") == 1)
        os.kill(pid, signal.SIGKILL)
        async with await sent as resp:
            assert resp.status == 502
            error = (await resp.json())["error"]
        await server.until(lambda st: st.state("m") == "stopped")
        await server.idle()
        metric = await replayed_metric(session, "m")
    assert error["message"].startswith("upstream error: ")
    assert server.fakes["m"].starts == 1 and metric == 0


async def test_a_stream_cut_midway_ends_with_an_sse_error_event(tmp_path: Path) -> None:
    streamy = fake(tmp_path, "s", crash_after=1, chunks=100, chunk_interval=0.05)
    async with running_server([streamy]) as server, server.session() as session:
        body = {"model": "s", "stream": True, **CHAT}
        async with session.post("/v1/chat/completions", json=body) as stream:
            assert stream.status == 200
            first = await stream.content.readline()
            assert b'"model_id": "s"' in first or b'"model_id":"s"' in first
            # Another request completes: the fake crashes in the middle of the stream.
            async with session.post("/v1/chat/completions", json={"model": "s", **CHAT}) as r:
                assert r.status == 200
            events = await sse_events(stream)
        await server.idle()
        await flushed(server)
        rows = await all_rows(session)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["message"] == "upstream error: upstream disconnected mid-stream"
    assert error["code"] == "bad_gateway" and events[-2]["src"] == "llama-swap"
    assert len(events) < 100  # cut, not finished
    assert not any(row["metadata"].get("replayed") for row in rows)
    assert streamy.starts == 1  # nothing replayed, nothing restarted


async def test_a_request_behind_a_loading_stream_is_replayed_into_it(tmp_path: Path) -> None:
    """The model dies the moment it is ready: the stream's 200 is out, no upstream byte is."""
    # startup_delay: long enough for the paced opening lines to be written whole.
    cold = fake(tmp_path, "cold", startup_delay=1.0, settings={"sendLoadingState": True})
    async with running_server([cold]) as server, server.session() as session:
        process = server.router.processes["cold"]
        killed: list[int] = []

        def kill_on_first_ready(change: StateChange) -> None:
            if change.new is ProcessState.READY and not killed:
                pid = process.statistics().pid
                assert pid is not None
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)

        process.on_state_change(kill_on_first_ready)
        body: dict[str, Any] = {"model": "cold", "stream": True, **CHAT}
        async with session.post("/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            events = await sse_events(resp)
        await server.idle()
        await flushed(server)
        rows = await all_rows(session)
    thinking = "".join(
        e["choices"][0]["delta"].get("reasoning_content", "")
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )
    assert killed and thinking.count("llama-swap loading model: cold") == 2  # loaded twice
    assert any(isinstance(e, dict) and e.get("model_id") == "cold" for e in events)
    assert not any(isinstance(e, dict) and "error" in e for e in events)
    assert events[-1] == "[DONE]"
    assert [row["metadata"].get("replayed") for row in rows] == ["1"]
    assert cold.starts == 2


async def test_a_replay_waits_until_the_router_has_seen_the_crash(tmp_path: Path) -> None:
    """Right after the kill the model still looks ready: re-admitting then would be granted
    the dead upstream. The wait ends when the exit is noticed; a live upstream keeps it."""
    async with running_server([fake(tmp_path, "m")]) as server, server.session() as session:
        await load(session, "m")
        assert not await wait_crash_noticed(server.router, "m", grace=0.2)  # alive: grace
        os.kill(pid_of(server, "m"), signal.SIGKILL)
        assert server.router.state_of("m") == "ready"  # not noticed yet: no await since
        assert await wait_crash_noticed(server.router, "m")
        assert server.router.state_of("m") == "stopped"
