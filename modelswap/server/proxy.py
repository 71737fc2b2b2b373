"""The streaming forwarder: one request to one upstream, bytes relayed as they arrive.

:class:`UpstreamClient` owns the HTTP client connection pools of one app
(create it on startup, close it on cleanup: :func:`setup_upstream_client`).
:meth:`UpstreamClient.forward` is :meth:`~UpstreamClient.open` (send the
request, wait for the response headers) followed by
:meth:`~UpstreamClient.relay` (copy the body chunk by chunk); the split is
the seam for later response capture and metrics.

What it guarantees:

* **Never buffered.** The request body is the bytes already read for model
  extraction (or their rewrite), else the client's stream is passed through;
  the response is copied with ``readany()`` → ``write()``, flushed per chunk.
  One exception, for speed: a non-SSE answer of at most 64 KiB with a declared
  ``Content-Length`` is read whole and sent with its headers in one write (it
  is complete within one round trip anyway); if the upstream dies before it is
  complete, the client gets a 502 envelope instead of a truncated body.
* **Upstream unreachable** (connect error, reset before headers, header
  timeout) → :class:`UpstreamUnreachableError`, a 502 with the envelope.
* **Upstream dies mid-stream** → the client's response ends cleanly (the
  chunked terminator; a response with a ``Content-Length`` is closed instead,
  as it cannot end cleanly) and ``recovered from upstream disconnection
  during streaming`` is logged. An SSE response first gets an SSE error event
  and ``data: [DONE]`` (modelswap only; llama-swap writes nothing).
* **Connection lost before the status line** (refused, reset, closed; not a
  timeout) → :class:`UpstreamConnectionLostError`, which the dispatcher may
  replay (:mod:`modelswap.server.replay`).
* **Client disconnects** → the upstream response is closed (not returned to
  the pool) in ``finally``, which aborts the upstream request at once. This
  relies on aiohttp cancelling the handler task on disconnect: the app runner
  MUST be created with ``handler_cancellation=True``. The ``CancelledError``
  propagates, so a ``finally`` around the forward (the router's "serve done")
  runs. A write that fails because the client left also aborts the upstream.

Timeouts (per model ``timeouts``; 0 = no limit), mapped onto aiohttp:

* ``connect`` (+ ``tlsHandshake`` for https, since the TLS handshake happens
  inside the connect) → ``ClientTimeout.sock_connect``;
* ``responseHeader`` → a deadline around sending the request and receiving
  the headers (it includes the upload, unlike Go's);
* ``keepalive`` → TCP keep-alive probes on new sockets;
* ``idleConn`` → the pool's keep-alive timeout for idle connections;
* ``expectContinue`` → unused: we never send ``Expect`` upstream (see
  :mod:`modelswap.server.headers`).

Connection pools are per distinct (keepalive, idleConn, proxy-from-env)
setting — with default timeouts, one pool for all models. Peers honour
``HTTP(S)_PROXY``/``NO_PROXY`` (loopback excluded); local upstreams never use
a proxy. Responses are relayed undecoded (``Content-Encoding`` passes
through), cookies are never stored, redirects never followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohappyeyeballs import AddrInfoType, SocketFactoryType
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from modelswap.config import ModelTimeouts
from modelswap.errors import UpstreamError
from modelswap.quickack import QuickAckConnector
from modelswap.server.access_log import add_body_bytes, remember_response
from modelswap.server.fast_upstream import FastUpstream, UpstreamResponse, eligible
from modelswap.server.headers import (
    SSE_CONTENT_TYPE,
    client_response_headers,
    upstream_request_headers,
)
from modelswap.server.loading import error_events
from modelswap.server.recording import CANCELLED_BY_API, Observation, observation

log = logging.getLogger("modelswap.server.proxy")

#: Errors from the upstream side of a connection (``TimeoutError`` is an ``OSError``).
UPSTREAM_ERRORS = (aiohttp.ClientError, OSError)
#: The upstream closed a pooled connection (connect failures are excluded where used).
STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class UpstreamUnreachableError(UpstreamError):
    """The upstream could not be reached or failed before sending headers (502)."""


class UpstreamConnectionLostError(UpstreamUnreachableError):
    """The connection failed before the status line: refused, reset or closed (502).

    Not a timeout (the upstream may still be working on it): the request may be
    replayed (:mod:`modelswap.server.replay`), as nothing reached the client.
    """


#: Connection-level failures (timeouts excluded where used: they are ``OSError``s too).
CONNECTION_LOST_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes and how: the full upstream URL plus transport settings."""

    url: URL
    name: str
    """Model or peer model, for log lines."""
    timeouts: ModelTimeouts
    peer: bool = False
    api_key: str = ""
    """A peer's own key, injected as ``Authorization: Bearer`` and ``x-api-key``."""
    error_prefix: str = "upstream error"


