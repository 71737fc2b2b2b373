"""``/api/events``, in-flight cancel and captures through the real app (§14, §15, §18).

Scenarios 62, 72 and 85 of server spec §24. Models are real fake upstreams the
router starts; every wait is on a message arriving (``asyncio.timeout`` is
only the failure deadline).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.observability.captures import CAPTURES
from modelswap.observability.events_hub import EVENTS_HUB
from modelswap.observability.inflight import INFLIGHT
from modelswap.observability.log_monitors import LOG_MONITORS
from modelswap.observability.records import RequestRecord
from modelswap.server.recording import RECORDING
from tests.integration.router_harness import DEADLINE
from tests.integration.server_harness import Server, config_text, fake, running_server

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
HEAD = """
logToStdout: none
ui:
  activity:
    session_id: [X-Trace-ID]
"""
TAIL = """
profiles:
  coding:
    pins: {public: a}
peers:
  remote:
    proxy: http://127.0.0.1:9
    models: [x, y]
"""
BURST = ["logData", "logData", "modelStatus", "uiConfig", "profileChanged", "inflight"]

Event = tuple[str, Any]


class EventStream:
    """An open ``/api/events`` response, parsed message by message."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> Event | None:
        """The next ``(type, data)``; None at the end of the stream."""
        fields: dict[str, str] = {}
        async for raw in self.response.content:
            line = raw.decode().rstrip("\n")
            if line == "":
                if fields:
                    assert fields["event"] == "message"
                    envelope = json.loads(fields["data"])
                    assert isinstance(envelope["data"], str)  # double-encoded
                    return envelope["type"], json.loads(envelope["data"])
                continue
            name, _, value = line.partition(":")  # no space after the colon
            fields[name] = value
        return None

    async def take(self, count: int) -> list[Event]:
        events = []
        async with asyncio.timeout(DEADLINE):
            for _ in range(count):
                event = await self.next()
                assert event is not None, f"stream ended after {events}"
                events.append(event)
        return events

    async def until(self, predicate: Callable[[str, Any], bool]) -> Event:
        """Read on until an event satisfies ``predicate``."""
        async with asyncio.timeout(DEADLINE):
            while (event := await self.next()) is not None:
                if predicate(*event):
                    return event
        raise AssertionError("stream ended first")

    async def ended(self) -> bool:
        async with asyncio.timeout(DEADLINE):
            while await self.next() is not None:
                pass
        return True


def states(models: list[dict[str, Any]]) -> dict[str, str]:
    return {m["id"]: m["state"] for m in models}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp: Path = tmp_path_factory.mktemp("events")
    fakes = [
        fake(tmp, "b", settings={"name": "Bee", "aliases": ["bee"]}),
        fake(
            tmp,
            "a",
            settings={
                "description": "first",
                "capabilities": {"in": ["text", "image"], "out": ["text"], "context": 8192},
            },
        ),
    ]
    async with running_server(fakes, HEAD, TAIL) as running:
        yield running


async def open_events(session: aiohttp.ClientSession, query: str = "") -> EventStream:
    response = await session.get(f"/api/events{query}")
    assert response.status == 200
    return EventStream(response)


async def test_s24_85_late_client_gets_the_current_state_first(server: Server) -> None:
    async with server.session() as s:
        async with s.post("/v1/chat/completions", json={"model": "a", **CHAT}) as resp:
            assert resp.status == 200  # a is now loaded
        recorder = server.app[RECORDING].recorder
        assert recorder is not None
        await recorder.wait_flushed()  # its activity event is not one of the live ones below
        async with s.put("/api/profiles/active", json={"name": "coding"}) as resp:
            assert resp.status == 200
        try:
            events = await open_events(s)
            assert events.response.headers["Content-Type"] == "text/event-stream"
            assert events.response.headers["Cache-Control"] == "no-cache"
            assert events.response.headers["X-Content-Type-Options"] == "nosniff"
            assert events.response.headers["X-Accel-Buffering"] == "no"
            burst = await events.take(len(BURST))
            assert [kind for kind, _ in burst] == BURST
            (_, proxy), (_, upstream), (_, models), (_, ui), (_, profile), (_, inflight) = burst
            assert proxy["source"] == "proxy" and isinstance(proxy["data"], str)
            assert upstream["source"] == "upstream" and isinstance(upstream["data"], str)
            assert models == [
                {
                    "id": "a",
                    "name": "",
                    "description": "first",
                    "state": "ready",
                    "unlisted": False,
                    "peerID": "",
                    "capabilities": {"vision": True},
                    "context_length": 8192,
                },
                {
                    "id": "b",
                    "name": "Bee",
                    "description": "",
                    "state": "stopped",
                    "unlisted": False,
                    "peerID": "",
                    "aliases": ["bee"],
                },
                *(
                    {
                        "id": f"remote/{m}",
                        "name": "",
                        "description": "",
                        "state": "",
                        "unlisted": False,
                        "peerID": "remote",
                    }
                    for m in ("x", "y")
                ),
            ]
            assert ui == {"activity": {"session_id": ["X-Trace-ID"]}}
            assert profile == {"active": "coding"}
            assert inflight == {"operation": "snapshot"}

            # live: a state change after connecting arrives as a new modelStatus
            await server.unload_all()
            _, models = await events.until(
                lambda kind, data: kind == "modelStatus" and states(data)["a"] == "stopped"
            )
            assert states(models)["b"] == "stopped"
            # a profile change: profileChanged, then the models again
            async with s.put("/api/profiles/active", json={"name": None}) as resp:
                assert resp.status == 200
            assert await events.take(2) == [
                ("profileChanged", {"active": None}),
                ("modelStatus", models),
            ]
        finally:
            await server.unload_all()
            server.state.profiles.set_active(None)


