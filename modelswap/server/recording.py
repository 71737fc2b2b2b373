"""The metrics middleware (server spec §16): observe a proxied request, record it after it ends.

Every request on a proxied route (inference routes, ``/upstream/…``,
``/comfyui/…``) gets an :class:`Observation` under :data:`OBSERVATION`.
Handlers and the forwarder fill it in as the request travels — the model and
the path sent upstream (dispatch), the router ticket (its arrival, grant and
the swap it waited for), the upstream's response headers (time to first
byte) and the body bytes relayed (a tee) — and leave everything else alone.

When the response has ended (also when the client left), the middleware
turns the observation into one :class:`~modelswap.observability.records.RequestRecord`
and hands it to the :class:`~modelswap.observability.recorder.Recorder`, which
parses tokens, stores the activity row and capture, and feeds ``/api/events``
and Prometheus *off the request path*. The request path itself only sets a
few attributes, appends body chunks to a list, and adds one header:

* ``Server-Timing`` on every proxied response whose headers we write after
  the grant: ``queue``, ``evict``/``load`` (when it waited for a swap) and
  ``ttfb`` (see :meth:`~modelswap.observability.records.Explain.server_timing`).
  A loading stream's headers leave before the grant, so it has none.

Which requests become activity rows (§16): POST requests whose model could be
resolved, on inference routes and on ``/upstream`` when the path after the
model is an inference route. In-flight tracking (§15) also covers the GET
inference routes. Everything else is only timed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from modelswap.observability.records import Explain, RequestRecord, build_explain
from modelswap.server.access_log import client_ip

if TYPE_CHECKING:
    from modelswap.observability.inflight import InflightTracker
    from modelswap.observability.recorder import Recorder
    from modelswap.router.ticket import LocalTicket

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OBSERVED_PREFIXES = ("/upstream/", "/comfyui/")

TAIL_BYTES = 64 * 1024
"""Of a body too large to keep whole, the last bytes kept for usage parsing."""


class Observation:
    """What one proxied request leaves along its path (filled in by its handlers)."""

    __slots__ = (
        "_chunks",
        "_inflight",
        "_inflight_id",
        "_keep_limit",
        "_kept",
        "_tail",
        "headers_at",
        "metadata",
        "model",
        "recordable",
        "req_body",
        "req_path",
        "resp_headers",
        "resp_status",
        "started",
        "started_wall",
        "ticket",
    )

    def __init__(self, keep_limit: int, inflight: InflightTracker | None) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.model = ""
        """Real model name (peers: the requested name); empty until dispatch resolves it."""
        self.req_path = ""
        """The path sent upstream (prefix-stripped, or the ``/upstream`` rest)."""
        self.recordable = False
        """Set by dispatch when the route is an inference route (§16)."""
        self.ticket: LocalTicket | None = None
        self.headers_at: float | None = None
        self.resp_headers: Mapping[str, str] | None = None
        self.resp_status = 0
        self.req_body: bytes | None = None
        self.metadata: dict[str, str] = {}
        self._keep_limit = keep_limit
        self._chunks: list[bytes] | None = []
        self._kept = 0
        self._tail: deque[bytes] | None = None
        self._inflight = inflight
        self._inflight_id = 0

    # --- filled in along the path ---------------------------------------------------

    def dispatched(
        self,
        request: web.BaseRequest,
        model: str,
        req_path: str,
        body: bytes | None,
        inference: bool,
    ) -> None:
        """Dispatch resolved the model: from here on the request is tracked (§15)."""
        self.model = model
        self.req_path = req_path
        self.req_body = body
        self.recordable = inference and request.method == "POST"
        if inference and self._inflight is not None and not self._inflight_id:
            self._inflight_id = self._inflight.begin(
                model,
                request.method,
                req_path,
                request.headers,
                _remote_ip(request),
                self.metadata,
                _canceller(asyncio.current_task()),
            )

    def response_headers(
        self, status: int, headers: CIMultiDict[str], at: float | None = None
    ) -> None:
        """The upstream's headers arrived (at ``at``, default now): add ``Server-Timing``."""
        self.headers_at = time.monotonic() if at is None else at
        self.resp_status = status
        self.resp_headers = headers
        explain = self.explain()
        if explain is not None:
            headers["Server-Timing"] = explain.server_timing()
        if self._inflight_id and self._inflight is not None:
            self._inflight.response_started(self._inflight_id, headers)

    def tee(self, chunk: bytes) -> None:
        """Keep a relayed body chunk (whole up to the limit, then only the tail)."""
        if self._inflight_id and self._inflight is not None:
            self._inflight.add_bytes(self._inflight_id, len(chunk))
        chunks = self._chunks
        if chunks is not None:
            self._kept += len(chunk)
            if self._kept <= self._keep_limit:
                chunks.append(chunk)
                return
            # Too large to keep whole: from now on keep only the last TAIL_BYTES.
            self._tail = deque(chunks)
            self._kept -= len(chunk)
            self._chunks = None
        tail = self._tail
        assert tail is not None
        tail.append(chunk)
        self._kept += len(chunk)
        while len(tail) > 1 and self._kept - len(tail[0]) >= TAIL_BYTES:
            self._kept -= len(tail.popleft())

    # --- derived ----------------------------------------------------------------------

    def explain(self, ended: float | None = None) -> Explain | None:
        ticket = self.ticket
        if ticket is None or ticket.granted_at is None:
            return None
        return build_explain(ticket.arrived, ticket.granted_at, ticket.swap, self.headers_at, ended)

    def record(
        self, request: web.BaseRequest, response: web.StreamResponse | None, status: int
    ) -> RequestRecord:
        """The finished request as plain data (called once, after the response ended)."""
        ended = time.monotonic()
        resp_body: bytes | None
        tail = b""
        if self._chunks is not None:
            resp_body = b"".join(self._chunks)
            if not resp_body and isinstance(response, web.Response) and response.body:
                resp_body = bytes(response.body)  # type: ignore[arg-type]  # our own envelope
        else:
            resp_body = None
            tail = b"".join(self._tail or ())
        headers: Mapping[str, str] = self.resp_headers or (
            response.headers if response is not None else {}
        )
        ticket = self.ticket
        granted_wall = None
        if ticket is not None and ticket.granted_at is not None:
            granted_wall = self.started_wall + (ticket.granted_at - self.started)
        return RequestRecord(
            request_id=self._inflight_id,
            model=self.model,
            method=request.method,
            req_path=self.req_path or request.path,
            started_wall=self.started_wall,
            ended_wall=self.started_wall + (ended - self.started),
            duration_ms=(ended - self.started) * 1000.0,
            status=status,
            resp_content_type=headers.get("Content-Type", ""),
            req_headers=request.headers,
            req_body=self.req_body,
            resp_headers=headers,
            resp_body=resp_body,
            resp_tail=tail,
            metadata=self.metadata,
            explain=self.explain(ended),
            client_aborted=status == 499,
            granted_wall=granted_wall,
            swap_id=ticket.swap.swap_id if ticket is not None and ticket.swap is not None else None,
        )

    def end_inflight(self) -> None:
        if self._inflight_id and self._inflight is not None:
            self._inflight.end(self._inflight_id)