def join_url(base: str, raw_path: str, raw_query: str = "") -> URL:
    """Base URL + request path (base path kept, one slash between) + both queries.

    ``raw_path``/``raw_query`` are percent-encoded and stay so (``%2F`` survives).
    """
    origin, base_path, base_query = _split_base(base)
    path = base_path + "/" + raw_path.lstrip("/")
    query = f"{base_query}&{raw_query}" if base_query and raw_query else base_query or raw_query
    text = f"{origin}{path}"
    return URL(f"{text}?{query}" if query else text, encoded=True)


@functools.lru_cache(maxsize=256)
def _split_base(base: str) -> tuple[str, str, str]:
    """``(scheme://authority, path without trailing slash, raw query)`` of a base URL."""
    url = URL(base)
    return f"{url.scheme}://{url.raw_authority}", url.raw_path.rstrip("/"), url.raw_query_string


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=256)
def client_timeout(timeouts: ModelTimeouts, *, tls: bool) -> aiohttp.ClientTimeout:
    """The per-request aiohttp timeout: only connection setup is bounded."""
    sock_connect: float | None = None
    if timeouts.connect > 0:
        extra = timeouts.tls_handshake if tls and timeouts.tls_handshake > 0 else 0
        sock_connect = float(timeouts.connect + extra)
    return aiohttp.ClientTimeout(
        total=None, connect=None, sock_read=None, sock_connect=sock_connect
    )


def _keepalive_factory(period: int) -> SocketFactoryType:
    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, _ = addr_info
        sock = socket.socket(family, type_, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, period)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, period)
        return sock

    return factory


@dataclass(frozen=True, slots=True)
class _PoolKey:
    keepalive: int
    idle_conn: int
    proxy_from_env: bool


