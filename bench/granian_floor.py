"""The floor of a proxy whose server core is granian, for issue 13 item 4.

Run: ``python3 bench/granian_floor.py [--quick] [--repeat N]`` (needs the
``bench`` extra: ``pip install -e .[bench]``, which brings granian).

Why: the issue's second option for a proxy twice as fast (≤ +150 µs added p50
at c=1, ≥ 8,000 req/s at c=50) is "a faster server core (e.g. granian)":
granian parses HTTP and owns the sockets in Rust and calls Python only for the
application. Before moving modelswap's handlers onto it, this measures the
best such a proxy can do: one granian worker running an application that does
the least a proxy must — read the body, find ``model`` in the JSON, forward
over kept-alive connections to the upstream, return the answer. No auth, no
router, no logging, no recording; whatever modelswap adds can only cost more.

Four such applications, each in its own granian worker (``--loop uvloop``
when uvloop is installed; the report names the loop the worker really ran):
granian's native interface RSGI and its ASGI, each with the upstream client
being modelswap's own lean client (:mod:`modelswap.server.fast_upstream`,
used standalone) or aiohttp's ``ClientSession``. Measured in the same run as
the upstream direct, nginx, ``bench/forwarder_floor.py``'s uvloop + httptools
floor and the real ``python -m modelswap``, with the same wrk load as
``bench/proxy_overhead.py``; ``--repeat`` rounds are interleaved so drift on
this shared machine hits every target alike, and the report gives each
cell's range.

The applications live in this file too: granian imports it (``granian_floor:
RSGI_APP`` / ``ASGI_APP``) in its worker, told the upstream port and the
client by environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

_HOP = frozenset({"host", "connection", "content-length", "transfer-encoding", "keep-alive"})
"""Headers the proxy does not copy: the connection's own, or recomputed by the sender."""
CLIENT_ENV = "GRANIAN_FLOOR_CLIENT"
UPSTREAM_ENV = "GRANIAN_FLOOR_UPSTREAM"


# --- the applications (run inside granian's worker) ----------------------------------


class _RawUpstream(asyncio.Protocol):
    """The least client there is: one kept-alive connection, one request at a time.

    As ``bench/forwarder_floor.py``'s, but handing back status, headers and body
    (granian writes the response itself): with it, what remains is granian's own
    cost and not the client's.
    """

    def __init__(self, pool: deque[_RawUpstream]) -> None:
        import httptools

        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._done: asyncio.Future[Any] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def request(self, data: bytes) -> asyncio.Future[Any]:
        self._done = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self._done

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        done, self._done = self._done, None
        answer = (self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = [], []
        self._pool.append(self)
        if done is not None and not done.done():
            done.set_result(answer)


class _Forward:
    """Forward one buffered request upstream; return status, headers and the body.

    ``fast``: modelswap's lean client (one write, llhttp, pooled connections);
    ``aiohttp``: a ``ClientSession`` with an unlimited keep-alive connector;
    ``httptools``: :class:`_RawUpstream`. Made on the first request, in the
    worker's running loop (aiohttp's session wants one).
    """

    def __init__(self) -> None:
        self.kind = os.environ.get(CLIENT_ENV, "fast")
        self.base = f"http://127.0.0.1:{int(os.environ[UPSTREAM_ENV])}"
        self.call: Callable[[str, dict[str, str], bytes], Awaitable[Any]] | None = None

    def _make(self) -> Callable[[str, dict[str, str], bytes], Awaitable[Any]]:
        if self.kind == "aiohttp":
            import aiohttp

            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
            )

            async def via_aiohttp(path: str, headers: dict[str, str], body: bytes) -> Any:
                async with session.post(self.base + path, data=body, headers=headers) as resp:
                    data = await resp.read()
                    return resp.status, resp.headers.items(), data

            return via_aiohttp
        if self.kind == "httptools":
            pool: deque[_RawUpstream] = deque()
            port = int(os.environ[UPSTREAM_ENV])

            async def via_httptools(path: str, headers: dict[str, str], body: bytes) -> Any:
                if pool:
                    upstream = pool.popleft()
                else:
                    loop = asyncio.get_running_loop()
                    _, upstream = await loop.create_connection(
                        lambda: _RawUpstream(pool), "127.0.0.1", port
                    )
                head = f"POST {path} HTTP/1.1\r\nHost: upstream\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in headers.items()
                )
                data = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
                return await upstream.request(data)

            return via_httptools
        from yarl import URL

        from modelswap.server.fast_upstream import FastUpstream

        client = FastUpstream()
        urls: dict[str, URL] = {}

        async def via_fast(path: str, headers: dict[str, str], body: bytes) -> Any:
            url = urls.get(path)
            if url is None:
                url = urls[path] = URL(self.base + path)
            resp = await client.request("POST", url, headers, body)
            data = await resp.read()
            resp.release()
            return resp.status, resp.headers.items(), data

        return via_fast

    async def __call__(self, path: str, headers: dict[str, str], body: bytes) -> Any:
        if self.call is None:
            self.call = self._make()
        json.loads(body)["model"]  # the one piece of real work: which model?
        return await self.call(path, headers, body)


