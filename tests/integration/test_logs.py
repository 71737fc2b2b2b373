"""``/logs`` and ``/logs/stream…`` over the real app and real fake upstreams (server spec §19).

The fake prints ``fake upstream <id> listening on <url>`` when it starts; the
chatty fake (:mod:`tests.integration.chatty_upstream`) prints bursts on
demand. Every wait reads a stream until the expected bytes arrive, under
``asyncio.timeout``; nothing sleeps. Spec §24 scenarios are ``test_s24_<n>_…``.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from modelswap.app import build_app
from modelswap.config import load_config_text
from modelswap.observability.log_monitors import LOG_MONITORS
from modelswap.testing.fake_process import fake_upstream_env
from tests.integration.router_harness import DEADLINE, Fake
from tests.integration.server_harness import config_text, fake, running_server
from tests.integration.test_cli import serving, stop_with

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
INVALID = "invalid logger. Use 'proxy', 'upstream' or a model's ID"
DROPPED = b"bytes dropped"


@dataclass
class ChattyFake(Fake):
    """A fake run through :mod:`tests.integration.chatty_upstream` (adds ``/chatter``)."""

    def yaml(self) -> str:
        return super().yaml().replace("modelswap.testing.fake_upstream", CHATTY_MODULE)


CHATTY_MODULE = "tests.integration.chatty_upstream"


def chatty(tmp: Path, model_id: str) -> ChattyFake:
    base = fake(tmp, model_id)
    return ChattyFake(base.model_id, base.port, base.event_log, base.options, base.settings)


def listening_line(f: Fake) -> bytes:
    return f"fake upstream {f.model_id} listening on http://127.0.0.1:{f.port}\n".encode()


async def read_until(
    response: aiohttp.ClientResponse, needle: bytes, seen: bytearray | None = None
) -> bytes:
    """Read a streamed body until ``needle`` has arrived; return everything read."""
    seen = bytearray() if seen is None else seen
    async with asyncio.timeout(DEADLINE):
        while needle not in seen:
            chunk = await response.content.readany()
            if not chunk:
                raise AssertionError(f"stream ended before {needle!r}: {bytes(seen)[-500:]!r}")
            seen += chunk
    return bytes(seen)


async def chat(session: aiohttp.ClientSession, model: str) -> None:
    async with session.post("/v1/chat/completions", json={**CHAT, "model": model}) as response:
        assert response.status == 200, await response.text()


async def chatter(session: aiohttp.ClientSession, model: str, tag: str, lines: int = 0) -> None:
    url = f"/upstream/{model}/chatter?lines={lines}&tag={tag}"
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        assert await response.text() == "ok"


# --- /logs -------------------------------------------------------------------------------


async def test_s24_86_logs_is_the_mux_history_and_browsers_go_to_the_ui(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with running_server([a], head="logToStdout: both") as server, server.session() as s:
        await chat(s, "a")
        async with s.get("/health") as response:
            assert response.status == 200
        async with s.get("/logs") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain"
            text = await response.read()
        assert listening_line(a) in text  # upstream output: logToStdout both
        assert b'[INFO] Request 127.0.0.1 "GET /health HTTP/1.1" 200 2 ' in text
        # the history as it was; the /logs request's own access line came after
        assert server.app[LOG_MONITORS].mux.history().startswith(text)
        async with s.get(
            "/logs", headers={"Accept": "text/html,*/*"}, allow_redirects=False
        ) as response:
            assert response.status == 302
            assert response.headers["Location"] == "/ui/"


async def test_s24_86_default_mux_has_proxy_lines_only(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with running_server([a]) as server, server.session() as s:
        await chat(s, "a")
        async with s.get("/logs") as response:
            text = await response.read()
        monitors = server.app[LOG_MONITORS]
        assert b'[INFO] Request 127.0.0.1 "POST /v1/chat/completions HTTP/1.1" 200' in text
        assert listening_line(a) not in text
        assert listening_line(a) in monitors.upstream.history()  # kept, just not in mux


async def test_log_to_stdout_none_leaves_mux_empty(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with running_server([a], head="logToStdout: none") as server, server.session() as s:
        await chat(s, "a")
        async with s.get("/logs") as response:
            assert response.status == 200
            assert await response.read() == b""
        monitors = server.app[LOG_MONITORS]
        assert b"POST /v1/chat/completions" in monitors.proxy.history()
        assert listening_line(a) in monitors.upstream.history()


# --- /logs/stream/<model> ------------------------------------------------------------------


async def test_s24_82_model_stream_sends_history_with_stream_headers(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with running_server([a]) as server, server.session() as s:
        await chat(s, "a")
        async with s.get("/logs/stream/a") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/plain"
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Accel-Buffering"] == "no"
            seen = await read_until(response, listening_line(a))
        assert seen == server.router.processes["a"].logs.history()
        async with s.head("/logs/stream/a") as response:  # headers only, never a live stream
            assert response.status == 200
            assert response.headers["X-Accel-Buffering"] == "no"
        assert server.app[LOG_MONITORS].stream_count == 0


async def test_model_stream_follows_live_output_from_before_the_model_started(
    tmp_path: Path,
) -> None:
    a = fake(tmp_path, "a")
    async with (
        running_server([a]) as server,
        server.session() as s,
        s.get("/logs/stream/a") as response,
    ):
        await chat(s, "a")  # starts the model while the stream is open
        assert await read_until(response, listening_line(a)) == listening_line(a)


async def test_model_ids_with_slashes_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "org").mkdir()
    slashed = fake(tmp_path, "org/model", settings={"aliases": ["nick"]})
    async with running_server([slashed]) as server, server.session() as s:
        await chat(s, "org/model")
        for path in ("/logs/stream/org/model", "/logs/stream/nick", "/logs/stream/org%2Fmodel"):
            async with s.get(path) as response:
                assert response.status == 200, path
                await read_until(response, listening_line(slashed))


async def test_no_history_sends_only_what_comes_after(tmp_path: Path) -> None:
    talker = chatty(tmp_path, "talker")
    async with running_server([talker]) as server, server.session() as s:
        await chatter(s, "talker", "before")
        for query in ("?no-history", "?no-history=1", "?x=1&no-history=false"):
            async with s.get(f"/logs/stream/talker{query}") as response:
                await chatter(s, "talker", "live")
                seen = await read_until(response, b"chatter live done\n")
            assert seen == b"chatter live done\n", query
        async with s.get("/logs/stream/talker") as response:
            seen = await read_until(response, b"chatter before done\n")
            assert seen.startswith(listening_line(talker))


@pytest.mark.parametrize("logger", ["nope", "a/b", "proxyx", "Upstream"])
async def test_s24_82_unknown_logger_is_400(tmp_path: Path, logger: str) -> None:
    a = fake(tmp_path, "a")
    async with running_server([a]) as server, server.session() as s:
        async with s.get(f"/logs/stream/{logger}") as response:
            assert response.status == 400
            assert (await response.json())["error"]["message"] == INVALID
        assert server.app[LOG_MONITORS].stream_count == 0


# --- /logs/stream/proxy, /upstream, mux ---------------------------------------------------


async def test_proxy_stream_shows_the_access_line_of_a_later_request(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with running_server([a]) as server, server.session() as s:
        async with s.get("/logs/stream/proxy?no-history") as response:
            async with s.get("/health", headers={"User-Agent": "probe/1"}) as health:
                assert health.status == 200
            seen = await read_until(response, b'"probe/1"')
        assert seen.startswith(b'[INFO] Request 127.0.0.1 "GET /health HTTP/1.1" 200 2 "probe/1" ')


async def test_upstream_and_mux_streams(tmp_path: Path) -> None:
    a, b = fake(tmp_path, "a"), fake(tmp_path, "b")
    async with (
        running_server([a, b], head="logToStdout: both") as server,
        server.session() as s,
        s.get("/logs/stream/upstream") as upstream,
        s.get("/logs/stream") as mux,
        s.get("/logs/stream/") as mux_slash,
    ):
        await chat(s, "a")
        await chat(s, "b")
        for response, needles in (
            (upstream, [listening_line(a), listening_line(b)]),
            (mux, [listening_line(a), listening_line(b), b'"POST /v1/chat/completions']),
            (mux_slash, [listening_line(a), listening_line(b)]),
        ):
            seen = bytearray()
            for needle in needles:
                await read_until(response, needle, seen)
            if response is upstream:
                assert b"[INFO]" not in seen  # raw model output only


# --- slow readers and shutdown ------------------------------------------------------------


class Collector:
    """Reads a stream continuously in the background (a reader that keeps up)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.data = bytearray()
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(response))

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        async for chunk in response.content.iter_any():
            self.data += chunk
            self._changed.set()
        self._changed.set()

    async def wait(self, predicate: Callable[[bytes], bool]) -> None:
        async with asyncio.timeout(DEADLINE):
            while not predicate(bytes(self.data)):
                assert not self._task.done(), "stream ended"
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class StalledReader:
    """A raw HTTP client with a tiny receive window that stops reading after the headers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str, path: str) -> StalledReader:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        async with asyncio.timeout(DEADLINE):
            head = await reader.readuntil(b"\r\n\r\n")  # sent once it has subscribed
        assert head.startswith(b"HTTP/1.1 200"), head
        return cls(reader, writer)

    async def read_until(self, needle: bytes) -> bytes:
        seen = bytearray()
        async with asyncio.timeout(DEADLINE):
            while needle not in seen:
                chunk = await self.reader.read(1 << 16)
                assert chunk, "stalled stream ended"
                seen += chunk
        return bytes(seen)

    def close(self) -> None:
        self.writer.transport.abort()


BURST_LINES = 4096  # 4 MiB: far more than the stalled connection's socket buffers hold


async def test_stalled_reader_never_blocks_the_model_or_other_readers(tmp_path: Path) -> None:
    talker = chatty(tmp_path, "talker")
    async with running_server([talker]) as server, server.session() as s:
        await chatter(s, "talker", "warm")
        stalled = await StalledReader.open(server.url, "/logs/stream/talker?no-history")
        async with s.get("/logs/stream/talker?no-history") as live_response:
            live = Collector(live_response)
            try:
                # The child writes 4 MiB with blocking writes before it answers: the
                # request completes only if its output keeps being drained.
                await chatter(s, "talker", "burst", lines=BURST_LINES)
                assert server.router.processes["talker"].logs.bytes_written > BURST_LINES * 1024
                # The reader that keeps up sees what the model writes next. Its own
                # 10-chunk bound may have dropped burst chunks, and a ping caught in
                # a full queue is replaced by a drop marker; so ping until one lands.
                for i in range(20):
                    mark, needle = len(live.data), f"chatter ping{i} done\n".encode()
                    await chatter(s, "talker", f"ping{i}")
                    await live.wait(lambda d, m=mark, n=needle: n in d[m:] or DROPPED in d[m:])  # type: ignore[misc]
                    if needle in live.data[mark:]:
                        break
                else:
                    raise AssertionError("the live reader never caught up")
                # The stalled connection was bounded: reading it now shows what it lost.
                stalled_seen = await stalled.read_until(DROPPED)
                assert stalled_seen.count(b"chatter burst ") < BURST_LINES
                async with s.get("/health") as health:  # the proxy is fine throughout
                    assert health.status == 200
            finally:
                await live.stop()
                stalled.close()


async def test_streams_end_cleanly_when_the_app_shuts_down(tmp_path: Path) -> None:
    a = fake(tmp_path, "a")
    async with aiohttp.ClientSession() as session:
        async with running_server([a]) as server:
            proxy = await session.get(server.url + "/logs/stream/proxy?no-history")
            model = await session.get(server.url + "/logs/stream/a")
            streams = [asyncio.create_task(r.read()) for r in (proxy, model)]
            assert server.app[LOG_MONITORS].stream_count == 2
        # ended by the app (a clean end of the chunked body), not cut after the drain timeout
        async with asyncio.timeout(DEADLINE):
            bodies = await asyncio.gather(*streams)
        assert bodies[1] == b""  # the model never started: no history
        for response in (proxy, model):
            response.release()


async def test_a_stalled_stream_does_not_hold_shutdown(tmp_path: Path) -> None:
    """A writer stuck on a client that does not read is cut when the app shuts down.

    The runner's drain timeout is far beyond the deadline: only the cut ends it in time.
    """
    text = config_text([fake(tmp_path, "a")])
    app = build_app(load_config_text(text, "test.yaml", environ={}).config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=600)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        stalled = await StalledReader.open(f"http://{host}:{port}", "/logs/stream/proxy?no-history")
        app[LOG_MONITORS].proxy.write(b"x" * (8 << 20))  # one chunk no socket buffer holds
        await stalled.read_until(b"xxxxxxxx")  # its handler is now inside that write
    finally:
        async with asyncio.timeout(DEADLINE):
            await runner.cleanup()
    stalled.close()


async def test_s24_88_cli_prints_proxy_lines_once_on_stdout(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("logTimeFormat: rfc3339\nmodels:\n  solo:\n    cmd: server --port ${PORT}\n")
    args = ["--config", str(config), "--listen", "127.0.0.1:0"]
    async with serving(args, cwd=tmp_path, env=fake_upstream_env()) as served:
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/health", headers={"User-Agent": "cli/1"}):
                pass
            async with session.get(served.url + "/logs/stream/proxy") as response:
                await read_until(response, b'"cli/1"')
        assert await stop_with(served, signal.SIGTERM) == 0
    output = "".join(served.output)
    lines = [line for line in output.splitlines() if '"cli/1"' in line]
    assert len(lines) == 1, output  # stdout only, not also on stderr
    stamp, _, rest = lines[0].partition(" ")
    assert stamp[:4].isdigit() and stamp[10] == "T", lines[0]
    assert rest.startswith('[INFO] Request 127.0.0.1 "GET /health HTTP/1.1" 200 2 "cli/1" ')
    assert "[INFO] shutting down" in output
