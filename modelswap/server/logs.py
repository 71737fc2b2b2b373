"""``GET /logs`` and the live ``GET /logs/stream[/<id>]`` routes (server spec §19).

``/logs`` answers the mux history (or sends a browser to the UI). A stream
sends the chosen monitor's history first unless the query has ``no-history``,
then every live chunk, each written and flushed as it comes.

Each connection reads its own bounded subscription of :data:`STREAM_CHUNKS`
chunks: a client that stops reading blocks only its own handler (in
``write``), while the monitor keeps offering chunks that are dropped for this
connection alone — the model's output, the proxy and other readers never wait
for it. A stream ends when the client leaves (its handler is cancelled) or
when the app shuts down (:meth:`LogMonitors.close_streams` ends the
subscription, and cuts a connection whose writer is stuck on a client that
does not read, so shutdown is never held by a log stream).
"""

from __future__ import annotations

from aiohttp import web

from modelswap.errors import ClientError
from modelswap.observability.log_fanout import LogFanout
from modelswap.observability.log_monitors import LOG_MONITORS, LogMonitors
from modelswap.server.access_log import add_body_bytes, remember_response
from modelswap.server.context import SERVER_STATE

STREAM_CHUNKS = 10
"""Chunks a stream connection may have waiting before further chunks are dropped for it."""
INVALID_LOGGER = "invalid logger. Use 'proxy', 'upstream' or a model's ID"
STREAM_HEADERS = {
    "Content-Type": "text/plain",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}


def add_log_routes(app: web.Application) -> None:
    """Register ``/logs``, ``/logs/stream`` and ``/logs/stream/<id…>``."""
    app.router.add_get("/logs", handle_logs)
    app.router.add_get("/logs/stream", handle_stream)
    app.router.add_get("/logs/stream/{logger:.*}", handle_stream)


async def handle_logs(request: web.Request) -> web.StreamResponse:
    """The mux history as text; a browser (``Accept: text/html``) goes to the UI."""
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/")
    history = request.app[LOG_MONITORS].mux.history()
    return web.Response(body=history, headers={"Content-Type": "text/plain"})


def pick_monitor(request: web.Request, monitors: LogMonitors, logger: str) -> LogFanout:
    """The fan-out a stream reads: mux, proxy, upstream, or a local model's own log.

    Model names resolve like ``/upstream``'s (IDs with slashes, aliases);
    anything else is a 400.
    """
    if not logger:
        return monitors.mux
    if logger == "proxy":
        return monitors.proxy
    if logger == "upstream":
        return monitors.upstream
    state = request.app[SERVER_STATE]
    model_id = state.config.resolve_model_id(logger)
    process = state.router.processes.get(model_id) if model_id is not None else None
    if process is None:
        raise ClientError(INVALID_LOGGER)
    return process.logs


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def handle_stream(request: web.Request) -> web.StreamResponse:
    """History (unless ``?no-history``), then live chunks until disconnect or shutdown."""
    monitors = request.app[LOG_MONITORS]
    fanout = pick_monitor(request, monitors, request.match_info.get("logger", ""))
    response = web.StreamResponse(headers=STREAM_HEADERS)
    response.enable_chunked_encoding()
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    stream = monitors.open_stream(
        fanout,
        lambda: _abort(request),
        with_history="no-history" not in request.query,
        queue_entries=STREAM_CHUNKS,
    )
    try:
        await response.prepare(request)
        remember_response(request, response)
        subscription = stream.subscription
        while (chunk := await subscription.wait_chunk()) is not None:
            if stream.ended:  # shutdown: what is still queued is not worth a blocked write
                break
            stream.writing = True
            try:
                await response.write(chunk)
            finally:
                stream.writing = False
            add_body_bytes(response, len(chunk))
    except ConnectionResetError:  # cut at shutdown, or the client left mid-write
        return response
    finally:
        monitors.end_stream(stream)
    return response