def _announce(loop: object, kind: str) -> None:
    """One line on stderr: the harness reads which loop and client really ran."""
    cls = type(loop)
    print(f"granian-floor: loop={cls.__module__}.{cls.__qualname__} client={kind}", file=sys.stderr)
    sys.stderr.flush()


class RSGIFloor:
    """granian's native interface: headers as a Rust mapping, the body in one call."""

    def __init__(self) -> None:
        self.forward: _Forward | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.forward = _Forward()
        _announce(loop, self.forward.kind)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        assert self.forward is not None
        body = await proto()
        headers = {k: v for k, v in scope.headers.items() if k not in _HOP}
        status, head, data = await self.forward(scope.path, headers, body)
        out = [(k, v) for k, v in head if k.lower() not in _HOP]
        proto.response_bytes(status, out, data)


Message = MutableMapping[str, Any]


class ASGIFloor:
    """The ASGI interface: the same work through ASGI's message dictionaries."""

    def __init__(self) -> None:
        self.forward: _Forward | None = None

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.forward = _Forward()
                    _announce(asyncio.get_running_loop(), self.forward.kind)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.forward is not None
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body"):
            message = await receive()
            body += message.get("body", b"")
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() not in _HOP}
        status, head, data = await self.forward(scope["path"], headers, body)
        out = [(k.encode(), v.encode()) for k, v in head if k.lower() not in _HOP]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})


RSGI_APP = RSGIFloor()
ASGI_APP = ASGIFloor()


# --- the harness ---------------------------------------------------------------------

GRANIAN_TARGETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "granian RSGI + fast_upstream": ("rsgi", "fast", ()),
    "granian RSGI + fast_upstream, mt": ("rsgi", "fast", ("--runtime-mode", "mt")),
    "granian RSGI + raw httptools": ("rsgi", "httptools", ()),
    "granian RSGI + aiohttp client": ("rsgi", "aiohttp", ()),
    "granian ASGI + fast_upstream": ("asgi", "fast", ()),
    "granian ASGI + aiohttp client": ("asgi", "aiohttp", ()),
}
"""name -> (interface, upstream client, extra granian options).

granian's default runtime is single-threaded ("st") for RSGI and
multi-threaded ("mt") for ASGI; ", mt" is RSGI on the multi-threaded one, so
both interfaces are also seen on the same runtime.
"""


def granian_argv(interface: str, port: int, extra: tuple[str, ...] = ()) -> list[str]:
    """One worker, HTTP/1 only, no websockets, no access log: the least granian does."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    target = "granian_floor:RSGI_APP" if interface == "rsgi" else "granian_floor:ASGI_APP"
    return [
        sys.executable, "-m", "granian", "--interface", interface,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", loop,
        "--http", "1", "--no-ws", "--log-level", "warning", "--working-dir", str(BENCH),
        *extra, target,
    ]  # fmt: skip


def _tree_cpu(procs: list[Any]) -> float:
    """CPU seconds (user + system, all threads) of the given processes."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(Exception):
            times = proc.cpu_times()
            total += float(times.user + times.system)
    return total


def _range(values: list[float], fmt: str) -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo} – {hi}"