class UpstreamClient:
    """HTTP client pools for one app, and the forwarding of requests through them."""

    def __init__(self, *, fast: bool = True) -> None:
        self._sessions: dict[_PoolKey, aiohttp.ClientSession] = {}
        self._fast = FastUpstream() if fast else None
        """The lean client for the common case (:mod:`~modelswap.server.fast_upstream`)."""
        self._closed = False

    def __repr__(self) -> str:
        return f"<UpstreamClient pools={len(self._sessions)} closed={self._closed}>"

    def session_for(self, target: Target) -> aiohttp.ClientSession:
        """The pooled session matching ``target``'s connection settings (created lazily)."""
        if self._closed:
            raise UpstreamUnreachableError(f"{target.error_prefix}: client is closed")
        timeouts = target.timeouts
        key = _PoolKey(
            max(timeouts.keepalive, 0),
            max(timeouts.idle_conn, 0),
            target.peer and not is_loopback(target.url.host),
        )
        session = self._sessions.get(key)
        if session is None:
            connector = QuickAckConnector(  # Nagle-bound upstreams must not stall us
                limit=0,
                keepalive_timeout=float(key.idle_conn) if key.idle_conn else None,
                socket_factory=_keepalive_factory(key.keepalive) if key.keepalive else None,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=key.proxy_from_env,
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        """Close every pool (idempotent); later forwards fail as unreachable."""
        self._closed = True
        if self._fast is not None:
            self._fast.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def open(
        self, request: web.BaseRequest, target: Target, body: bytes | None
    ) -> UpstreamResponse:
        """Send the request upstream and return once its headers arrived (502 on failure).

        ``body`` None streams the client's own body through.
        """
        streamed = body is None
        data: bytes | aiohttp.StreamReader | None = body
        if streamed and request.body_exists:
            data = request.content
        headers = upstream_request_headers(
            request.headers,
            client_ip=request.remote or "",
            peer=target.peer,
            api_key=target.api_key,
            streamed_body=streamed,
        )

        fast = self._fast
        if fast is not None and not eligible(
            request.method, target.url, target.peer, body, streamed and request.body_exists
        ):
            fast = None

        async def send() -> UpstreamResponse:
            if fast is not None:
                if self._closed:
                    raise UpstreamUnreachableError(f"{target.error_prefix}: client is closed")
                timeouts = target.timeouts
                return await fast.request(
                    request.method,
                    target.url,
                    headers,
                    body,
                    connect_timeout=max(timeouts.connect, 0),
                    keepalive=max(timeouts.keepalive, 0),
                    idle_conn=max(timeouts.idle_conn, 0),
                )
            return await self.session_for(target).request(
                request.method,
                target.url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=client_timeout(target.timeouts, tls=target.url.scheme == "https"),
            )

        async def send_or_resend() -> UpstreamResponse:
            try:
                return await send()
            except STALE_CONNECTION_ERRORS as error:
                if isinstance(error, aiohttp.ClientConnectorError) or (
                    streamed and request.body_exists
                ):
                    raise  # could not connect at all, or the client's body is spent
                # A pooled keep-alive connection the upstream closed just before we
                # reused it (llama-server closes after each streamed response while
                # advertising keep-alive). aiohttp retries this only for idempotent
                # methods; our body is in memory, so resend it once.
                log.debug("[%s] pooled connection was closed; resending", target.name)
                return await send()

        header_deadline = target.timeouts.response_header
        deadline = asyncio.timeout(header_deadline) if header_deadline > 0 else None
        try:
            if deadline is None:  # no limit: skip the timeout machinery
                return await send_or_resend()
            async with deadline:
                return await send_or_resend()
        except UPSTREAM_ERRORS as error:
            reason = describe(error)
            if deadline is not None and deadline.expired():  # ours, not aiohttp's connect one
                reason = "timeout awaiting response headers"
            elif isinstance(error, CONNECTION_LOST_ERRORS) and not isinstance(error, TimeoutError):
                raise UpstreamConnectionLostError(f"{target.error_prefix}: {reason}") from None
            raise UpstreamUnreachableError(f"{target.error_prefix}: {reason}") from None

    async def relay(
        self,
        request: web.BaseRequest,
        upstream: UpstreamResponse,
        target: Target,
        response: web.StreamResponse | None = None,
    ) -> web.StreamResponse:
        """Copy ``upstream``'s response to the client; always releases ``upstream``.

        Pass an already prepared ``response`` (a loading stream) to append the
        upstream body to it; its status and headers are then already sent.
        """
        reusable = False
        seen = observation(request)
        try:
            if response is None and _small_whole_body(upstream):
                small = await _read_small_body(request, upstream, target, seen)
                reusable = True
                return small
            if response is None:
                headers = client_response_headers(upstream.headers)
                if seen is not None:
                    seen.response_headers(upstream.status, headers)
                response = web.StreamResponse(
                    status=upstream.status, reason=upstream.reason, headers=headers
                )
                remember_response(request, response)
                await response.prepare(request)
            elif seen is not None:  # a loading stream: its headers are long gone
                seen.response_headers(upstream.status, CIMultiDict(response.headers))
            reusable = await _copy_body(upstream, response, target, seen)
        finally:
            if reusable:
                upstream.release()
            else:
                upstream.close()  # aborts the upstream request; never pooled half-read
        return response

    async def forward(
        self,
        request: web.BaseRequest,
        target: Target,
        body: bytes | None,
        response: web.StreamResponse | None = None,
    ) -> web.StreamResponse:
        """:meth:`open` then :meth:`relay`: the whole proxying of one request."""
        upstream = await self.open(request, target, body)
        return await self.relay(request, upstream, target, response)


async def _copy_body(
    upstream: UpstreamResponse,
    response: web.StreamResponse,
    target: Target,
    seen: Observation | None,
) -> bool:
    """Relay chunks until EOF; True when the upstream body was read to the end.

    An SSE stream the upstream cuts short ends with an SSE error event and
    ``data: [DONE]`` (:func:`sse_epilogue`), so clients see why it ended; so
    does one cancelled through ``/api/inflight/<id>/cancel`` (the cancellation
    still propagates: the handler's cleanup and the upstream abort run as for
    any cancel, but the client gets a complete response instead of a cut one).
    """
    written = b""  # the last chunk written: does a closing event need a blank line first?
    try:
        while True:
            try:
                chunk = await upstream.content.readany()
            except UPSTREAM_ERRORS as error:
                log.warning(
                    "[%s] recovered from upstream disconnection during streaming: %s",
                    target.name,
                    describe(error),
                )
                if response.content_length is not None:
                    response.force_close()  # a short fixed-length body cannot end cleanly
                    await _finish(response)
                elif _is_sse(response):
                    await _end_sse(response, seen, sse_epilogue(written, target.error_prefix))
                else:
                    await _finish(response)
                return False
            if not chunk:
                await _finish(response)
                return True
            try:
                await response.write(chunk)
            except ConnectionError:
                log.debug("[%s] client went away; aborting the upstream request", target.name)
                return False
            written = chunk
            add_body_bytes(response, len(chunk))
            if seen is not None:
                seen.tee(chunk)
    except asyncio.CancelledError as cancel:
        if cancel.args == (CANCELLED_BY_API,) and _is_sse(response):
            message = f"{target.error_prefix}: request cancelled"
            epilogue = sse_epilogue(written, target.error_prefix, message, status=503)
            await _end_sse(response, seen, epilogue)
        raise


#: Bodies up to this size with a declared length are relayed in one write
#: (headers and body together): one syscall instead of three, on the path every
#: small non-streaming answer takes. Anything larger, or of unknown length, streams.
SMALL_BODY_BYTES = 64 * 1024


def _small_whole_body(upstream: UpstreamResponse) -> bool:
    length = upstream.content_length
    return (
        length is not None
        and length <= SMALL_BODY_BYTES
        and SSE_CONTENT_TYPE not in upstream.headers.get("Content-Type", "")
    )


async def _read_small_body(
    request: web.BaseRequest,
    upstream: UpstreamResponse,
    target: Target,
    seen: Observation | None,
) -> web.Response:
    """Read a small, fixed-length upstream body whole and answer with it at once.

    An upstream that fails before the body is complete gets the client a 502
    envelope (nothing was sent yet), rather than a truncated body.
    """
    answered = time.monotonic()
    try:
        body = await upstream.read()
    except UPSTREAM_ERRORS as error:
        log.warning(
            "[%s] recovered from upstream disconnection during streaming: %s",
            target.name,
            describe(error),
        )
        raise UpstreamUnreachableError(f"{target.error_prefix}: {describe(error)}") from None
    headers = client_response_headers(upstream.headers)
    headers.pop("Content-Length", None)  # set from the body by aiohttp
    if seen is not None:
        seen.response_headers(upstream.status, headers, answered)
        seen.tee(body)
    response = web.Response(
        status=upstream.status, reason=upstream.reason, headers=headers, body=body
    )
    add_body_bytes(response, len(body))
    remember_response(request, response)
    return response


def _is_sse(response: web.StreamResponse) -> bool:
    return (
        response.prepared and SSE_CONTENT_TYPE in response.headers.get("Content-Type", "").lower()
    )


async def _end_sse(response: web.StreamResponse, seen: Observation | None, epilogue: bytes) -> None:
    """Write the closing events of a stream that ends early, then end the body."""
    with contextlib.suppress(ConnectionError):
        await response.write(epilogue)
        add_body_bytes(response, len(epilogue))
        if seen is not None:
            seen.tee(epilogue)
    await _finish(response)


def sse_epilogue(last: bytes, error_prefix: str, message: str = "", status: int = 502) -> bytes:
    """The events that end a cut SSE stream, after a blank line if ``last`` left one open."""
    events = error_events(status, message or f"{error_prefix}: upstream disconnected mid-stream")
    if not last or last.endswith(b"\n\n"):
        return events
    return (b"\n" if last.endswith(b"\n") else b"\n\n") + events


async def _finish(response: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionError):  # the client left; nothing to finish
        await response.write_eof()


def describe(error: BaseException) -> str:
    """A one-line description of a transport error for an error message."""
    text = str(error)
    return text if text else type(error).__name__


UPSTREAM_CLIENT: web.AppKey[UpstreamClient] = web.AppKey("upstream_client", UpstreamClient)


def setup_upstream_client(app: web.Application, *, fast: bool = True) -> None:
    """Create ``app[UPSTREAM_CLIENT]`` on startup and close it on cleanup.

    ``fast=False`` sends everything through aiohttp's client (tests run both).
    """

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        client = UpstreamClient(fast=fast)
        app[UPSTREAM_CLIENT] = client
        yield
        await client.close()

    app.cleanup_ctx.append(lifecycle)
