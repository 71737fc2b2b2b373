"""The soak itself (see ``bench/soak.py`` for what and why): setup, load, checks, report.

Split from ``soak.py`` so that its ``wrap`` mode, which runs on every
upstream start, never imports aiohttp, psutil or modelswap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import psutil

from modelswap.testing.fake_process import fake_upstream_env, free_port, read_events

SOAK = Path(__file__).resolve().parent / "soak.py"
FD_SLACK = 16
"""Idle pooled sockets and the asyncio self-pipe may differ by a few between samples."""
RSS_GROWTH_LIMIT = 48 * 1024 * 1024
"""Warm → end RSS growth we still call "no leak" (allocator arenas rarely shrink)."""
DOCUMENTED_ERRORS = {
    429: "Too many requests",
    500: "model unloaded",
    502: "",
    503: "",
}
"""Statuses a client may get (with the JSON envelope) and a text their message must hold.

429: over ``concurrencyLimit``; 500 ``unspecific error: group: model unloaded``:
the request was queued or waiting when an unload-all came (llama-swap fails
those); 502/503: the upstream crashed or was being stopped.
"""
CUT_STREAM = b"upstream disconnected mid-stream"
"""The SSE error event's text a stream cut by its upstream ends with, before ``[DONE]``."""
LISTEN_DEADLINE = 30.0
SETTLE_DEADLINE = 20.0
EXIT_DEADLINE = 45.0
"""modelswap's own shutdown budget is 30 s; past this the run fails and we SIGKILL."""


@dataclass
class Tally:
    """Outcomes and latencies, filled by the workers (one event loop: no locks)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unloads: Counter[int] = field(default_factory=Counter)
    sent: int = 0

    def fail(self, text: str) -> None:
        if len(self.failures) < 20:
            self.failures.append(text)


def config_yaml(args: argparse.Namespace, work: Path) -> tuple[str, list[Path]]:
    """The config and the event-log path of each fake."""
    logs: list[Path] = []
    lines = ["healthCheckTimeout: 30", "logLevel: info", "models:"]
    names = [f"m{i}" for i in range(args.models)]
    for i, name in enumerate(names):
        span = args.startup_max - args.startup_min
        delay = args.startup_min + (span * i / max(1, args.models - 1))
        events = work / f"{name}.events"
        logs.append(events)
        port = free_port()
        argv = [sys.executable, str(SOAK), "wrap", str(args.seed), str(args.crash_ratio)]
        argv += [str(work), "--", "--port", str(port), "--model-id", name]
        argv += ["--startup-delay", f"{delay:.3f}", "--chunks", "6", "--chunk-interval", "0.005"]
        argv += ["--event-log", str(events)]
        lines += [f"  {name}:", f"    cmd: {json.dumps(' '.join(argv))}"]
        lines += [f"    proxy: http://127.0.0.1:{port}", "    unloadTimeout: 5"]
        lines += [f"    concurrencyLimit: {args.clients}"]  # swaps, not admission, under test
    lines += ["groups:", "  one:", "    swap: true", "    exclusive: true"]
    lines += [f"    members: [{', '.join(names)}]"]
    return "\n".join(lines) + "\n", logs


def start_modelswap(config: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Spawn modelswap on a free loopback port; return it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelswap", "--config", str(config), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=fake_upstream_env(),
        cwd=str(config.parent),
    )
    found: list[str] = []
    ready = threading.Event()
    sink = open(log_path, "wb")  # noqa: SIM115 - closed by the drain thread

    def drain(stream: IO[bytes]) -> None:
        """Keep the pipe empty all run (a full pipe would block modelswap's logging)."""
        with sink:
            for line in stream:
                sink.write(line)
                text = line.decode("utf-8", "replace")
                if not found and "listening on " in text:
                    found.append(text.rsplit("listening on ", 1)[1].strip())
                    ready.set()
        ready.set()

    assert proc.stdout is not None
    threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
    if not ready.wait(LISTEN_DEADLINE) or not found:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"modelswap did not print its URL; see {log_path}")
    return proc, found[0]


def sample(proc: psutil.Process) -> dict[str, int]:
    return {"fds": proc.num_fds(), "rss": proc.memory_info().rss}


