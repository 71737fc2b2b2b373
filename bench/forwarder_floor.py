"""The floor of a hand-written Python forwarder (uvloop + httptools), for issue 13 item 4.

Run: ``python3 bench/forwarder_floor.py [--quick]``.

Why: the proxy's goal (≤ +150 µs p50 at c=1, ≥ 8,000 req/s at c=50 on 2
cores) asks whether a lower-level forwarder than aiohttp's server + client
would get there. Before building one that keeps every behaviour, this
measures the best such a forwarder can do on this machine: a server protocol
parsing requests with httptools (llhttp), reading the ``model`` out of the
JSON body (the one piece of real work every request needs), forwarding over
kept-alive upstream connections parsed with httptools too, and relaying the
response — no auth, no router, no logging, no recording. Whatever modelswap
adds on top of this can only cost more, so if the floor misses the goal, the
goal is out of reach for this design on this machine.

Measured in the same run as the upstream direct, nginx (when installed) and
modelswap itself, with the same wrk load as ``bench/proxy_overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httptools
from loadgen import CHAT_BODY, LoadResult, ModelswapProcess, Report
from proxy_overhead import PATH, WRK_SCRIPT, _warm, nginx_conf, run_wrk, wait_port, write_config

from modelswap.testing.fake_process import free_port


class _Upstream(asyncio.Protocol):
    """One kept-alive upstream connection: send a request, collect one response."""

    def __init__(self, pool: deque[_Upstream]) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._done: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def request(self, data: bytes) -> asyncio.Future[bytes]:
        self._done = asyncio.get_running_loop().create_future()
        self._chunks = []
        assert self.transport is not None
        self.transport.write(data)
        return self._done

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._parser.feed_data(data)

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(b"".join(self._chunks))
            self._pool.append(self)


class _Client(asyncio.Protocol):
    """One client connection: parse a request, forward it, write the response back."""

    def __init__(self, upstream_port: int, pool: deque[_Upstream]) -> None:
        self._port = upstream_port
        self._pool = pool
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[bytes] = []
        self._body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self._task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in (b"host", b"connection", b"content-length"):
            self._headers.append(name + b": " + value + b"\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        json.loads(body)["model"]  # the one piece of real work: which model?
        head = b"POST " + self._url + b" HTTP/1.1\r\nHost: upstream\r\n"
        data = head + b"".join(self._headers) + b"Content-Length: %d\r\n\r\n" % len(body) + body
        self._headers, self._body = [], []
        self._task = asyncio.ensure_future(self._forward(data))  # one at a time per connection

    async def _forward(self, data: bytes) -> None:
        if self._pool:
            upstream = self._pool.popleft()
        else:
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(
                lambda: _Upstream(self._pool), "127.0.0.1", self._port
            )
        response = await upstream.request(data)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


def serve(listen_port: int, upstream_port: int) -> None:
    """Run the floor forwarder until SIGTERM (in its own process)."""
    import uvloop

    async def main() -> None:
        pool: deque[_Upstream] = deque()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Client(upstream_port, pool), "127.0.0.1", listen_port
        )
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        async with server:
            await stop

    uvloop.run(main())


def run(quick: bool = False) -> Report:
    duration = 2.0 if quick else 6.0
    if shutil.which("wrk") is None:
        return Report("Forwarder floor", ["wrk not installed: skipped."], [], [])
    results: dict[tuple[str, int], LoadResult] = {}
    with tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(CHAT_BODY)))
        upstream_port, floor_port = free_port(), free_port()
        procs: list[subprocess.Popen[bytes]] = []
        with contextlib.ExitStack() as stack:
            ms = stack.enter_context(ModelswapProcess(write_config(tmp, upstream_port)))
            targets = {
                "direct": f"http://127.0.0.1:{upstream_port}{PATH}",
                "modelswap": f"{ms.url}{PATH}",
                "floor forwarder": f"http://127.0.0.1:{floor_port}{PATH}",
            }
            asyncio.run(_warm(targets["modelswap"]))
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve", str(floor_port), str(upstream_port)],
                    start_new_session=True,
                )
            )
            wait_port(floor_port)
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            if os.path.exists(nginx):
                port = free_port()
                conf = nginx_conf(tmp, port, upstream_port)
                procs.append(
                    subprocess.Popen(
                        [
                            nginx,
                            "-p",
                            str(tmp),
                            "-e",
                            str(tmp / "nginx-error.log"),
                            "-c",
                            str(conf),
                            "-g",
                            "daemon off;",
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                wait_port(port)
                targets["nginx"] = f"http://127.0.0.1:{port}{PATH}"
            try:
                for name in targets:
                    asyncio.run(_warm(targets[name]))
                for conns in (1, 50):
                    for name, url in targets.items():
                        r = run_wrk(url, conns, duration, script)
                        results[name, conns] = r
                        print(
                            f"  {name:15s} c={conns:<3d} {r.rps:8.0f} req/s  "
                            f"p50 {r.p50 * 1e6:7.0f} µs  errors {r.errors}",
                            flush=True,
                        )
            finally:
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait()
    md = [
        f"wrk, small non-streaming `POST {PATH}`, {duration:g} s per cell, one shared fake "
        "upstream; the floor forwarder is `bench/forwarder_floor.py` (uvloop + httptools, "
        "model read from the JSON body, kept-alive upstream connections, nothing else).",
        "",
        "| target | conns | req/s | p50 | added p50 vs direct |",
        "|---|---|---|---|---|",
    ]
    for (name, conns), r in results.items():
        direct = results["direct", conns]
        added = "—" if name == "direct" else f"{(r.p50 - direct.p50) * 1e6:+.0f} µs"
        md.append(f"| {name} | {conns} | {r.rps:,.0f} | {r.p50 * 1e6:.0f} µs | {added} |")
    return Report("Forwarder floor (`bench/forwarder_floor.py`)", md, [], [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("LISTEN", "UPSTREAM"))
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    print("\n".join(run(args.quick).markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
