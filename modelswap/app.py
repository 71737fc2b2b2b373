"""Composition root: Config → processes → router → aiohttp app. The only place that wires parts.

The router is built with the app (construction has no side effects) and lives
in ``app[ROUTER_KEY]``; the HTTP layer's shared state (router, peers, active
profile, selector reservations) is one :class:`ServerState` per app.

Middleware order (outermost first): access log → CORS → auth → errors. The
access log sees every request, including refused ones; CORS answers
preflights before auth; errors is innermost so auth's 401 and every handler
error get the same envelope. Its lifetime is one ``cleanup_ctx``
entry: on startup its loop starts and the startup preloads begin (router spec
§7.1); on cleanup — after aiohttp has stopped accepting and drained HTTP — it
shuts down, stopping every upstream before the process exits (§3.12).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web

from modelswap.config import Config, LoadedConfig
from modelswap.observability.captures import CAPTURES, CaptureRing
from modelswap.observability.events_hub import EVENTS_HUB, EventsHub
from modelswap.observability.inflight import INFLIGHT, InflightTracker
from modelswap.observability.log_monitors import setup_log_monitors
from modelswap.ollama.routes import OLLAMA_INFERENCE_PATHS
from modelswap.process.memory_source import MemorySourceOpener, open_memory_source
from modelswap.router.build import build_router
from modelswap.router.runtime import LocalRouter
from modelswap.server.access_log import AccessLog
from modelswap.server.activity_api import setup_activity_store
from modelswap.server.auth import auth_middleware
from modelswap.server.context import SERVER_STATE, ServerState, setup_peers
from modelswap.server.cors import cors_middleware
from modelswap.server.errors import error_middleware
from modelswap.server.events import setup_events
from modelswap.server.footprints_setup import setup_footprints
from modelswap.server.inference import OBSERVED_INFERENCE_PATHS
from modelswap.server.metrics_routes import setup_metrics
from modelswap.server.proxy import setup_upstream_client
from modelswap.server.recording import recording_middleware, setup_recording
from modelswap.server.reload import RELOADER, ConfigSource, setup_reload
from modelswap.server.routes import add_routes

log = logging.getLogger("modelswap")

CAPTURE_KEEP_MIN = 1024 * 1024
"""Response bytes kept whole per request for usage parsing, even with captures off."""
HTTP_SHUTDOWN_BUDGET = 30.0
"""Seconds from the signal for draining HTTP and then stopping the upstreams (§3.12)."""
MIN_ROUTER_GRACE = 0.001
"""The routers always get at least this much of the budget as stop grace."""


class ShutdownBudget:
    """The application's shutdown deadline, shared by the HTTP drain and the router.

    llama-swap drains HTTP for up to 30 s, then shuts its routers down with
    what is left of that deadline (at least 1 ms) as the upstreams' grace.
    Without a started budget (an app torn down by tests) the router uses its
    own default (``healthCheckTimeout``).
    """

    def __init__(self) -> None:
        self._deadline: float | None = None

    def start(self, seconds: float = HTTP_SHUTDOWN_BUDGET) -> None:
        self._deadline = asyncio.get_running_loop().time() + seconds

    def remaining(self) -> float:
        if self._deadline is None:
            return 0.0
        return max(MIN_ROUTER_GRACE, self._deadline - asyncio.get_running_loop().time())


CONFIG_KEY: web.AppKey[Config] = web.AppKey("config", Config)
ROUTER_KEY: web.AppKey[LocalRouter] = web.AppKey("router", LocalRouter)
SHUTDOWN_BUDGET_KEY: web.AppKey[ShutdownBudget] = web.AppKey("shutdown_budget", ShutdownBudget)
ACCESS_LOG_KEY: web.AppKey[AccessLog] = web.AppKey("access_log", AccessLog)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How to listen: address and optional TLS files (both or neither)."""

    host: str | None
    port: int
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


