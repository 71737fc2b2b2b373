"""Websocket tunnel: a client upgrade request bridged to the upstream (ComfyUI needs it).

Rather than splicing raw sockets, we terminate the websocket on both sides
(aiohttp ``ws_connect`` to the upstream, ``WebSocketResponse`` to the client)
and pump messages both ways. That keeps the tunnel inside aiohttp's request
lifecycle, so middlewares (access log, auth) and handler cancellation work
unchanged, and each side answers its own pings.

Order matters: the upstream handshake happens first, so an unreachable or
refusing upstream still gets a normal error response (502 envelope, or the
upstream's own status) instead of an accepted-then-closed socket. The
subprotocol the upstream picked is the one offered to the client. Headers
follow the proxy's rules (credentials stripped, ``Host`` kept for local
upstreams); the handshake headers are aiohttp's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web

from modelswap.server.access_log import remember_response
from modelswap.server.headers import upstream_request_headers
from modelswap.server.proxy import (
    UPSTREAM_ERRORS,
    Target,
    UpstreamClient,
    UpstreamUnreachableError,
    describe,
)

log = logging.getLogger("modelswap.server.websocket")

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


def _requested_protocols(request: web.BaseRequest) -> tuple[str, ...]:
    offered = ",".join(request.headers.getall("Sec-WebSocket-Protocol", []))
    return tuple(p.strip() for p in offered.split(",") if p.strip())


async def _pump(source: WebSocket, sink: WebSocket) -> None:
    """Copy data messages until ``source`` closes; then close ``sink`` with its code."""
    async for message in source:
        if message.type is aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is aiohttp.WSMsgType.ERROR:
            break
    code = source.close_code or aiohttp.WSCloseCode.OK
    with contextlib.suppress(*UPSTREAM_ERRORS):
        await sink.close(code=code)


async def tunnel_websocket(
    request: web.Request, client: UpstreamClient, target: Target
) -> web.StreamResponse:
    """Bridge one websocket upgrade to ``target`` until either side closes."""
    headers = upstream_request_headers(
        request.headers,
        client_ip=request.remote or "",
        peer=target.peer,
        api_key=target.api_key,
        websocket=True,
    )
    try:
        upstream = await client.session_for(target).ws_connect(
            target.url,
            headers=headers,
            protocols=_requested_protocols(request),
            autoclose=False,
            max_msg_size=0,
        )
    except aiohttp.WSServerHandshakeError as error:
        raise UpstreamUnreachableError(
            f"{target.error_prefix}: websocket handshake refused ({error.status})"
        ) from None
    except UPSTREAM_ERRORS as error:
        raise UpstreamUnreachableError(f"{target.error_prefix}: {describe(error)}") from None
    try:
        downstream = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            max_msg_size=0,
        )
        remember_response(request, downstream)  # a cancelled tunnel still logs its 101
        await downstream.prepare(request)
        pumps = [
            asyncio.create_task(_pump(downstream, upstream)),
            asyncio.create_task(_pump(upstream, downstream)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        with contextlib.suppress(*UPSTREAM_ERRORS):
            await downstream.close()
        return downstream
    finally:
        await upstream.close()
