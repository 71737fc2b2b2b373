"""Upstreams that stall on Nagle + delayed ACK cost nothing (issue 13 item 3).

The ``--nagle`` fake is a stdlib ``http.server``: Nagle on, headers and body
in two sends. On a kept-alive connection its second send waits for the
client's ACK, which Linux delays ~40 ms, so every answer is ~40 ms late for
an ordinary client — the first test proves the fake really does that, which
is what makes the others able to fail. modelswap re-arms ``TCP_QUICKACK`` on
upstream sockets (:mod:`modelswap.quickack`), so through it warm requests,
streams and health probes take milliseconds.

Timing assertions are on medians with wide margins (the stall is ≥ 40 ms per
answer, the goal < 10 ms), so a noisy machine does not make them flaky.
"""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

import aiohttp
import pytest

from modelswap import quickack
from modelswap.process.managed import ManagedProcess
from modelswap.process.spec import ProcessSpec
from modelswap.quickack import QuickAckConnector
from modelswap.testing.fake_process import (
    FakeUpstreamProcess,
    fake_upstream_cmd,
    fake_upstream_env,
    free_port,
    read_events,
)
from tests.integration.server_harness import fake, running_server, sse_events

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not hasattr(socket, "TCP_QUICKACK"), reason="delayed-ACK control is Linux-only"
    ),
]

WARM_REQUESTS = 20
STALL = 0.040  # Linux's minimum delayed-ACK timeout: every stalled answer takes longer
GOAL = 0.010
CHAT = {"model": "n", "messages": [{"role": "user", "content": "hi"}]}


async def timed_posts(
    session: aiohttp.ClientSession, url: str, n: int, body: dict[str, object]
) -> list[float]:
    """Seconds per request, ``n`` requests back to back on the session's kept-alive pool."""
    took = []
    for _ in range(n):
        began = time.perf_counter()
        async with session.post(url, json=body) as resp:
            await resp.read()
            assert resp.status == 200, await resp.text()
        took.append(time.perf_counter() - began)
    return took


async def test_the_nagle_fake_stalls_an_ordinary_client() -> None:
    """The premise: direct, on a kept-alive plain ``TCPConnector``, ~40 ms per answer."""
    with FakeUpstreamProcess("n", nagle=True) as upstream:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector()) as session:
            url = f"{upstream.url}/v1/chat/completions"
            await timed_posts(session, url, 2, CHAT)  # connection open and interactive
            took = await timed_posts(session, url, 5, CHAT)
    assert statistics.median(took) >= STALL * 0.75, took


async def test_quickack_connector_does_not_stall_on_the_nagle_fake() -> None:
    with FakeUpstreamProcess("n", nagle=True) as upstream:
        connector = QuickAckConnector()
        assert connector.quickack
        async with aiohttp.ClientSession(connector=connector) as session:
            url = f"{upstream.url}/v1/chat/completions"
            await timed_posts(session, url, 2, CHAT)
            took = await timed_posts(session, url, WARM_REQUESTS, CHAT)
    assert statistics.median(took) < GOAL, took


@pytest.mark.parametrize(("nagle", "rearms"), [(False, False), (True, True)])
async def test_quick_acks_are_re_armed_only_while_an_answer_is_incomplete(
    monkeypatch: pytest.MonkeyPatch, nagle: bool, rearms: bool
) -> None:
    """An answer read whole in one go (the normal fake: one send) costs no syscall;
    the Nagle fake's answers mostly arrive in two reads, and each such one re-arms
    (the first on a fresh connection is quick-ACKed by the kernel anyway)."""
    calls = []

    def counting_rearm(fd: int) -> bool:
        calls.append(fd)
        return real_rearm(fd)

    real_rearm = quickack.rearm
    monkeypatch.setattr(quickack, "rearm", counting_rearm)
    with FakeUpstreamProcess("n", nagle=nagle) as upstream:
        async with aiohttp.ClientSession(connector=QuickAckConnector()) as session:
            url = f"{upstream.url}/v1/chat/completions"
            await timed_posts(session, url, 10, CHAT)
    assert (len(calls) >= 5) if rearms else calls == [], len(calls)


async def test_warm_requests_through_modelswap_do_not_stall(tmp_path: Path) -> None:
    """20 warm requests to a ``--nagle`` model: each well under the 40 ms stall."""
    async with running_server([fake(tmp_path, "n", nagle=True)]) as server:
        url = f"{server.url}/v1/chat/completions"
        async with server.session() as session:
            await timed_posts(session, url, 3, CHAT)  # load the model, warm both pools
            took = await timed_posts(session, url, WARM_REQUESTS, CHAT)
        assert server.fakes["n"].starts == 1
    assert statistics.median(took) < GOAL, [round(t * 1e3, 1) for t in took]
    assert max(took) < STALL, [round(t * 1e3, 1) for t in took]


async def test_streams_from_a_nagle_upstream_do_not_stall_per_chunk(tmp_path: Path) -> None:
    """Each SSE chunk is a send of its own, held until the last one is ACKed."""
    async with running_server([fake(tmp_path, "n", nagle=True, chunks=5)]) as server:
        url = f"{server.url}/v1/chat/completions"
        body = {**CHAT, "stream": True}
        async with server.session() as session:
            await timed_posts(session, url, 2, body)
            took = []
            for _ in range(5):
                began = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    events = await sse_events(resp)
                took.append(time.perf_counter() - began)
    assert events[-1] == "[DONE]" and len(events) == 5 + 2  # pieces, finish, [DONE]
    # Stalled, the frames after the first wait ≥ 40 ms for its ACK (then go out together).
    assert statistics.median(took) < 2 * GOAL, [round(t * 1e3, 1) for t in took]


async def test_readiness_of_a_nagle_upstream_is_detected_at_once(tmp_path: Path) -> None:
    """``ensure_ready`` returns within 20 ms of the fake's first 200 on ``/health``.

    The probes before it are 503s on the same kept-alive connection, so the
    connection is interactive by then: without quick ACKs the 200's body would
    wait ≥ 40 ms for our delayed ACK.
    """
    late = []
    for i in range(3):
        port, events = free_port(), tmp_path / f"start{i}.events"
        cmd = fake_upstream_cmd(port, f"n{i}", event_log=events, nagle=True, startup_delay=0.3)
        spec = ProcessSpec(
            model_id=f"n{i}",
            cmd=cmd,
            proxy=f"http://127.0.0.1:{port}",
            health_check_timeout=30,
        )
        process = ManagedProcess(spec, base_env=fake_upstream_env())
        try:
            await process.ensure_ready()
            returned = time.time()
        finally:
            await process.shutdown()
        healthy = [e["t"] for e in read_events(events) if e["event"] == "healthy"]
        assert len(healthy) == 1
        late.append(returned - healthy[0])
    assert statistics.median(late) < 0.020, [round(t * 1e3, 1) for t in late]