CANCELLED_BY_API = "cancelled by POST /api/inflight/<id>/cancel"
"""The cancellation message the in-flight API's cancel carries, so a relay can tell it
from a disconnect or shutdown and end an SSE stream already under way cleanly."""


def _canceller(task: asyncio.Task[object] | None) -> Callable[[], None]:
    """``POST /api/inflight/<id>/cancel`` cancels the handler's task (aborting upstream)."""

    def cancel() -> None:
        if task is not None:
            task.cancel(CANCELLED_BY_API)

    return cancel


def _remote_ip(request: web.BaseRequest) -> str:
    return client_ip(request.headers, request.remote)


OBSERVATION: web.RequestKey[Observation] = web.RequestKey("observation", Observation)


def observation(request: web.BaseRequest) -> Observation | None:
    """The request's observation, if its route is observed."""
    return request.get(OBSERVATION)


def is_observed_path(path: str, inference_paths: frozenset[str]) -> bool:
    return path in inference_paths or path.startswith(OBSERVED_PREFIXES)


@dataclass(slots=True)
class RecordingSinks:
    """Where observations go: the recorder (activity rows) and in-flight tracking.

    Made with the app; the recorder is attached when the app starts (its thread
    needs the running loop) and detached when it stops.
    """

    recorder: Recorder | None
    inflight: InflightTracker | None
    keep_limit: int = 1024 * 1024
    """Response bytes kept whole per request (for usage parsing and captures)."""


RECORDING: web.AppKey[RecordingSinks] = web.AppKey("recording", RecordingSinks)