async def one_request(
    session: aiohttp.ClientSession, url: str, rng: random.Random, args: argparse.Namespace
) -> tuple[str, int | None]:
    """Send one chat completion; return (outcome, status)."""
    model = f"m{rng.randrange(args.models)}"
    stream = rng.random() < args.stream_ratio
    leave = stream and rng.random() < args.disconnect_ratio
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            payload = await resp.read()
            try:
                envelope = json.loads(payload)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                return f"bad error body {payload[:80]!r}", resp.status
            expected = DOCUMENTED_ERRORS.get(resp.status)
            ok = expected is not None and expected in envelope
            return ("error" if ok else f"undocumented {resp.status}: {envelope[:80]}"), resp.status
        if not stream:
            data = await resp.json()
            return ("ok" if data.get("choices") else f"no choices {data!r:.80}"), 200
        if leave:
            await resp.content.readany()
            resp.close()  # the client walks away mid-stream
            return "disconnected", 200
        text = await resp.read()
        if CUT_STREAM in text or b"data: [DONE]" not in text:
            return "truncated", 200  # its upstream crashed mid-stream (since issue 13: said so)
        return "ok", 200


async def worker(
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    tally: Tally,
    rng: random.Random,
    stop_at: float,
) -> None:
    loop = asyncio.get_running_loop()
    while tally.sent < args.requests and loop.time() < stop_at:
        tally.sent += 1
        started = loop.time()
        try:
            async with asyncio.timeout(args.request_deadline):
                outcome, status = await one_request(session, url, rng, args)
        except TimeoutError:
            outcome, status = "hung", None
        except (aiohttp.ClientError, OSError) as error:
            outcome, status = f"lost: {type(error).__name__}: {error}", None
        tally.latencies.append(loop.time() - started)
        kind = outcome.split(":")[0] if ":" in outcome else outcome
        tally.outcomes[kind] += 1
        if status is not None:
            tally.statuses[status] += 1
        if kind not in ("ok", "error", "disconnected", "truncated"):
            tally.fail(outcome)


async def unloader(
    session: aiohttp.ClientSession, url: str, every: float, tally: Tally, done: asyncio.Event
) -> None:
    while True:
        try:
            async with asyncio.timeout(every):
                await done.wait()
                return
        except TimeoutError:
            pass
        async with session.post(f"{url}/api/models/unload") as resp:
            tally.unloads[resp.status] += 1
            await resp.read()


async def drive(url: str, args: argparse.Namespace, proc: psutil.Process) -> dict[str, Any]:
    """The load phase: workers + unloader; resource samples before, warm, at the end."""
    tally = Tally()
    idle = sample(proc)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + args.time_limit
    done = asyncio.Event()
    warm: dict[str, int] = {}
    peak = dict(idle)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sampler() -> None:
            while not done.is_set():
                now = sample(proc)
                for key in peak:
                    peak[key] = max(peak[key], now[key])
                if not warm and tally.sent >= args.requests // 10:
                    warm.update(now)
                try:
                    async with asyncio.timeout(0.5):
                        await done.wait()
                except TimeoutError:
                    pass

        started = time.monotonic()
        helpers = [
            asyncio.create_task(unloader(session, url, args.unload_every, tally, done)),
            asyncio.create_task(sampler()),
        ]
        await asyncio.gather(
            *(
                worker(session, url, args, tally, random.Random(f"{args.seed}/client/{i}"), stop_at)
                for i in range(args.clients)
            )
        )
        elapsed = time.monotonic() - started
        done.set()
        await asyncio.gather(*helpers)
        async with session.post(f"{url}/api/models/unload") as resp:  # back to idle
            tally.unloads[resp.status] += 1
        async with session.get(f"{url}/metrics") as resp:
            replayed = sum(
                float(line.rsplit(" ", 1)[1])
                for line in (await resp.text()).splitlines()
                if line.startswith("modelswap_replayed_requests_total{")
            )
    end = await settled_sample(proc, idle["fds"] + FD_SLACK)
    return {"tally": tally, "elapsed": elapsed, "idle": idle, "warm": warm or end, "end": end,
            "peak": peak, "replayed": int(replayed)}  # fmt: skip