async def test_model_status_follows_a_load_step_by_step(server: Server) -> None:
    async with server.session() as s:
        events = await open_events(s)
        await events.take(len(BURST))
        async with s.post("/v1/chat/completions", json={"model": "b", **CHAT}) as resp:
            assert resp.status == 200
        seen = []
        while len(seen) < 2:
            _, models = await events.until(lambda kind, _: kind == "modelStatus")
            seen.append(states(models)["b"])
        assert seen == ["starting", "ready"]
        await server.unload_all()


async def test_log_chunks_are_forwarded_once_per_app_to_every_client(server: Server) -> None:
    monitors = server.app[LOG_MONITORS]
    async with server.session() as s1, server.session() as s2:
        first, second = await open_events(s1), await open_events(s2)
        await first.take(len(BURST))
        await second.take(len(BURST))
        assert monitors.proxy.subscriber_count == 1  # the app's forwarder, not one per client
        assert server.app[EVENTS_HUB].subscriber_count == 2
        monitors.proxy.write("proxy line é\n".encode())
        monitors.upstream.write(b"upstream line\n")
        for events in (first, second):
            assert await events.take(2) == [
                ("logData", {"source": "proxy", "data": "proxy line é\n"}),
                ("logData", {"source": "upstream", "data": "upstream line\n"}),
            ]


async def test_log_history_is_in_the_burst_without_repeating_live(server: Server) -> None:
    monitors = server.app[LOG_MONITORS]
    monitors.upstream.write(b"before connecting\n")
    async with server.session() as s:
        events = await open_events(s)
        burst = await events.take(len(BURST))
        assert burst[1][1]["data"].endswith("before connecting\n")
        monitors.upstream.write(b"after\n")
        # Upstream only: the previous test's stream may end (and log its access line) now.
        upstream = lambda kind, data: kind == "logData" and data["source"] == "upstream"  # noqa: E731
        assert await events.until(upstream) == (
            "logData",
            {"source": "upstream", "data": "after\n"},
        )


async def test_s24_62_inflight_events_and_cancel_by_id(server: Server) -> None:
    tracker = server.app[INFLIGHT]
    cancelled = asyncio.Event()
    async with server.session() as s:
        events = await open_events(s)
        await events.take(len(BURST))
        request_id = tracker.begin(
            "a", "POST", "/v1/chat/completions", {"Authorization": "Bearer k"}, "1.2.3.4", {},
            cancelled.set,
        )  # fmt: skip
        _, upsert = await events.until(lambda kind, _: kind == "inflight")
        assert upsert["operation"] == "upsert"
        assert upsert["request"]["id"] == str(request_id)
        assert upsert["request"]["req_headers"] == {"Authorization": "[REDACTED]"}
        async with s.post(f"/api/inflight/{request_id}/cancel") as resp:
            assert resp.status == 200
            assert await resp.json() == {"msg": "ok"}
        assert cancelled.is_set()
        tracker.end(request_id)
        assert await events.until(lambda kind, _: kind == "inflight") == (
            "inflight",
            {"operation": "remove", "id": str(request_id)},
        )
        for missing in ("missing", str(request_id), "999999"):
            async with s.post(f"/api/inflight/{missing}/cancel") as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["message"] == "inflight request not found"


async def test_activity_events_for_the_recorder(server: Server) -> None:
    async with server.session() as s:
        events = await open_events(s)
        await events.take(len(BURST))
        row = {"id": 7, "model": "a", "req_path": "/v1/chat/completions"}
        server.app[EVENTS_HUB].publish_activity(7, row)
        assert await events.take(2) == [("activity", {"id": 7}), ("metrics", [row])]


