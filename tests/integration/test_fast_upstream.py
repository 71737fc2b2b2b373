"""The lean upstream client (modelswap.server.fast_upstream) against real sockets.

The fake upstream covers the ordinary answer; a small raw server in this file
plays the upstreams that misbehave in exactly one way each (chunked bodies,
bodies delimited by the connection's close, connections cut before the
status line or mid-body, a pooled connection the upstream closed), because
those are what a hand-written client gets wrong. The whole integration suite
also runs through this client: every local ``http://`` upstream takes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from modelswap.server.fast_upstream import PAUSE_BYTES, FastUpstream, eligible
from modelswap.testing.fake_process import FakeUpstreamProcess, free_port

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = CIMultiDict({"Content-Type": "application/json"})

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback server answering each connection with ``answer``; keeps what it read."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> URL:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return URL(f"http://127.0.0.1:{port}/v1/chat/completions?x=1")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One whole request (head and Content-Length body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Answer], Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> RawServer:
        raw = RawServer(answer)
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        servers.append(raw.server)
        return raw

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_answers_and_reuses_one_connection() -> None:
    client = FastUpstream()
    with FakeUpstreamProcess("m") as fake:
        for _ in range(3):
            response = await client.request(
                "POST", URL(f"{fake.url}/v1/chat/completions"), JSON, CHAT
            )
            assert response.status == 200 and response.reason == "OK"
            raw_body = await response.read()
            assert response.content_length == len(raw_body)
            assert json.loads(raw_body)["choices"][0]["message"]["content"]
            response.release()
    assert client.connects == 1, client
    client.close()


async def test_request_bytes_as_sent(raw: Callable[[Answer], Awaitable[RawServer]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = await raw(answer)
    client = FastUpstream()
    headers = CIMultiDict([("Content-Type", "application/json"), ("X-Tag", "a"), ("X-Tag", "b")])
    response = await client.request("POST", server.url, headers, b"{}")
    assert await response.read() == b"ok"
    response.release()
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    assert f"Host: {server.url.raw_authority}".encode() in lines
    assert b"X-Tag: a" in lines and b"X-Tag: b" in lines  # repeated headers kept
    assert b"Content-Length: 2" in lines and body == b"{}"
    client.close()


async def test_chunked_body_then_reuse(raw: Callable[[Answer], Awaitable[RawServer]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: text/event-stream\r\n\r\n"
                b"6\r\ndata: \r\n3\r\nabc\r\n0\r\n\r\n"
            )
            await writer.drain()

    server = await raw(answer)
    client = FastUpstream()
    for _ in range(2):
        response = await client.request("POST", server.url, JSON, CHAT)
        assert response.content_length is None
        chunks = []
        while chunk := await response.content.readany():
            chunks.append(chunk)
        assert b"".join(chunks) == b"data: abc"
        response.release()
    assert server.connections == 1 and client.connects == 1
    client.close()


async def test_body_until_close_is_whole_and_not_reused(
    raw: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    server = await raw(answer)
    client = FastUpstream()
    for _ in range(2):
        response = await client.request("POST", server.url, JSON, CHAT)
        assert await response.read() == b"all of it"
        response.release()
    assert client.connects == 2  # the first connection ended with its body
    client.close()


async def test_cut_before_the_status_line(raw: Callable[[Answer], Awaitable[RawServer]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)  # then close without a byte

    server = await raw(answer)
    client = FastUpstream()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.request("POST", server.url, JSON, CHAT)
    client.close()


async def test_cut_mid_body(raw: Callable[[Answer], Awaitable[RawServer]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some")
        await writer.drain()

    server = await raw(answer)
    client = FastUpstream()
    response = await client.request("POST", server.url, JSON, CHAT)
    assert await response.content.readany() == b"only some"
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.content.readany()
    response.close()
    client.close()


async def test_garbage_instead_of_http(raw: Callable[[Answer], Awaitable[RawServer]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client gives up on us

    server = await raw(answer)
    client = FastUpstream()
    with pytest.raises(aiohttp.ClientPayloadError, match="invalid HTTP response"):
        await client.request("POST", server.url, JSON, CHAT)
    client.close()


async def test_refused_connection_reads_like_aiohttps() -> None:
    port = free_port()
    client = FastUpstream()
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await client.request("GET", URL(f"http://127.0.0.1:{port}/health"), {}, None)
    assert str(caught.value).startswith(f"Cannot connect to host 127.0.0.1:{port} ssl:default")
    client.close()


async def test_a_pooled_connection_the_upstream_closed_is_not_used(
    raw: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)  # answers once, advertising keep-alive, then closes
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server = await raw(answer)
    client = FastUpstream()
    first = await client.request("POST", server.url, JSON, CHAT)
    conn = first._conn
    assert conn is not None and await first.read() == b"ok"
    first.release()
    async with asyncio.timeout(5):  # the close reaches our side
        while not conn.lost:
            await asyncio.sleep(0)
    second = await client.request("POST", server.url, JSON, CHAT)
    assert await second.read() == b"ok"
    second.release()
    assert client.connects == 2
    client.close()


async def test_a_slow_reader_pauses_the_upstream(
    raw: Callable[[Answer], Awaitable[RawServer]],
) -> None:
    size = PAUSE_BYTES * 4
    payload = bytes(range(256)) * (size // 256)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + payload)
        await writer.drain()

    server = await raw(answer)
    client = FastUpstream()
    response = await client.request("POST", server.url, JSON, CHAT)
    conn = response._conn
    assert conn is not None
    async with asyncio.timeout(5):  # nobody reads: what arrives piles up to the bound
        while not conn._paused:
            await asyncio.sleep(0)
    assert conn._buffered < size
    assert await response.read() == payload  # then everything arrives, in order
    response.release()
    client.close()


def test_what_takes_the_fast_client() -> None:
    local = URL("http://127.0.0.1:9000/v1/chat/completions")
    assert eligible("POST", local, False, b"{}", False)
    assert eligible("GET", local, False, None, False)
    assert not eligible("POST", local, False, None, True)  # a body still to stream
    assert not eligible("HEAD", local, False, None, False)  # a body-less answer
    assert not eligible("POST", local, True, b"{}", False)  # peers: TLS, HTTP proxies
    assert not eligible("POST", URL("https://127.0.0.1:9000/x"), False, b"{}", False)
    assert not eligible("POST", URL("http://u:p@127.0.0.1:9000/x"), False, b"{}", False)
