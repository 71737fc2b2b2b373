"""A lean HTTP/1.1 client for the common upstream request (issue 13 item 4).

Why: aiohttp's client does a lot per request that a proxy to a local
upstream never needs (cookie jars, redirects, auto headers, tracing hooks,
a ``ClientRequest``/``ClientResponse`` pair with their helpers); it was a
fifth of modelswap's CPU per proxied request. This client writes the request
in one ``write`` and parses the answer with llhttp (``httptools``), on pooled
kept-alive connections, and hands back a :class:`FastResponse` with the small
part of ``aiohttp.ClientResponse`` the proxy uses (``status``, ``reason``,
``headers``, ``content_length``, ``content.readany()``/``read()``,
``read()``, ``release()``, ``close()``), so :meth:`UpstreamClient.relay
<modelswap.server.proxy.UpstreamClient.relay>` and everything after it is the
same code for both clients.

What it takes (:func:`eligible`): plain ``http://`` local upstreams (not
peers: they may need TLS or an HTTP proxy), a body already in memory (or
none), and no ``HEAD`` or protocol upgrade. Everything else goes through
aiohttp as before.

Failures look like aiohttp's, so the proxy's error handling does not care
which client ran: a connect failure is ``ClientConnectorError`` ("Cannot
connect to host …"), a connection lost before the status line is
``ServerDisconnectedError`` (a pooled connection the upstream closed is
resent once by the caller), a body cut short is ``ClientPayloadError``.
Like the aiohttp pools (:mod:`modelswap.quickack`), reads re-arm
``TCP_QUICKACK`` while a response is incomplete, so Nagle-bound upstreams
cost nothing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from modelswap.quickack import _SETSOCKOPT, rearm, tcp_fd

__all__ = ["BodyReader", "FastResponse", "FastUpstream", "UpstreamResponse", "eligible"]


class BodyReader(Protocol):
    """What the proxy reads a response body with (``aiohttp.StreamReader`` has it too)."""

    async def readany(self) -> bytes: ...

    async def read(self, n: int = -1) -> bytes: ...


class UpstreamResponse(Protocol):
    """An upstream response as the proxy reads it: ``aiohttp.ClientResponse`` or ours."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> CIMultiDictProxy[str]: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> BodyReader: ...

    async def read(self) -> bytes: ...

    def release(self) -> Any: ...

    def close(self) -> None: ...


PAUSE_BYTES = 256 * 1024
"""Unread body bytes at which reading from the upstream pauses (a slow client)."""
_NO_BODY_STATUSES = frozenset({204, 304})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ELIGIBLE_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def eligible(method: str, url: URL, peer: bool, body: bytes | None, has_body: bool) -> bool:
    """Whether this request can take the fast client (module doc)."""
    return (
        not peer
        and url.scheme == "http"
        and method in _ELIGIBLE_METHODS
        and (body is not None or not has_body)
        and "@" not in url.raw_authority
    )


@dataclass(frozen=True, slots=True)
class _ConnKey:
    """What aiohttp's error message shows for a connection (``host``, ``port``, ``ssl``)."""

    host: str
    port: int
    ssl: bool = True  # shown as "ssl:default", as aiohttp shows a plain connection


@dataclass(frozen=True, slots=True)
class _PoolKey:
    host: str
    port: int
    keepalive: int
    idle_conn: int


