"""Proxy overhead: the same fast fake upstream direct, through modelswap, through nginx.

Run: ``python3 bench/proxy_overhead.py [--quick]`` (``bench/run.py`` runs it too).

Why three targets: "direct" is the floor (what the upstream alone costs),
nginx is the best a reverse proxy does on this machine (design.md §6 measured
it at +77 µs), and modelswap is the real program — ``python -m modelswap``
with a generated config, its model preloaded and warmed before any
measurement, so the numbers are the steady-state forward path (auth, CORS,
model extraction, router grant, streaming forward), not a swap.

All three share one upstream process: modelswap spawns the fake at a fixed
port and the other two point at that port. Load comes from ``wrk`` (a small
non-streaming ``POST /v1/chat/completions`` via a Lua script) at 1 and 50
connections; without wrk, from the bundled ``bench/loadgen.py``. nginx is
skipped when not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import psutil
from loadgen import (
    CHAT_BODY,
    Goal,
    LoadResult,
    ModelswapProcess,
    Report,
    loop_factory,
    run_load,
    wait_ok,
)

from modelswap.testing.fake_process import fake_upstream_cmd, free_port

PATH = "/v1/chat/completions"
GOAL_ADDED_P50_US = 250.0
GOAL_RPS_50 = 5000.0
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def write_config(
    tmp: Path, upstream_port: int, log_level: str = "info", name: str = "modelswap", **fake: object
) -> Path:
    """One model, preloaded at startup; JSON is valid YAML, so no quoting worries.

    ``log_level`` defaults to llama-swap's default, ``info``: every request
    logs its access line, as for a user who changed nothing.
    """
    config = {
        "healthCheckTimeout": 30,
        "logLevel": log_level,
        "models": {
            "bench": {
                "cmd": fake_upstream_cmd(upstream_port, "bench", **fake),
                "proxy": f"http://127.0.0.1:{upstream_port}",
                # The built-in limit of 10 would answer 429 at 50 connections.
                "concurrencyLimit": 5000,
            }
        },
        "hooks": {"onStartup": {"preload": ["bench"]}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


@contextlib.contextmanager
def baseline_checkout(ref: str, tmp: Path) -> Iterator[dict[str, str]]:
    """A detached worktree of ``ref``; yields the environment that runs modelswap from it.

    So "before" and "after" a change are measured in the same run, on the
    same machine state, with the same load generator.
    """
    root = Path(__file__).resolve().parents[1]
    where = tmp / "baseline"
    subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(where), ref],
        check=True,
    )
    try:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(where)
        # `python -m` puts the current directory first on sys.path: without
        # this, a run from the repository root would measure the current tree.
        env["PYTHONSAFEPATH"] = "1"
        yield env
    finally:
        subprocess.run(
            ["git", "-C", str(root), "worktree", "remove", "--force", str(where)], check=False
        )


def nginx_conf(tmp: Path, listen_port: int, upstream_port: int) -> Path:
    """Minimal reverse proxy: one worker (modelswap is one process too), keep-alive upstream."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"  {name}_temp_path {tmp / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi")
    )
    text = f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
  scgi_temp_path {tmp / "scgi"};
  upstream fake {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{listen_port};
    location / {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {port} after {timeout}s") from None
            time.sleep(0.02)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _wrk_time(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, connections: int, duration: float, script: Path) -> LoadResult:
    """One wrk run; parses ``--latency`` percentiles, Requests/sec and error counts."""
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    argv += ["--latency", "-s", str(script), url]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, check=True
    ).stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.MULTILINE))
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    assert total, out
    non_2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = non_2xx
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return LoadResult(
        tool="wrk",
        connections=connections,
        duration=float(total.group(2)) * _UNITS[total.group(3)],
        requests=int(total.group(1)) - non_2xx,  # req/s counts successes only
        errors=errors,
        p50=_wrk_time(pct["50"]),
        p99=_wrk_time(pct["99"]),
    )


