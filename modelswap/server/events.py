"""`GET /api/events`, in-flight cancel and captures (server spec §14, §15, §18).

One :class:`EventsFeed` per app turns what the app already knows into
:class:`~modelswap.observability.events_hub.EventsHub` messages:

* ``modelStatus`` on every process state change (``LocalRouter.on_process_change``,
  which follows models across config reloads) and on every profile change,
  ``profileChanged`` on profile changes (``ProfileState.observers``) — computed
  only when someone listens;
* ``logData`` for every chunk written to the proxy and upstream log monitors:
  each fan-out is subscribed **once per app** (not once per client) and its
  chunks published into the hub, decoded incrementally so a UTF-8 character
  split across chunks is not mangled;
* ``inflight`` comes from the :class:`~modelswap.observability.inflight.InflightTracker`,
  ``activity``/``metrics`` from the recorder (``EventsHub.publish_activity``).

A client that connects gets the initial burst — proxy log history, upstream
log history, ``modelStatus``, ``uiConfig``, ``profileChanged``, ``inflight``
snapshot — built in the same synchronous step as its subscription, so what
it sees next are exactly the changes after that state: no gap, no repeat
(log chunks still waiting in the forwarders are pushed out first).

The hub is closed on app shutdown, before aiohttp drains requests; an event
stream then ends at once, and one stalled in a write to a client that does not
read is cut, so open streams never hold up shutdown or reload.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from modelswap.config import Config
from modelswap.errors import ClientError
from modelswap.observability.captures import CAPTURES
from modelswap.observability.events_hub import (
    EVENTS_HUB,
    EventsHub,
    EventSubscription,
    encode_event,
)
from modelswap.observability.inflight import INFLIGHT, InflightTracker
from modelswap.observability.log_fanout import LogFanout, LogSubscription
from modelswap.observability.log_monitors import LOG_MONITORS
from modelswap.process import StateChange
from modelswap.router.runtime import LocalRouter
from modelswap.server.access_log import add_body_bytes, remember_response
from modelswap.server.context import SERVER_STATE
from modelswap.server.listing import _capability_fields
from modelswap.server.profiles import ProfileState

log = logging.getLogger("modelswap.server")

__all__ = ["EVENTS_FEED", "EventsFeed", "add_event_routes", "model_status", "setup_events"]

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}
INFLIGHT_NOT_FOUND = "inflight request not found"
INVALID_CAPTURE_ID = "invalid capture ID"
CAPTURE_NOT_FOUND = "capture not found"
_GO_INT = re.compile(r"[+-]?[0-9]+")
_MAX_INT64 = 2**63 - 1


class NotFoundError(ClientError):
    """An in-flight request or capture that does not exist (any more)."""

    status = 404


def model_status(
    config: Config,
    states: Mapping[str, str],
    footprints: Mapping[str, Mapping[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """The ``modelStatus`` payload: local models sorted by id, then peer models.

    ``states`` maps model id → process state; a model without one is ``stopped``.
    ``footprints`` (memory routing): bytes per resource, shown as ``footprint``.
    """
    models: list[dict[str, Any]] = []
    for model_id in sorted(config.models, key=str.encode):
        model = config.models[model_id]
        item: dict[str, Any] = {
            "id": model_id,
            "name": model.name,
            "description": model.description,
            "state": states.get(model_id, "stopped"),
            "unlisted": model.unlisted,
            "peerID": "",
        }
        if model.aliases:
            item["aliases"] = list(model.aliases)
        if footprints and model_id in footprints:
            item["footprint"] = dict(footprints[model_id])
        if not model.capabilities.is_empty:
            fields = _capability_fields(model.capabilities)
            if "capabilities" in fields:
                item["capabilities"] = fields["capabilities"]
            if "context_length" in fields:
                item["context_length"] = fields["context_length"]
        models.append(item)
    for peer_id, peer in config.peers.items():
        for peer_model in dict.fromkeys(peer.models):
            models.append(
                {
                    "id": f"{peer_id}/{peer_model}",
                    "name": "",
                    "description": "",
                    "state": "",
                    "unlisted": False,
                    "peerID": peer_id,
                }
            )
    return models


class _LogForwarder:
    """One log monitor's chunks → ``logData`` events (one subscription per app).

    The chunks written during one send window of the hub go out as one
    ``logData`` event (their text concatenated, in order): a client's log
    view is the same, and every request's access line no longer costs an
    event of its own while the UI is open.
    """

    def __init__(self, source: str, fanout: LogFanout, hub: EventsHub) -> None:
        self.source = source
        self.fanout = fanout
        self._hub = hub
        self._subscription: LogSubscription = fanout.subscribe()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held: list[bytes] = []
        """Chunks taken from the subscription, not yet published."""
        self._pumped = asyncio.Event()

    def _forward(self, chunk: bytes) -> None:
        if not self._hub.has_subscribers:
            self._decoder.reset()  # nobody hears it: skip the decoding too
            return
        text = self._decoder.decode(chunk)
        if text:
            self._hub.publish("logData", {"source": self.source, "data": text})

    def pump(self) -> None:
        """Publish every chunk already written as one event (synchronously)."""
        chunks, self._held = self._held, []
        while (chunk := self._subscription.get_nowait()) is not None:
            chunks.append(chunk)
        self._pumped.set()
        if chunks:
            self._forward(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    async def run(self) -> None:
        """Wait for a chunk, then for the hub's next send, which publishes all there are."""
        while (chunk := await self._subscription.wait_chunk()) is not None:
            self._held.append(chunk)
            self._pumped.clear()
            self._hub.before_send(self.pump)
            await self._pumped.wait()

    def close(self) -> None:
        self._subscription.close()
        self._pumped.set()


