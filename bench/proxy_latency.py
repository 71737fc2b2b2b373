"""Added latency of the streaming forwarder: proxied vs direct, one connection.

Run: ``python3 bench/proxy_latency.py [--requests 1000] [--warmup 200]``

A fake upstream (a real child process) answers small non-streaming chat
completions. Two more children proxy to it (uvloop, handler cancellation on):

* ``modelswap`` — the forwarding pipeline as the server glue will wire it:
  access log, CORS, auth (one API key), errors, model extraction, filters,
  the streaming forward;
* ``bare`` — the baseline: the smallest aiohttp-server + aiohttp-client
  proxy (read body, post it, return the whole answer), the configuration
  design.md §6 measured.

The client (this process) sends ``--requests`` sequential requests to each
over one keep-alive connection, in interleaved blocks of 100 so drift (CPU
frequency, other load) hits all alike. Reported: p50/p90/p99 of each and the
p50 added over direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from modelswap.config import load_config_text  # noqa: E402
from modelswap.testing.fake_process import (  # noqa: E402
    FakeUpstreamProcess,
    fake_upstream_env,
    free_port,
)

KEY = "bench-key"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def build_proxy_app(upstream_url: str) -> web.Application:
    """The inference pipeline, wired directly to one upstream (no router)."""
    from modelswap.server.access_log import AccessLog
    from modelswap.server.auth import auth_middleware
    from modelswap.server.cors import cors_middleware
    from modelswap.server.errors import error_middleware
    from modelswap.server.extract import read_model_request
    from modelswap.server.filters import apply_filters, filter_plan
    from modelswap.server.proxy import UPSTREAM_CLIENT, Target, join_url, setup_upstream_client

    config = load_config_text(
        json.dumps(
            {
                "apiKeys": [KEY],
                "models": {"bench": {"cmd": "fake --port ${PORT}", "proxy": upstream_url}},
            }
        )
    ).config
    access = AccessLog()
    app = web.Application(
        middlewares=[
            access.middleware,
            cors_middleware,
            auth_middleware(config.api_keys),
            error_middleware,
        ]
    )
    setup_upstream_client(app)

    async def inference(request: web.Request) -> web.StreamResponse:
        model_request = await read_model_request(request)
        name = model_request.require_model()
        model_id = config.resolve_model_id(name)
        assert model_id is not None
        filtered = apply_filters(model_request, filter_plan(config, name))
        model = config.models[model_id]
        target = Target(
            join_url(model.proxy, request.rel_url.raw_path, filtered.query_string),
            model_id,
            model.timeouts,
        )
        return await request.app[UPSTREAM_CLIENT].forward(request, target, filtered.data)

    app.router.add_post("/v1/chat/completions", inference)
    return app


def build_bare_app(upstream_url: str) -> web.Application:
    """The baseline: the smallest aiohttp-server + aiohttp-client proxy (design §6)."""
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession()

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "")}
        url = upstream_url + request.rel_url.raw_path
        async with request.app["session"].post(url, data=body, headers=headers) as upstream:
            payload = await upstream.read()
            return web.Response(status=upstream.status, body=payload, headers={
                "Content-Type": upstream.headers.get("Content-Type", "")})  # fmt: skip

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/chat/completions", forward)
    return app


def serve_proxy(port: int, upstream_url: str, mode: str) -> None:
    """Child mode: run the proxy (uvloop when available) until killed."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    build = build_proxy_app if mode == "modelswap" else build_bare_app
    web.run_app(
        build(upstream_url),
        host="127.0.0.1",
        port=port,
        access_log=None,
        handler_cancellation=True,
        print=lambda *_: print("proxy listening", flush=True),
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def describe(name: str, seconds: list[float]) -> str:
    us = [s * 1e6 for s in seconds]
    return (
        f"{name:9s} p50 {statistics.median(us):7.0f} µs  p90 {percentile(us, 90):7.0f} µs  "
        f"p99 {percentile(us, 99):7.0f} µs  (n={len(us)})"
    )


async def one(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(url, json=BODY, headers={"Authorization": f"Bearer {KEY}"}) as r:
        await r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - started


async def measure(urls: dict[str, str], requests: int, warmup: int) -> dict[str, list[float]]:
    """Sequential requests per target over one connection each, in interleaved blocks."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    connector = aiohttp.TCPConnector
    sessions = {name: aiohttp.ClientSession(connector=connector(limit=1)) for name in urls}
    try:
        for name, url in urls.items():
            for _ in range(warmup):
                await one(sessions[name], url)
        block = 100
        while any(len(v) < requests for v in samples.values()):
            for name, url in urls.items():
                for _ in range(min(block, requests - len(samples[name]))):
                    samples[name].append(await one(sessions[name], url))
    finally:
        for session in sessions.values():
            await session.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--serve-proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        serve_proxy(int(args.serve_proxy[0]), args.serve_proxy[1], args.serve_proxy[2])
        return 0
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}")
    children: list[subprocess.Popen[bytes]] = []
    with FakeUpstreamProcess("bench") as fake:
        urls = {"direct": f"{fake.url}/v1/chat/completions"}
        try:
            for mode in ("bare", "modelswap"):
                port = free_port()
                children.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--serve-proxy", str(port), fake.url, mode],
                        env=fake_upstream_env(),
                        stdout=subprocess.DEVNULL,
                    )
                )
                asyncio.run(wait_listening(f"http://127.0.0.1:{port}"))
                urls[mode] = f"http://127.0.0.1:{port}/v1/chat/completions"
            samples = asyncio.run(measure(urls, args.requests, args.warmup))
        finally:
            for child in children:
                child.kill()
                child.wait()
    for name, values in samples.items():
        print(describe(name, values))
    direct = statistics.median(samples["direct"])
    for name in ("bare", "modelswap"):
        added = (statistics.median(samples[name]) - direct) * 1e6
        print(f"added p50 latency, {name}: {added:.0f} µs")
    return 0


async def wait_listening(url: str) -> None:
    """The proxy has no /health route; any HTTP answer means it is listening."""
    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/"):
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.01)


if __name__ == "__main__":
    sys.exit(main())