async def test_a_client_without_metrics_gets_activity_ids_and_reads_the_rows(
    server: Server,
) -> None:
    """``?metrics=0`` (the web UI): ``activity`` ids only; the row is there when read."""
    hub = server.app[EVENTS_HUB]
    async with server.session() as s:
        ui = await open_events(s, "?metrics=0")
        await ui.take(len(BURST))
        async with s.post("/v1/chat/completions", json={"model": "a", **CHAT}) as resp:
            assert resp.status == 200
        _, activity = await ui.until(lambda kind, _: kind in ("activity", "metrics"))
        hub.publish("sentinel", {})  # a metrics event would come before it
        assert await ui.until(lambda kind, _: kind in ("metrics", "sentinel")) == ("sentinel", {})
        async with s.get("/api/metrics/activity", params={"limit": "5"}) as resp:
            rows = (await resp.json())["data"]
        row = next(row for row in rows if row["id"] == activity["id"])
        assert row["model"] == "a" and row["resp_status_code"] == 200
        plain = await open_events(s)  # an older UI's connection, alongside: the full rows
        await plain.take(len(BURST))
        async with s.post("/v1/chat/completions", json={"model": "a", **CHAT}) as resp:
            assert resp.status == 200
        _, second = await ui.until(lambda kind, _: kind == "activity")
        assert await plain.until(lambda kind, _: kind == "activity") == ("activity", second)
        _, [full] = await plain.until(lambda kind, _: kind == "metrics")
        assert full["id"] == second["id"] and full["model"] == "a"
        hub.publish("sentinel", {})
        assert await ui.until(lambda kind, _: kind in ("metrics", "sentinel")) == ("sentinel", {})
        async with s.get("/api/metrics/activity", params={"limit": "5"}) as resp:
            stored = next(r for r in (await resp.json())["data"] if r["id"] == second["id"])
        assert stored == full  # the live row is the stored row


async def test_an_invalid_metrics_parameter_is_a_400(server: Server) -> None:
    async with server.session() as s, s.get("/api/events?metrics=maybe") as resp:
        assert resp.status == 400
        assert "invalid metrics parameter" in (await resp.json())["error"]["message"]


async def test_s24_72_captures_route(server: Server) -> None:
    record = RequestRecord(
        request_id=1,
        model="a",
        method="POST",
        req_path="/v1/chat/completions",
        started_wall=0.0,
        ended_wall=1.0,
        duration_ms=1000.0,
        status=200,
        resp_content_type="application/json",
        req_headers={"Authorization": "Bearer secret-key"},
        req_body=b'{"model":"a"}',
        resp_headers={"Content-Type": "application/json"},
        resp_body=b'{"ok":true}',
    )
    assert server.app[CAPTURES].store(42, record)
    async with server.session() as s:
        async with s.get("/api/captures/42") as resp:
            assert resp.status == 200
            text = await resp.text()
            assert "/v1/chat/completions" in text and "secret-key" not in text
            capture = json.loads(text)
            assert capture["id"] == 42
            assert capture["req_headers"] == {"Authorization": "[REDACTED]"}
        for missing, status, message in (
            ("999", 404, "capture not found"),
            ("-1", 404, "capture not found"),
            ("abc", 400, "invalid capture ID"),
            ("4.2", 400, "invalid capture ID"),
        ):
            async with s.get(f"/api/captures/{missing}") as resp:
                assert resp.status == status, missing
                assert (await resp.json())["error"]["message"] == message


async def test_captures_disabled_is_404(tmp_path: Path) -> None:
    async with running_server([fake(tmp_path, "a")], "captureBuffer: 0\n") as server:
        assert not server.app[CAPTURES].enabled
        async with server.session() as s, s.get("/api/captures/1") as resp:
            assert resp.status == 404


async def test_shutdown_ends_open_event_streams_at_once(tmp_path: Path) -> None:
    """A runner with llama-swap's 30 s drain budget still stops at once with a stream open."""
    text = config_text([fake(tmp_path, "a")], HEAD)
    app = build_app(load_config_text(text, "test.yaml", environ={}).config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession(f"http://{host}:{port}") as s:
        events = await open_events(s)
        await events.take(len(BURST))
        async with asyncio.timeout(5):  # far below the 30 s drain budget
            await runner.cleanup()
        assert await events.ended()


async def test_shutdown_cuts_a_stream_stalled_on_a_client_that_does_not_read(
    tmp_path: Path,
) -> None:
    text = config_text([fake(tmp_path, "a")], HEAD)
    app = build_app(load_config_text(text, "test.yaml", environ={}).config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            await reader.readuntil(b"event:message")  # subscribed; now it never reads again
        hub = app[EVENTS_HUB]
        chunk = "x" * (1 << 20)
        for _ in range(64):  # far more than the socket buffers hold: the write stalls
            hub.publish("logData", {"source": "proxy", "data": chunk})
        async with asyncio.timeout(DEADLINE):
            await reader.readuntil(b"xxxx")  # the handler took all 64 MiB in one write
        async with asyncio.timeout(5):  # far below the 30 s drain budget
            await runner.cleanup()
    finally:
        writer.close()
