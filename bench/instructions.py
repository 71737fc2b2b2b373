"""Instructions per proxied request: a cost figure a noisy machine cannot skew.

Run: ``python3 bench/instructions.py [--baseline REV] [--requests N] [--set KEY=JSON ...]
[--events | --events-ui]`` (``bench/run.py`` runs it too when valgrind is installed). ``--events``
keeps an ``/api/events`` client listening throughout: the cost of a request
whose in-flight changes, activity row and log line are pushed live to a plain
client (one that gets the full-row ``metrics`` events, as older llama-swap UIs
read them); ``--events-ui`` connects as the web UI does
(``/api/events?metrics=0``: ``activity`` ids, no ``metrics`` rows).

Why: wall-clock and even CPU-time figures on a shared 2-core machine move by
30–50 % from one minute to the next (CPU time per request of the *same* code
was seen at 387 and 743 µs in one run), which hides a 5 % budget entirely.
valgrind's cachegrind counts the user-space instructions the process
executes — all its threads, deterministically. Each target runs twice under
cachegrind (``python -m modelswap`` with the same one-model config as
``bench/proxy_overhead.py``, its fake upstream outside valgrind), serving a
few and then many more small chat completions from 4 concurrent clients,
and exits by SIGTERM; the difference between the two runs divided by the
difference in requests is the cost of one request, with startup and
shutdown cancelled out. What it does not count: kernel time (syscalls) and
stalls — so it complements the throughput figures, it does not replace them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from loadgen import CHAT_BODY, Report, wait_ok
from proxy_overhead import PATH, baseline_checkout, write_config

from modelswap.testing.fake_process import free_port

CLIENTS = 4


EVENTS_PATHS = {"plain": "/api/events", "ui": "/api/events?metrics=0"}
"""What an ``--events`` / ``--events-ui`` listener connects to."""


async def _listen(
    session: aiohttp.ClientSession, base: str, opened: asyncio.Event, path: str
) -> None:
    """An ``/api/events`` client reading everything until cancelled."""
    async with session.get(f"{base}{path}") as resp:
        opened.set()
        async for _ in resp.content.iter_any():
            pass


async def _drive(base: str, requests: int, events: bool | str = False) -> None:
    """Wait until the model answers, then send ``requests`` chat completions."""
    async with aiohttp.ClientSession() as session:
        await wait_ok(session, f"{base}{PATH}", timeout=300.0)  # startup under valgrind: ~1 min
        listener: asyncio.Task[None] | None = None
        if events:
            opened = asyncio.Event()
            path = EVENTS_PATHS["ui" if events == "ui" else "plain"]
            listener = asyncio.create_task(_listen(session, base, opened, path))
            await opened.wait()
        try:
            await _send(session, base, requests)
        finally:
            if listener is not None:
                listener.cancel()


async def _send(session: aiohttp.ClientSession, base: str, requests: int) -> None:
    """``requests`` chat completions from :data:`CLIENTS` concurrent clients."""
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(f"{base}{PATH}", json=CHAT_BODY) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}: {await resp.text()}")
                await resp.read()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


def count(config: Path, requests: int, env: dict[str, str], events: bool | str = False) -> int:
    """User-space instructions of one modelswap run serving ``requests`` (+1 warm-up)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="modelswap-cg-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        proc = subprocess.Popen(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
             sys.executable, "-m", "modelswap", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        try:
            asyncio.run(_drive(f"http://127.0.0.1:{port}", requests, events))
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"modelswap exited {proc.returncode}: {err.decode()[-2000:]}")
    found = re.search(rb"I\s+refs:\s+([\d,]+)", err)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {err.decode()[-2000:]}")
    return int(found.group(1).replace(b",", b""))


def per_request(
    config: Path, env: dict[str, str], few: int, many: int, events: bool | str = False
) -> float:
    return (count(config, many, env, events) - count(config, few, env, events)) / (many - few)


def run(
    baseline: str | list[str] | None = None,
    requests: int = 300,
    settings: dict[str, object] | None = None,
    quick: bool = False,
    events: bool | str = False,
) -> Report:
    """Instructions per request for the current tree (and each ``baseline``), same config."""
    if shutil.which("valgrind") is None:
        return Report("Instructions per request", ["valgrind not installed: skipped."], [], [])
    few, many = 20, 20 + (100 if quick else requests)
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="modelswap-bench-") as tmpdir:
        tmp = Path(tmpdir)
        config = write_config(tmp, free_port())
        if settings:
            data = json.loads(config.read_text())
            data.update(settings)
            config.write_text(json.dumps(data))
        env = dict(os.environ, PYTHONSAFEPATH="1")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        results.append(("modelswap", per_request(config, env, few, many, events)))
        print(f"  modelswap: {results[-1][1]:,.0f} instructions/request", flush=True)
        baselines = [baseline] if isinstance(baseline, str) else baseline or []
        for index, rev in enumerate(baselines):
            where = tmp / f"rev{index}"
            where.mkdir()
            with baseline_checkout(rev, where) as old_env:
                results.append(
                    (f"modelswap@{rev}", per_request(config, old_env, few, many, events))
                )
            print(f"  {results[-1][0]}: {results[-1][1]:,.0f} instructions/request", flush=True)
    extra = f", config plus {json.dumps(settings)}" if settings else ""
    if events == "ui":
        extra += ", an `/api/events?metrics=0` client listening throughout (the web UI open)"
    elif events:
        extra += ", an `/api/events` client listening throughout (the UI open)"
    md = [
        f"valgrind cachegrind, user-space instructions of the whole modelswap process per small "
        f"non-streaming chat completion ({many - few} requests, {CLIENTS} clients, runs of "
        f"{few} and {many} requests differenced{extra}).",
        "",
        f"| target | instructions per request | vs {results[1][0] if len(results) > 1 else '—'} |",
        "|---|---|---|",
    ]
    base = results[1][1] if len(results) > 1 else results[0][1]
    for name, value in results:
        versus = f"{(value / base - 1) * 100:+.1f} %" if len(results) > 1 else "—"
        md.append(f"| {name} | {value:,.0f} | {versus} |")
    return Report("Instructions per request (`bench/instructions.py`)", md, [], [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", metavar="REV", action="append", help="also count this git revision (repeat)"
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="config key to override"
    )
    parser.add_argument(
        "--events", action="store_true", help="keep an /api/events client listening (the UI open)"
    )
    parser.add_argument(
        "--events-ui",
        action="store_true",
        help="keep an /api/events?metrics=0 client listening (as the web UI connects)",
    )
    args = parser.parse_args()
    settings = {key: json.loads(value) for key, value in (s.split("=", 1) for s in args.set)}
    report = run(
        args.baseline,
        args.requests,
        settings or None,
        events="ui" if args.events_ui else args.events,
    )
    print("\n".join(report.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
