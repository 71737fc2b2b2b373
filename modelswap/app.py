"""Composition root: Config → (processes → router →) aiohttp app. The only place that wires parts.

Step 1 serves the config-only routes; later steps add the process supervisor and
the router here, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass

from aiohttp import web

from modelswap.config import Config, LoadedConfig
from modelswap.server.admin import add_admin_routes
from modelswap.server.errors import error_middleware

log = logging.getLogger("modelswap")

CONFIG_KEY: web.AppKey[Config] = web.AppKey("config", Config)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How to listen: address and optional TLS files (both or neither)."""

    host: str | None
    port: int
    tls_cert_file: str | None = None
    tls_key_file: str | None = None


def build_app(config: Config) -> web.Application:
    """Assemble the aiohttp application for one config."""
    app = web.Application(middlewares=[error_middleware])
    app[CONFIG_KEY] = config
    add_admin_routes(app, config)
    return app


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


async def run_server(loaded: LoadedConfig, options: ServeOptions, public_url: str) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully and return the exit code."""
    app = build_app(loaded.config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
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

    model_ids = ", ".join(sorted(loaded.config.models)) or "(none)"
    print(f"models: {model_ids}", flush=True)
    print(f"modelswap listening on {_bound_url(runner, public_url)}", flush=True)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0