class _Servers:
    """The servers under test: started on fresh ports, each its own process group.

    ``close`` ends every group it started (SIGTERM, then SIGKILL after 5 s), so
    granian's workers and nginx's go with their parents.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[str, Path] = {}

    def spawn(
        self, name: str, argv: Callable[[int], list[str]], env: dict[str, str] | None = None
    ) -> tuple[int, int]:
        """Start one server on a fresh port, its output to a log; (port, pid) once it listens."""
        from proxy_overhead import wait_port

        from modelswap.testing.fake_process import free_port

        port = free_port()
        self.logs[name] = self.tmp / f"server-{len(self.procs)}.log"
        with self.logs[name].open("wb") as log:
            self.procs.append(
                subprocess.Popen(
                    argv(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    env=env,
                )
            )
        wait_port(port)
        return port, self.procs[-1].pid

    def announced(self, name: str) -> str:
        lines = self.logs[name].read_text(errors="replace").splitlines()
        said = [line for line in lines if line.startswith("granian-floor:")]
        return said[-1] if said else "no announce line (see its log)"

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass(frozen=True, slots=True)
class Cell:
    """One wrk run of one target, with what it cost in CPU seconds per request."""

    result: Any  # loadgen.LoadResult (imported lazily, see run())
    direct: Any  # direct's LoadResult of the same round and connection count
    cpu: float | None
    """The proxy's own processes (``None`` for direct: no proxy)."""
    rest: float
    """Everything else on the request's path: the fake upstream and wrk."""


BUDGET_CORES = 2
GOAL_RPS = 8000.0


def _start_targets(
    servers: _Servers, tmp: Path, upstream_port: int, notes: list[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """nginx, the uvloop + httptools floor and the four granian floors: name -> port, pid."""
    from proxy_overhead import nginx_conf

    ports: dict[str, int] = {}
    pids: dict[str, int] = {}
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if os.path.exists(nginx):

        def nginx_argv(port: int) -> list[str]:
            conf = nginx_conf(tmp, port, upstream_port)
            log = tmp / "nginx-error.log"
            return [nginx, "-p", str(tmp), "-e", str(log), "-c", str(conf), "-g", "daemon off;"]

        ports["nginx"], pids["nginx"] = servers.spawn("nginx", nginx_argv)
    else:
        notes.append("nginx not installed: no nginx rows.")
    floor = str(BENCH / "forwarder_floor.py")
    name = "uvloop + httptools floor"
    ports[name], pids[name] = servers.spawn(
        name, lambda port: [sys.executable, floor, "--serve", str(port), str(upstream_port)]
    )
    for name, (interface, client, extra) in GRANIAN_TARGETS.items():
        env = dict(os.environ)
        env.update({CLIENT_ENV: client, UPSTREAM_ENV: str(upstream_port)})
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT)])
        argv = functools.partial(granian_argv, interface, extra=extra)
        ports[name], pids[name] = servers.spawn(name, argv, env)
    return ports, pids


def run(quick: bool = False, repeat: int = 2) -> tuple[list[str], list[str]]:
    """Measure every target at 1 and 50 connections, ``repeat`` interleaved rounds.

    Returns (markdown table lines, notes). The harness imports are here, not at
    the top: granian's worker imports this module for the applications only.
    """
    import psutil
    from loadgen import CHAT_BODY, ModelswapProcess
    from proxy_overhead import PATH, WRK_SCRIPT, _warm, write_config

    from modelswap.testing.fake_process import free_port

    duration = 2.0 if quick else 6.0
    if shutil.which("wrk") is None:
        return ["wrk not installed: skipped."], []
    if importlib.util.find_spec("granian") is None:
        return ["granian not installed (`pip install -e .[bench]`): skipped."], []
    notes: list[str] = []
    runs: dict[tuple[str, int], list[Cell]] = {}
    with tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(CHAT_BODY)))
        upstream_port = free_port()
        servers = _Servers(tmp)
        with ModelswapProcess(write_config(tmp, upstream_port)) as ms:
            asyncio.run(_warm(f"{ms.url}{PATH}"))  # the upstream is modelswap's child
            try:
                ports, pids = _start_targets(servers, tmp, upstream_port, notes)
                targets = {"direct": f"http://127.0.0.1:{upstream_port}{PATH}"}
                targets.update({n: f"http://127.0.0.1:{p}{PATH}" for n, p in ports.items()})
                targets["modelswap"] = f"{ms.url}{PATH}"
                for url in targets.values():
                    asyncio.run(_warm(url))
                notes += [f"{name}: {servers.announced(name)}" for name in GRANIAN_TARGETS]
                # Whose CPU counts: nginx's and granian's workers are children of the
                # first process; modelswap's child is the upstream, so only its own.
                cpu_of = {"modelswap": [psutil.Process(ms.pid)]}
                for name, pid in pids.items():
                    first = psutil.Process(pid)
                    cpu_of[name] = [first, *first.children(recursive=True)]
                upstream = psutil.Process(ms.pid).children()  # the fake upstream
                runs = _rounds(targets, cpu_of, upstream, repeat, duration, script)
            finally:
                servers.close()
    return _table(runs, duration, repeat, notes), notes


