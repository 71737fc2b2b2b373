"""Bundled load generator and the small harness the benchmarks share.

Why it exists: ``wrk`` is the reference load tool (design.md §6 numbers come
from it), but it is not installed everywhere. When it is missing, the
benchmarks fall back to this aiohttp client: N keep-alive connections, each
sending requests back to back for a fixed duration, every latency recorded.
It is slower than wrk (a Python client on the same cores competes with the
server under test), so its req/s figures are a floor, not the server's limit;
the report says which tool produced each number.

Also here, because every benchmark needs them: percentiles, the modelswap
child-process launcher (real ``python -m modelswap`` with a generated config,
URL read from its stdout) and a fd-limit raiser.

Run standalone: ``python3 bench/loadgen.py URL [--connections 50] [--duration 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from modelswap.testing.fake_process import fake_upstream_env  # noqa: E402

CHAT_BODY: dict[str, Any] = {
    "model": "bench",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One load run: latencies in seconds, throughput, errors, and which tool measured it."""

    tool: str
    connections: int
    duration: float
    requests: int
    errors: int
    p50: float
    p99: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    """Back-to-back requests on one connection until the deadline (bounded by time)."""
    headers = {"Content-Type": "application/json"}
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                ok = resp.status == 200
        except aiohttp.ClientError:
            ok = False
        if ok:
            latencies.append(time.perf_counter() - started)
        else:
            errors[0] += 1
            if errors[0] > 1000:  # a broken target: stop early, the report shows the errors
                return


async def run_load(
    url: str,
    connections: int,
    duration: float,
    body: dict[str, Any] | None = None,
    warmup: float = 0.5,
) -> LoadResult:
    """Drive ``url`` with ``connections`` concurrent keep-alive clients for ``duration`` s.

    A short warm-up (not recorded) opens every connection first, so the result
    measures steady state rather than TCP handshakes.
    """
    payload = json.dumps(body or CHAT_BODY).encode()
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        if warmup > 0:
            sink: list[float] = []
            deadline = time.perf_counter() + warmup
            await asyncio.gather(
                *(_worker(session, url, payload, deadline, sink, [0]) for _ in range(connections))
            )
        latencies: list[float] = []
        errors = [0]
        began = time.perf_counter()
        deadline = began + duration
        await asyncio.gather(
            *(
                _worker(session, url, payload, deadline, latencies, errors)
                for _ in range(connections)
            )
        )
        elapsed = time.perf_counter() - began
    return LoadResult(
        tool="loadgen",
        connections=connections,
        duration=elapsed,
        requests=len(latencies),
        errors=errors[0],
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
    )


@dataclass(frozen=True, slots=True)
class Goal:
    """A target from the brief, compared with what this run measured."""

    name: str
    measured: float
    target: float
    unit: str
    higher_is_better: bool = False

    @property
    def met(self) -> bool:
        if math.isnan(self.measured):
            return False
        if self.higher_is_better:
            return self.measured >= self.target
        return self.measured <= self.target

    def verdict(self) -> str:
        """``PASS`` or ``MISS by X`` (absolute and relative), for the summary and the table."""
        if math.isnan(self.measured):
            return "not measured"
        if self.met:
            return "PASS"
        gap = abs(self.measured - self.target)
        rel = gap / self.target * 100 if self.target else math.inf
        return f"MISS by {gap:,.1f} {self.unit} ({rel:.0f} %)"

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        return (
            f"{self.name}: {self.measured:,.1f} {self.unit} (goal {op} {self.target:,.0f} "
            f"{self.unit}) {self.verdict()}"
        )


@dataclass
class Report:
    """One benchmark's contribution to the run: markdown for BENCHMARKS.md, goals."""

    title: str
    markdown: list[str]
    goals: list[Goal]
    notes: list[str]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client when available: a slow client would dominate what it measures."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


def raise_fd_limit() -> int:
    """Soft fd limit up to the hard one; children (modelswap, fakes) inherit it.

    1,000 concurrent streams through a proxy need ~3,000 descriptors across
    the three processes, above the common 1,024 default.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ModelswapProcess:
    """A real ``python -m modelswap --config FILE --listen 127.0.0.1:0`` child.

    The URL comes from its "modelswap listening on" stdout line (the port is
    the OS's pick). It leads its own process group so ``close()`` can stop it
    and every upstream it spawned, even if graceful shutdown stalls.
    """

    def __init__(self, config_path: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> ModelswapProcess:
        argv = [sys.executable, "-m", "modelswap", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(
            [*argv, "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env or fake_upstream_env(),
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while not self.url:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise TimeoutError(f"modelswap did not listen within {timeout}s: {self.lines}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                self.close()
                raise RuntimeError(f"modelswap exited before listening: {self.lines}")
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.lines.append(line)
                if "modelswap listening on " in line:
                    self.url = line.rsplit(" ", 1)[-1].strip()
        # Keep draining stdout in the background: a full pipe would block its logging.
        stdout = self.proc.stdout
        threading.Thread(target=lambda: stdout.read(), daemon=True).start()
        return self

    def close(self, grace: float = 5.0) -> None:
        """SIGTERM (graceful: it stops its upstreams), then SIGKILL the group."""
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> ModelswapProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


async def wait_ok(session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    """POST the chat body until it answers 200 (loads and warms the model)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with session.post(url, json=CHAT_BODY) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(run_load(args.url, args.connections, args.duration))
    print(
        f"{result.connections} conns: {result.rps:.0f} req/s, p50 {result.p50 * 1e6:.0f} µs, "
        f"p99 {result.p99 * 1e6:.0f} µs, errors {result.errors}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