def recording_middleware(inference_paths: frozenset[str]) -> Middleware:
    """The middleware: place it just outside the error middleware, so it sees envelopes.

    Its sinks are ``app[RECORDING]`` (absent: requests are only timed).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_observed_path(request.path, inference_paths):
            return await handler(request)
        sinks = request.app.get(RECORDING)
        seen = Observation(sinks.keep_limit if sinks else 0, sinks.inflight if sinks else None)
        request[OBSERVATION] = seen
        response: web.StreamResponse | None = None
        status = 200
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        except asyncio.CancelledError:
            status = 499
            raise
        finally:
            seen.end_inflight()
            sink = sinks.recorder if sinks is not None and seen.recordable and seen.model else None
            if sink is not None:
                if status == 499 and seen.resp_status:
                    status = seen.resp_status  # the client left mid-body: what it was sent
                sink.submit(seen.record(request, response, status))

    return middleware


def setup_recording(app: web.Application, keep_limit: int) -> None:
    """Wire the recorder and the router's facts; call after every sink is in the app.

    On startup: the :class:`~modelswap.observability.recorder.Recorder` starts
    with the activity store, the capture ring and Prometheus as its sinks;
    stored rows are published as ``activity`` events; load estimates are seeded
    from the store's load history; the router's facts feed the estimates, the
    ``loadProgress`` events and the store's load history; process state
    changes, facts and stored rows also feed the swap timeline
    (``app[TIMELINE]``, :mod:`modelswap.server.timeline_api`). Register it before
    the router's own cleanup context, so it closes after the router stopped
    (the last requests' rows are still written) and before the store closes.
    """
    # Imported here: these modules import the server's building blocks themselves.
    from modelswap.observability.captures import CAPTURES
    from modelswap.observability.events_hub import EVENTS_HUB
    from modelswap.observability.inflight import INFLIGHT
    from modelswap.observability.load_eta import LoadEstimates, LoadProgress
    from modelswap.observability.recorder import Recorder
    from modelswap.observability.row_backlog import RowBacklog
    from modelswap.router.facts import RouterFact, SwapFinished
    from modelswap.server.activity_api import ACTIVITY_STORE
    from modelswap.server.context import SERVER_STATE
    from modelswap.server.metrics_routes import METRICS
    from modelswap.server.timeline_api import TIMELINE, attach_timeline, new_timeline

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store, hub, state = app[ACTIVITY_STORE], app[EVENTS_HUB], app[SERVER_STATE]
        captures = app[CAPTURES]

        def publish_rows(stored: Sequence[tuple[int, RequestRecord]]) -> None:
            timeline.on_stored(stored)
            if not hub.has_subscribers:
                return
            if not hub.wants_metrics:  # ids only: the rows stay unmade until someone reads
                for row_id, _ in stored:
                    hub.publish_activity(row_id, None)
                return
            # In memory: each row's JSON straight from its record (row_backlog.live_rows);
            # the rest (a file store, a row a reader made meanwhile) from the store.
            rows = backlog.live_rows(stored) if backlog is not None else {}
            missing = [row_id for row_id, _ in stored if row_id not in rows]
            if missing:
                rows.update((row["id"], row) for row in store.entries(missing))
            for row_id, _ in stored:
                hub.publish_activity(row_id, rows.get(row_id))

        capture_sink = captures if captures.enabled else None
        backlog = None
        if store.max_rows is not None:  # in memory: rows made when read (row_backlog)
            backlog = RowBacklog(store, capture_sink, store.max_rows)
            store.set_before_read(backlog.make_rows)
            captures.set_before_read(backlog.make_rows)
        recorder = Recorder(
            store,
            captures=capture_sink,
            metrics=app[METRICS],
            on_stored=publish_rows,
            backlog=backlog,  # no disk to wait for: on the loop, the costly part when read
        )
        recorder.start()
        sinks.recorder = recorder
        estimates = LoadEstimates(await asyncio.to_thread(store.load_history))
        state.load_estimates = estimates
        progress = LoadProgress(estimates, hub.publish)

        def on_fact(fact: RouterFact) -> None:
            estimates.observe(fact)
            progress.observe(fact)
            if isinstance(fact, SwapFinished) and fact.error is None:
                recorder.submit_load(fact.model, fact.load_seconds, time.time())

        unsubscribe = state.router.subscribe_facts(on_fact)
        detach_timeline = attach_timeline(timeline, state.router)
        try:
            yield
        finally:
            detach_timeline()
            unsubscribe()
            await progress.close()
            await recorder.close()
            sinks.recorder = None

    sinks = RecordingSinks(None, app[INFLIGHT], keep_limit)
    app[RECORDING] = sinks
    timeline = app[TIMELINE] = new_timeline()
    app.cleanup_ctx.append(lifecycle)