def _rounds(
    targets: dict[str, str],
    cpu_of: dict[str, list[Any]],
    upstream: list[Any],
    repeat: int,
    duration: float,
    script: Path,
) -> dict[tuple[str, int], list[Cell]]:
    """``repeat`` rounds; each measures every target at 1 then 50 connections."""
    from proxy_overhead import run_wrk

    runs: dict[tuple[str, int], list[Cell]] = {}
    for round_ in range(repeat):
        for conns in (1, 50):
            direct = None
            for name, url in targets.items():
                procs = cpu_of.get(name, [])
                before, others = _tree_cpu(procs), _tree_cpu(upstream) + _children_cpu()
                r = run_wrk(url, conns, duration, script)
                n = max(r.requests, 1)
                cpu = (_tree_cpu(procs) - before) / n if procs else None
                rest = (_tree_cpu(upstream) + _children_cpu() - others) / n
                direct = r if name == "direct" else direct
                runs.setdefault((name, conns), []).append(Cell(r, direct, cpu, rest))
                print(
                    f"  [{round_ + 1}/{repeat}] {name:33s} c={conns:<3d} "
                    f"{r.rps:7.0f} req/s  p50 {r.p50 * 1e6:6.0f} µs  "
                    f"p99 {r.p99 * 1e6:6.0f} µs  errors {r.errors}  "
                    + (f"cpu {cpu * 1e6:4.0f} µs/req  " if cpu is not None else "")
                    + f"upstream+wrk {rest * 1e6:4.0f} µs/req",
                    flush=True,
                )
    return runs


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children: every wrk run so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _table(
    runs: dict[tuple[str, int], list[Cell]], duration: float, repeat: int, notes: list[str]
) -> list[str]:
    us = "{:.0f} µs"
    md = [
        f"wrk, small non-streaming `POST /v1/chat/completions`, {duration:g} s per cell, "
        f"{repeat} interleaved round(s), ranges over the rounds; added = target − direct "
        "of the same round; CPU = the proxy's own processes (all threads) per request; "
        "upstream + wrk = the fake upstream's and wrk's CPU per request in the same cell.",
        "",
        "| target | c=1 added p50 | c=1 added p99 | c=1 CPU/req | c=50 req/s | c=50 CPU/req "
        "| c=50 upstream + wrk CPU/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in [name for name, conns in runs if conns == 1]:
        one, fifty = runs[name, 1], runs[name, 50]
        if name == "direct":
            added50 = _range([c.result.p50 * 1e6 for c in one], us) + " (p50 itself)"
            added99 = _range([c.result.p99 * 1e6 for c in one], us) + " (p99 itself)"
        else:
            added50 = _range([(c.result.p50 - c.direct.p50) * 1e6 for c in one], "{:+.0f} µs")
            added99 = _range([(c.result.p99 - c.direct.p99) * 1e6 for c in one], "{:+.0f} µs")
        cpu1 = [c.cpu * 1e6 for c in one if c.cpu is not None]
        cpu50 = [c.cpu * 1e6 for c in fifty if c.cpu is not None]
        errors = sum(c.result.errors for c in one + fifty)
        md.append(
            f"| {name} | {added50} | {added99} | {_range(cpu1, us) if cpu1 else '—'} | "
            f"{_range([c.result.rps for c in fifty], '{:,.0f}')} | "
            f"{_range(cpu50, us) if cpu50 else '—'} | "
            f"{_range([c.rest * 1e6 for c in fifty], us)} | {errors} |"
        )
    budget = BUDGET_CORES / GOAL_RPS * 1e6
    rest = [c.rest * 1e6 for c in runs["direct", 50]]
    notes.append(
        f"CPU budget for {GOAL_RPS:,.0f} req/s on {BUDGET_CORES} cores: {budget:.0f} µs per "
        f"request for wrk + upstream + proxy together; wrk + upstream alone took "
        f"{_range(rest, us)} (direct, c=50), leaving the proxy at most "
        f"{_range([budget - r for r in rest], us)}."
    )
    return md


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds (ranges kept)")
    args = parser.parse_args()
    md, notes = run(args.quick, args.repeat)
    print("\n".join(md))
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