def measure(
    url: str, connections: int, duration: float, script: Path | None, use_wrk: bool
) -> LoadResult:
    if use_wrk and script is not None:
        return run_wrk(url, connections, duration, script)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run_load(url, connections, duration))


async def _warm(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_ok(session, url)
        for _ in range(50):
            async with session.post(url, json=CHAT_BODY) as resp:
                await resp.read()


def _cpu_seconds(proc: psutil.Process | None) -> float:
    """CPU time (user + system) of one process, all its threads, none of its children.

    Robust to a noisy machine where wall-clock latency is not: a change that
    adds work to each request shows up here even when neighbours skew p50.
    """
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return float(times.user + times.system)


def run(
    quick: bool = False,
    use_wrk: bool | None = None,
    use_nginx: bool | None = None,
    baseline: str | None = None,
    log_level: str = "info",
    repeat: int = 1,
) -> Report:
    """Measure every available target at 1 and 50 connections; return the report.

    ``baseline``: a git revision also measured, as target ``modelswap@<rev>``
    (its own copy of the fake upstream), to compare before/after a change.
    ``repeat``: runs per cell, interleaved across targets; the median is kept.
    """
    duration = 2.0 if quick else 6.0
    has_wrk = shutil.which("wrk") is not None if use_wrk is None else use_wrk
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    has_nginx = nginx is not None if use_nginx is None else use_nginx and nginx is not None
    found_wrk = shutil.which("wrk") is not None
    tool = "wrk" if has_wrk else f"bench/loadgen.py ({'--no-wrk' if found_wrk else 'no wrk'})"
    results: dict[tuple[str, int], LoadResult] = {}
    cpu: dict[tuple[str, int], float] = {}
    """modelswap's own CPU seconds per request (its threads, not the upstream child)."""
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(CHAT_BODY)))
        upstream_port = free_port()
        nginx_proc: subprocess.Popen[bytes] | None = None
        with contextlib.ExitStack() as stack:
            ms = stack.enter_context(ModelswapProcess(write_config(tmp, upstream_port, log_level)))
            targets = {
                "direct": f"http://127.0.0.1:{upstream_port}{PATH}",
                "modelswap": f"{ms.url}{PATH}",
            }
            asyncio.run(_warm(targets["modelswap"]))  # preload done + connections warm
            cpu_of = {"modelswap": psutil.Process(ms.pid)}
            if baseline is not None:
                env = stack.enter_context(baseline_checkout(baseline, tmp))
                config = write_config(tmp, free_port(), log_level, name="baseline")
                old = stack.enter_context(ModelswapProcess(config, env=env))
                targets[f"modelswap@{baseline}"] = f"{old.url}{PATH}"
                cpu_of[f"modelswap@{baseline}"] = psutil.Process(old.pid)
                asyncio.run(_warm(targets[f"modelswap@{baseline}"]))
            try:
                if has_nginx:
                    assert nginx is not None
                    port = free_port()
                    conf = nginx_conf(tmp, port, upstream_port)
                    nginx_proc = subprocess.Popen(
                        [nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c",
                         str(conf), "-g", "daemon off;"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, start_new_session=True,
                    )  # fmt: skip
                    wait_port(port)
                    targets["nginx"] = f"http://127.0.0.1:{port}{PATH}"
                    asyncio.run(_warm(targets["nginx"]))
                else:
                    why = "skipped (--no-nginx)" if nginx else "not installed"
                    notes.append(f"nginx {why}: no nginx rows.")
                runs: dict[tuple[str, int], list[tuple[LoadResult, float]]] = {}
                for conns, _ in itertools.product((1, 50), range(repeat)):
                    for name, url in targets.items():  # interleaved: drift hits all alike
                        proc = cpu_of.get(name)
                        before = _cpu_seconds(proc)
                        r = measure(url, conns, duration, script if has_wrk else None, has_wrk)
                        used = (_cpu_seconds(proc) - before) / max(r.requests, 1)
                        runs.setdefault((name, conns), []).append((r, used))
                        results[name, conns] = r
                        if proc is not None:
                            cpu[name, conns] = used
                        print(
                            f"  {name:9s} c={conns:<3d} {r.rps:8.0f} req/s  "
                            f"p50 {r.p50 * 1e6:7.0f} µs  p99 {r.p99 * 1e6:7.0f} µs  "
                            f"errors {r.errors}"
                            + (f"  cpu {cpu[name, conns] * 1e6:5.0f} µs/req" if proc else ""),
                            flush=True,
                        )
                for key, measured in runs.items():  # the median run by throughput
                    median = sorted(measured, key=lambda run: run[0].rps)[len(measured) // 2]
                    results[key] = median[0]
                    if key in cpu:
                        cpu[key] = median[1]
            finally:
                if nginx_proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(nginx_proc.pid, signal.SIGKILL)
                    nginx_proc.wait()
    return _report(results, tool, duration, notes, cpu)


def _report(
    results: dict[tuple[str, int], LoadResult],
    tool: str,
    duration: float,
    notes: list[str],
    cpu: dict[tuple[str, int], float] | None = None,
) -> Report:
    cpu = cpu or {}
    names = [name for name, conns in results if conns == 1]
    md = [
        f"Load: {tool}, small non-streaming `POST {PATH}`, {duration:g} s per cell, "
        "one shared fake upstream; modelswap is the real `python -m modelswap` "
        "with the model preloaded and warmed.",
        "",
        "| target | conns | req/s | p50 | p99 | added p50 vs direct | added p99 | errors "
        "| modelswap CPU per request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for conns in (1, 50):
        base = results["direct", conns]
        for name in names:
            r = results[name, conns]
            added = "—" if name == "direct" else f"{(r.p50 - base.p50) * 1e6:+.0f} µs"
            added99 = "—" if name == "direct" else f"{(r.p99 - base.p99) * 1e6:+.0f} µs"
            used = cpu.get((name, conns))
            md.append(
                f"| {name} | {conns} | {r.rps:,.0f} | {r.p50 * 1e6:.0f} µs | "
                f"{r.p99 * 1e6:.0f} µs | {added} | {added99} | {r.errors} | "
                f"{'—' if used is None else f'{used * 1e6:.0f} µs'} |"
            )
    ms1, d1 = results["modelswap", 1], results["direct", 1]
    goals = [
        Goal(
            "modelswap added p50 latency, 1 conn", (ms1.p50 - d1.p50) * 1e6, GOAL_ADDED_P50_US, "µs"
        ),
        Goal(
            "modelswap throughput, 50 conns",
            results["modelswap", 50].rps,
            GOAL_RPS_50,
            "req/s",
            higher_is_better=True,
        ),
    ]
    if ("nginx", 1) in results:
        n1 = results["nginx", 1]
        notes.append(
            f"nginx (1 worker) for scale: {(n1.p50 - d1.p50) * 1e6:+.0f} µs p50 added, "
            f"{results['nginx', 50].rps:,.0f} req/s at 50 connections."
        )
    if tool != "wrk":
        notes.append("req/s from the Python load generator is a floor: it shares the cores.")
    return Report("Proxy overhead (`bench/proxy_overhead.py`)", md, goals, notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-wrk", action="store_true", help="use bench/loadgen.py")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also measure this git revision")
    parser.add_argument("--log-level", default="info", help="modelswap's logLevel (default info)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median kept)")
    args = parser.parse_args()
    report = run(
        args.quick,
        False if args.no_wrk else None,
        False if args.no_nginx else None,
        baseline=args.baseline,
        log_level=args.log_level,
        repeat=args.repeat,
    )
    print("\n".join(report.markdown))
    for goal in report.goals:
        print(goal.line())
    for note in report.notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