class _Connection(asyncio.Protocol):
    """One upstream connection: one request at a time, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._fd = -1
        self.lost = False
        self.idle_since = 0.0
        # the response being read
        self._reason = b""
        self._headers: list[tuple[str, str]] = []
        self._head: asyncio.Future[FastResponse] | None = None
        self.response: FastResponse | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._until_close = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None

    # --- the protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._fd = tcp_fd(transport) if _SETSOCKOPT is not None else -1

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(aiohttp.ClientPayloadError(f"invalid HTTP response: {error}"))
            if self.transport is not None:
                self.transport.abort()
            return
        if not self._complete and self._fd >= 0 and not rearm(self._fd):
            self._fd = -1  # not a TCP socket after all: stop trying

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fd = -1
        if self._head is not None and not self._head.done():
            self._head.set_exception(aiohttp.ServerDisconnectedError())
        elif self.response is not None and not self._complete:
            if self._until_close and exc is None:
                self._finish()  # the body ran until the connection closed, as announced
            else:
                self._fail(aiohttp.ClientPayloadError("Response payload is not completed"))

    def pause_writing(self) -> None:  # the request is one write; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # --- llhttp callbacks ------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        self._until_close = (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            and status not in _NO_BODY_STATUSES
            and status >= 200
        )
        reason = self._reason.decode("latin-1") or None  # None: aiohttp writes the standard one
        response = FastResponse(self, status, reason, headers)
        self.response = response
        if self._head is not None and not self._head.done():
            self._head.set_result(response)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # Only meaningful inside the callback: llhttp resets for the next message after it.
        self._keep_alive = self._parser.should_keep_alive()
        self._finish()

    # --- the caller's side -----------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[FastResponse]:
        """Write one whole request; the future resolves with the response's head."""
        self._reason = b""
        self._headers = []
        self.response = None
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._until_close = False
        self._keep_alive = False
        self._error = None
        head: asyncio.Future[FastResponse] = asyncio.get_running_loop().create_future()
        self._head = head
        assert self.transport is not None
        self.transport.write(data)
        return head

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and not self.lost
            and self._error is None
            and not self._until_close
            and self._keep_alive
        )

    async def read_chunk(self) -> bytes:
        """The next body bytes; ``b""`` at the end; raises if the body was cut short."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < PAUSE_BYTES // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def unread(self, chunk: bytes) -> None:
        """Put back the tail of a chunk that was read past a caller's limit."""
        self._chunks.appendleft(chunk)
        self._buffered += len(chunk)

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class _Body:
    """``response.content``: the two readers of ``aiohttp.StreamReader`` the proxy uses."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def readany(self) -> bytes:
        return await self._conn.read_chunk()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all when ``n < 0``); ``b""`` at the end."""
        if n < 0:
            parts = []
            while chunk := await self._conn.read_chunk():
                parts.append(chunk)
            return b"".join(parts)
        chunk = await self._conn.read_chunk()
        if len(chunk) > n:
            self._conn.unread(chunk[n:])
            chunk = chunk[:n]
        return chunk


class FastResponse:
    """The response head, and its body as it arrives (see the module doc)."""

    __slots__ = ("_conn", "_pool", "content", "headers", "reason", "status")

    def __init__(
        self, conn: _Connection, status: int, reason: str | None, headers: CIMultiDictProxy[str]
    ) -> None:
        self._conn: _Connection | None = conn
        self._pool: deque[_Connection] | None = None
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = _Body(conn)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool if it can."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.reusable and self._pool is not None:
            conn.idle_since = time.monotonic()
            self._pool.append(conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Done, maybe half-read: the connection is closed (aborting the upstream request)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()


class FastUpstream:
    """Pools of kept-alive upstream connections, and requests sent through them."""

    def __init__(self) -> None:
        self._pools: dict[_PoolKey, deque[_Connection]] = {}
        self._closed = False
        self.connects = 0
        """Connections opened so far (the rest of the requests reused one)."""

    def __repr__(self) -> str:
        idle = sum(len(pool) for pool in self._pools.values())
        return (
            f"<FastUpstream pools={len(self._pools)} idle={idle} connects={self.connects}"
            f"{' closed' if self._closed else ''}>"
        )

    async def request(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float = 0.0,
        keepalive: int = 0,
        idle_conn: int = 0,
    ) -> FastResponse:
        """Send one request; return once the response's headers arrived."""
        host, port = url.raw_host or "", url.port or 80
        key = _PoolKey(host, port, keepalive, idle_conn)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = deque()
        conn = self._pooled(pool, idle_conn)
        if conn is None:
            conn = await self._connect(host, port, connect_timeout, keepalive)
        try:
            response = await conn.send(_request_bytes(method, url, headers, body))
        except BaseException:
            conn.abort()
            raise
        response._pool = None if self._closed else pool
        return response

    def _pooled(self, pool: deque[_Connection], idle_conn: int) -> _Connection | None:
        now = time.monotonic()
        while pool:
            conn = pool.pop()  # the most recently used: the least likely to be stale
            if conn.lost:
                continue
            if idle_conn > 0 and now - conn.idle_since > idle_conn:
                conn.abort()
                continue
            return conn
        return None

    async def _connect(
        self, host: str, port: int, connect_timeout: float, keepalive: int
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        self.connects += 1
        try:
            async with asyncio.timeout(connect_timeout if connect_timeout > 0 else None):
                _, conn = await loop.create_connection(_Connection, host, port)
        except OSError as error:
            key = cast(Any, _ConnKey(host, port))
            raise aiohttp.ClientConnectorError(key, error) from None
        if keepalive > 0:
            sock = conn.transport.get_extra_info("socket") if conn.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive)
        return conn

    def close(self) -> None:
        """Close every idle connection; responses still being read close when released."""
        self._closed = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for conn in pool:
                conn.abort()


def _request_bytes(method: str, url: URL, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The whole request as written: request line, headers, then the body."""
    lines = [f"{method} {url.raw_path_qs or '/'} HTTP/1.1\r\n"]
    if "Host" not in headers:
        lines.append(f"Host: {url.raw_authority}\r\n")
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method in _BODY_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("utf-8", "surrogateescape")
    return head + body if body else head