@dataclass(eq=False)
class _Stream:
    subscription: EventSubscription
    abort: Callable[[], None]
    writing: bool = False


class EventsFeed:
    """What one app publishes to ``/api/events``, and the burst a new client gets."""

    def __init__(
        self,
        hub: EventsHub,
        config: Config | Callable[[], Config],
        router: LocalRouter,
        profiles: ProfileState,
        inflight: InflightTracker,
        logs: Mapping[str, LogFanout] | None = None,
    ) -> None:
        self.hub = hub
        self._current_config = config if callable(config) else (lambda: config)
        self._router = router
        self._profiles = profiles
        self._inflight = inflight
        self._log_sources = dict(logs or {})
        self._forwarders: list[_LogForwarder] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._streams: set[_Stream] = set()

    def __repr__(self) -> str:
        return f"<EventsFeed streams={len(self._streams)} hub={self.hub!r}>"

    # --- publishing -----------------------------------------------------------------

    def _session_headers(self) -> tuple[str, ...]:
        return self._current_config().ui.activity.session_id

    def model_status(self) -> list[dict[str, Any]]:
        states = {m: p.state.value for m, p in self._router.processes.items()}
        footprints = self._router.statistics().scheduler.footprints
        return model_status(self._current_config(), states, footprints)

    def publish_model_status(self, _change: StateChange | None = None) -> None:
        if self.hub.has_subscribers:
            self.hub.publish("modelStatus", self.model_status())

    def _profile_changed(self, active: str | None) -> None:
        if self.hub.has_subscribers:
            self.hub.publish("profileChanged", {"active": active})
            self.publish_model_status()

    def start(self) -> None:
        """Subscribe to processes and profiles (call on the running loop); logs: see below."""
        self._unsubscribe.append(self._router.on_process_change(self.publish_model_status))
        self._profiles.observers.append(self._profile_changed)

    def _start_forwarders(self) -> None:
        """Follow the log monitors, while at least one client listens.

        Only then: a subscription wakes its forwarder's task for every log
        line — the access line of every request — which is a cost the
        request path should not pay when nobody is watching.
        """
        self._tasks = [task for task in self._tasks if not task.done()]
        for source, fanout in self._log_sources.items():
            forwarder = _LogForwarder(source, fanout, self.hub)
            self._forwarders.append(forwarder)
            self._tasks.append(asyncio.create_task(forwarder.run(), name=f"logData-{source}"))

    def _stop_forwarders(self) -> None:
        """The last client left: unsubscribe (each task ends once its queue is drained)."""
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders.clear()

    def close_streams(self) -> None:
        """End every event stream now (app shutdown); cut the ones stalled in a write."""
        self.hub.close()
        for stream in list(self._streams):
            if stream.writing:
                stream.abort()

    async def aclose(self) -> None:
        self.close_streams()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        with contextlib.suppress(ValueError):
            self._profiles.observers.remove(self._profile_changed)
        self._stop_forwarders()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # --- a client -------------------------------------------------------------------

    def _history(self, source: str) -> str:
        fanout = self._log_sources.get(source)
        return fanout.history().decode(errors="replace") if fanout is not None else ""

    def open(
        self, abort: Callable[[], None], *, metrics: bool = True
    ) -> tuple[_Stream, list[bytes]]:
        """Subscribe a client and build its burst, in one synchronous step."""
        for forwarder in self._forwarders:
            forwarder.pump()  # chunks already in the history must not come again live
        if not self._forwarders:
            self._start_forwarders()  # from the history below on, in this same step
        stream = _Stream(self.hub.subscribe(metrics=metrics), abort)
        if not stream.subscription.closed:
            self._streams.add(stream)
        burst = [
            ("logData", {"source": "proxy", "data": self._history("proxy")}),
            ("logData", {"source": "upstream", "data": self._history("upstream")}),
            ("modelStatus", self.model_status()),
            (
                "uiConfig",
                {"activity": {"session_id": list(self._current_config().ui.activity.session_id)}},
            ),
            ("profileChanged", {"active": self._profiles.active}),
            ("inflight", self._inflight.snapshot_event()),
        ]
        return stream, [encode_event(kind, data) for kind, data in burst]

    def close_stream(self, stream: _Stream) -> None:
        stream.subscription.close()
        self._streams.discard(stream)
        if not self._streams:
            self._stop_forwarders()