async def settled_sample(proc: psutil.Process, fd_bound: int) -> dict[str, int]:
    """The end sample, once our closed keep-alive sockets are closed on its side too.

    Our client held one connection per worker; modelswap closes its end when
    it reads the FIN, a moment after we close. Re-sample until the fd count is
    within the bound or ``SETTLE_DEADLINE`` passes (then the failure is real).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_DEADLINE
    while True:
        now = sample(proc)
        if now["fds"] <= fd_bound or loop.time() > deadline:
            return now
        await asyncio.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (each fake leads its own)."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan


def run(args: argparse.Namespace) -> int:
    """Set up, drive, shut down, check; print the report; 0 when every check passed."""
    with tempfile.TemporaryDirectory(prefix="modelswap-soak-") as tmp:
        work = Path(tmp)
        text, logs = config_yaml(args, work)
        config = work / "config.yaml"
        config.write_text(text, encoding="utf-8")
        proc, url = start_modelswap(config, work / "modelswap.log")
        try:
            result = asyncio.run(drive(url, args, psutil.Process(proc.pid)))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc: int | None = proc.wait(EXIT_DEADLINE)
            except subprocess.TimeoutExpired:
                rc = None
                proc.kill()
                proc.wait()
        starts = [json.loads(line) for line in (work / "starts.jsonl").read_text().splitlines()]
        pids = {ev["pid"] for path in logs for ev in read_events(path) if "pid" in ev}
        pids |= {s["pid"] for s in starts}
        crashes = sum(len([e for e in read_events(p) if e["event"] == "crash"]) for p in logs)
        survivors = sorted(
            {p for p in pids if alive(p)} | {m for p in pids for m in group_members(p)}
        )
        for pid in survivors:  # never leave them behind, even on failure
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        report = build_report(args, result, rc, starts, crashes, len(pids), survivors)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if not report["failures"] else 1


def build_report(
    args: argparse.Namespace,
    result: dict[str, Any],
    rc: int | None,
    starts: list[dict[str, Any]],
    crashes: int,
    pid_count: int,
    survivors: list[int],
) -> dict[str, Any]:
    tally: Tally = result["tally"]
    idle, warm, end, peak = result["idle"], result["warm"], result["end"], result["peak"]
    failures = list(tally.failures)
    answered = sum(tally.outcomes.values())
    if answered != args.requests:
        failures.append(f"{answered} of {args.requests} requests sent and answered (time limit?)")
    if tally.outcomes["truncated"] and not crashes:
        failures.append(f"{tally.outcomes['truncated']} streams cut short with no upstream crash")
    if set(tally.unloads) - {200}:
        failures.append(f"unload-all answered {dict(tally.unloads)}")
    if rc != 0:
        failures.append(f"modelswap exit code after SIGTERM: {rc}")
    if survivors:
        failures.append(f"upstream processes still alive after exit: {survivors}")
    if end["fds"] > idle["fds"] + FD_SLACK:
        failures.append(f"fds grew: idle {idle['fds']} → end {end['fds']}")
    if end["rss"] - warm["rss"] > RSS_GROWTH_LIMIT:
        failures.append(f"RSS grew {(end['rss'] - warm['rss']) / 2**20:.1f} MiB warm → end")
    ms = [x * 1000 for x in tally.latencies]
    mib = 2**20
    return {
        "requests": args.requests,
        "clients": args.clients,
        "seed": args.seed,
        "elapsed_s": round(result["elapsed"], 1),
        "req_per_s": round(answered / result["elapsed"], 1) if result["elapsed"] else None,
        "outcomes": dict(tally.outcomes),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "latency_ms": {
            "p50": round(percentile(ms, 50), 1),
            "p99": round(percentile(ms, 99), 1),
            "max": round(max(ms), 1) if ms else None,
        },
        "lost_to_crashes": sum(tally.statuses[s] for s in (502, 503)),
        "replayed": result["replayed"],
        "upstream_starts": len(starts),
        "starts_planned_to_crash": sum(1 for s in starts if s["crash_after"] is not None),
        "crashes": crashes,
        "unloads": {str(k): v for k, v in tally.unloads.items()},
        "modelswap_exit_code": rc,
        "upstream_pids_checked": pid_count,
        "upstream_survivors": survivors,
        "fds": {"idle": idle["fds"], "warm": warm["fds"], "end": end["fds"], "peak": peak["fds"]},
        "rss_mib": {
            k: round(v["rss"] / mib, 1)
            for k, v in (("idle", idle), ("warm", warm), ("end", end), ("peak", peak))
        },
        "failures": failures,
    }
