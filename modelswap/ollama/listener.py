"""Ollama's API on the main listener (``/ollama``) and, if configured, a listener of its own.

Clients that cannot be given a path prefix expect Ollama at its plain paths
on a port of its own (``127.0.0.1:11434``). With ``ollama.listen`` set, the
app starts a second aiohttp runner there, serving a small app with only the
Ollama routes at their plain paths. It shares everything with the main app —
the same middlewares (access log, CORS, auth, recording, errors), the same
:class:`~modelswap.server.context.ServerState` (router, upstream client) and
recording sinks — so a request on either listener is the same request.

Lifetime: started in the main app's ``on_startup`` (after its cleanup
contexts set up the client and router), stopped in its ``on_shutdown``,
which aiohttp runs before draining the main listener and stopping the router.
A port that cannot be bound is logged as an error; the main listener serves on.
"""

from __future__ import annotations

import logging

from aiohttp import web

from modelswap.config import Config
from modelswap.config.validate_ollama import ListenAddress, parse_listen_address
from modelswap.ollama.routes import PREFIX, add_ollama_routes
from modelswap.server.context import SERVER_STATE
from modelswap.server.recording import RECORDING

log = logging.getLogger("modelswap.ollama")

SHUTDOWN_TIMEOUT = 30.0
OLLAMA_RUNNER: web.AppKey[web.AppRunner] = web.AppKey("ollama_runner", web.AppRunner)


def add_ollama_api(app: web.Application, config: Config) -> None:
    """The ``/ollama`` routes on ``app``, and the own listener when configured."""
    add_ollama_routes(app, PREFIX)
    address = parse_listen_address(config.ollama.listen) if config.ollama.listen else None
    if isinstance(address, ListenAddress):
        listen = address

        async def start(app: web.Application) -> None:
            await _start_listener(app, listen)

        app.on_startup.append(start)
        app.on_shutdown.append(_stop_listener)


def build_listener_app(main: web.Application) -> web.Application:
    """An app with only the Ollama routes at plain paths, sharing ``main``'s state."""
    app = web.Application(middlewares=list(main.middlewares))
    app[SERVER_STATE] = main[SERVER_STATE]
    if RECORDING in main:
        app[RECORDING] = main[RECORDING]
    add_ollama_routes(app, "")
    return app


async def _start_listener(main: web.Application, address: ListenAddress) -> None:
    runner = web.AppRunner(
        build_listener_app(main),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        handler_cancellation=True,  # a client leaving aborts the upstream request
        auto_decompress=False,
    )
    await runner.setup()
    host = address.host or "0.0.0.0"
    try:
        await web.TCPSite(runner, host=address.host, port=address.port).start()
    except OSError as error:
        log.error("cannot listen for the Ollama API on %s:%s: %s", host, address.port, error)
        await runner.cleanup()
        return
    main[OLLAMA_RUNNER] = runner
    shown = f"[{host}]" if ":" in host else host
    print(f"ollama API listening on http://{shown}:{address.port}", flush=True)


async def _stop_listener(main: web.Application) -> None:
    runner = main.get(OLLAMA_RUNNER)
    if runner is not None:
        await runner.cleanup()