EVENTS_FEED: web.AppKey[EventsFeed] = web.AppKey("events_feed", EventsFeed)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


_FLAGS = {"1": True, "true": True, "0": False, "false": False}


def _metrics_flag(request: web.Request) -> bool:
    """``?metrics=0`` (or ``false``): no ``metrics`` events on this stream (docs/api.md)."""
    text = request.query.get("metrics")
    if text is None:
        return True
    flag = _FLAGS.get(text.lower())
    if flag is None:
        raise ClientError(f"invalid metrics parameter {text!r}: use 0, 1, false or true")
    return flag


async def handle_events(request: web.Request) -> web.StreamResponse:
    """The SSE stream: the burst, then live events until disconnect or shutdown."""
    feed = request.app[EVENTS_FEED]
    metrics = _metrics_flag(request)
    response = web.StreamResponse(headers=SSE_HEADERS)
    if request.method == "HEAD":
        await response.prepare(request)
        return response
    stream, burst = feed.open(lambda: _abort(request), metrics=metrics)
    try:
        await response.prepare(request)
        remember_response(request, response)
        messages = burst
        while messages:
            data = b"".join(messages)
            stream.writing = True
            try:
                await response.write(data)
            finally:
                stream.writing = False
            add_body_bytes(response, len(data))
            messages = await stream.subscription.wait_messages()
    except ConnectionResetError:  # cut at shutdown, or the client left mid-write
        pass
    finally:
        feed.close_stream(stream)
    return response


async def handle_cancel_inflight(request: web.Request) -> web.Response:
    """Cancel an in-flight request's handler; its normal cleanup removes it."""
    text = request.match_info["id"]
    tracker = request.app[INFLIGHT]
    if not (text.isascii() and text.isdigit()) or not tracker.cancel(int(text)):
        raise NotFoundError(INFLIGHT_NOT_FOUND)
    return web.json_response({"msg": "ok"})


async def handle_capture(request: web.Request) -> web.Response:
    """One capture by activity row id (Go ``strconv.Atoi`` rules for the id)."""
    text = request.match_info["id"]
    if not _GO_INT.fullmatch(text) or abs(int(text)) > _MAX_INT64:
        raise ClientError(INVALID_CAPTURE_ID)
    capture = request.app[CAPTURES].get(int(text))
    if capture is None:
        raise NotFoundError(CAPTURE_NOT_FOUND)
    return web.json_response(capture)


def add_event_routes(app: web.Application) -> None:
    app.router.add_get("/api/events", handle_events)
    app.router.add_post("/api/inflight/{id}/cancel", handle_cancel_inflight)
    app.router.add_get("/api/captures/{id}", handle_capture)


def setup_events(app: web.Application) -> EventsFeed:
    """Create the app's events feed and tie it to the app's life.

    Call it once ``SERVER_STATE``, ``EVENTS_HUB`` and ``INFLIGHT`` are set (and
    after the log monitors, whose proxy/upstream fan-outs it forwards if the
    app has them). The feed subscribes on startup; on shutdown — before HTTP
    drains — every event stream ends; on cleanup its subscriptions go.
    """
    state = app[SERVER_STATE]
    monitors = app.get(LOG_MONITORS)
    logs = {} if monitors is None else {"proxy": monitors.proxy, "upstream": monitors.upstream}
    feed = EventsFeed(
        app[EVENTS_HUB], lambda: state.config, state.router, state.profiles, app[INFLIGHT], logs
    )
    app[EVENTS_FEED] = feed

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        feed.start()
        try:
            yield
        finally:
            await feed.aclose()

    async def on_shutdown(app: web.Application) -> None:
        feed.close_streams()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return feed