def build_app(
    config: Config,
    *,
    base_env: Mapping[str, str] | None = None,
    source: ConfigSource | None = None,
    watch: bool = False,
    memory_opener: MemorySourceOpener = open_memory_source,
) -> web.Application:
    """Assemble the aiohttp application for one config.

    ``base_env`` is the environment upstream children inherit (default: ours).
    ``source`` is where ``config`` was read from: reloads read it again (without
    it there is nothing to reload); ``watch`` polls it for edits
    (``--watch-config``).
    ``memory_opener`` gives the memory measurements (psutil + NVML) — only
    opened when the config declares resources; tests inject a fake.
    """
    access_log = AccessLog()
    app = web.Application(
        middlewares=[
            access_log.middleware,
            cors_middleware,
            auth_middleware(lambda: app[SERVER_STATE].config.api_keys),
            recording_middleware(OBSERVED_INFERENCE_PATHS | OLLAMA_INFERENCE_PATHS),
            error_middleware,
        ]
    )
    app[CONFIG_KEY] = config
    app[ACCESS_LOG_KEY] = access_log
    # /api/events (§14), in-flight tracking (§15), captures (§18): made first, so
    # every later part can publish to them.
    events_hub = EventsHub()
    app[EVENTS_HUB] = events_hub
    app[INFLIGHT] = InflightTracker(events_hub, defer=events_hub.before_send)
    app[CAPTURES] = CaptureRing.from_mib(config.capture_buffer)
    # First cleanup context: the log handler outlives the router's shutdown lines.
    monitors = setup_log_monitors(app, config)
    # Early cleanup context: the activity store closes after every part that writes to it.
    setup_activity_store(app, config, has_capture=app[CAPTURES].has)
    memory = memory_opener() if config.routing.memory else None
    try:
        # Read once: every reload reuses it as the default budget (server/reload.py).
        detected = memory.detected() if memory is not None else None
        router = build_router(
            config,
            base_env=base_env,
            upstream_sink=monitors.upstream.write,
            detected_resources=detected,
        )
    except BaseException:
        if memory is not None:
            memory.close()
        raise
    app[ROUTER_KEY] = router
    setup_metrics(app, config, router)
    budget = ShutdownBudget()
    app[SHUTDOWN_BUDGET_KEY] = budget
    state = ServerState.build(config, router)
    app[SERVER_STATE] = state
    setup_events(app)
    # Before the router's context: the recorder closes after the last request ended.
    setup_recording(app, keep_limit=max(CAPTURE_KEEP_MIN, config.capture_buffer * 1024 * 1024))
    add_routes(app, state)
    # Cleanup unwinds in reverse: router first, then peers, then the client pools.
    setup_upstream_client(app)
    setup_peers(app, budget.remaining)
    app.cleanup_ctx.append(_router_lifecycle)
    # After the router's context, so both end before the router does (contexts
    # unwind in reverse): the footprint watcher, then the config watcher and any
    # reload still running (registered last: they end first).
    if memory is not None:
        setup_footprints(app, router, memory)
    setup_reload(
        app, source, watch=watch, detected_resources=detected, measuring=memory is not None
    )
    return app


async def _router_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Start the router and its preloads; on cleanup stop every upstream."""
    router = app[ROUTER_KEY]
    router.start()
    preload = app[CONFIG_KEY].hooks.on_startup.preload
    if preload:
        router.preload(preload)
    try:
        yield
    finally:
        if router.statistics().shutting_down:  # already shut down by someone else
            await router.wait_closed()
        else:
            await router.shutdown(app[SHUTDOWN_BUDGET_KEY].remaining())


def _ssl_context(options: ServeOptions) -> ssl.SSLContext | None:
    if not options.tls_cert_file or not options.tls_key_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert_file, options.tls_key_file)
    return context


def _bound_url(runner: web.AppRunner, public_url: str) -> str:
    """The URL with the port actually bound (``--listen 127.0.0.1:0`` picks a free one)."""
    scheme, _, rest = public_url.partition("://")
    host = rest.rpartition(":")[0]
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{scheme}://{host}:{address[1]}"
    return public_url


async def run_server(
    loaded: LoadedConfig,
    options: ServeOptions,
    public_url: str,
    *,
    source: ConfigSource | None = None,
    watch: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully and return the exit code.

    SIGHUP reloads the config from ``source`` (as ``POST /api/config/reload``).
    Shutdown order: stop listening, drain HTTP (within the 30 s budget), then
    the router stops every upstream with what is left of the budget.
    """
    if source is not None:  # reloads keep the ${PORT}s this load gave unchanged models
        source = dataclasses.replace(source, ports=loaded.ports)
    app = build_app(loaded.config, source=source, watch=watch)
    # handler_cancellation: a client disconnect cancels its handler, which
    # aborts the upstream request at once (see modelswap.server.proxy).
    # auto_decompress off: request bodies reach the upstream as the client
    # sent them, with their Content-Encoding (as llama-swap's Go server does);
    # decoded bytes under the original header would be unreadable upstream.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=HTTP_SHUTDOWN_BUDGET,
        handler_cancellation=True,
        auto_decompress=False,
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host=options.host, port=options.port, ssl_context=_ssl_context(options)
    )
    try:
        await site.start()
    except OSError as error:
        log.error("cannot listen on %s: %s", public_url, error)
        await runner.cleanup()
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloader = app[RELOADER]
    loop.add_signal_handler(signal.SIGHUP, lambda: reloader.start("signal"))

    model_ids = ", ".join(sorted(loaded.config.models)) or "(none)"
    print(f"models: {model_ids}", flush=True)
    print(f"modelswap listening on {_bound_url(runner, public_url)}", flush=True)
    await stop.wait()
    log.info("shutting down")
    app[SHUTDOWN_BUDGET_KEY].start()
    await runner.cleanup()
    return 0
