"""Soak: real modelswap, forced swaps, random traffic, crashes, disconnects — nothing lost.

Run: ``python3 bench/soak.py`` (defaults: 10,000 requests, 64 clients, ≤ 10 min).
Every size is a flag, so the test suite runs a short version of the same code.

What it does. It writes a config with 4 fake upstreams (startup delays spread
evenly over 0.2–1 s) in one ``swap: true, exclusive: true`` group, so any two
different models evict each other; starts ``python -m modelswap --listen
127.0.0.1:0`` and reads the bound URL from its stdout; then ``--clients``
workers send ``--requests`` chat completions, each to a random model, half of
them streaming. "5 % of clients disconnect mid-stream" is drawn per
request: a streaming request reads its first chunk and closes the connection
with probability ``--disconnect-ratio`` (so every worker sometimes leaves,
and a disconnect can land on any upstream). Every ``--unload-every`` seconds
``POST /api/models/unload`` evicts everything. ``concurrencyLimit`` is set to
``--clients``: this soak is about swaps, not admission control.

How crashes are injected. Each model's ``cmd`` is this script in ``wrap``
mode: it counts the starts of its model (one byte appended to a counter file
per start — the router never starts one model twice at once), seeds an RNG
with ``(seed, model, start index)`` and with probability ``--crash-ratio``
adds ``--crash-after K`` (K in 1–3) to the fake's flags, then ``exec``s the
fake, keeping the pid. Decisions are deterministic for a seed and are logged,
so a run can be replayed.

What it checks (exit 1 when any fails):

* every request got an answer — a 200 (a streaming one ending in
  ``[DONE]``, or cut short cleanly when its upstream crashed: "truncated",
  which ends with an SSE error event since issue 13) or a JSON error
  envelope with a documented status and message (``soak_run.DOCUMENTED_ERRORS``:
  502/503 upstream failures, 429, and llama-swap's 500 ``unspecific error:
  group: model unloaded`` for requests queued when an unload-all came); no
  transport error ("lost"), none past ``--request-deadline`` ("hung"), no
  other 5xx;
* every unload-all answered 200;
* after SIGTERM modelswap exits 0 within the shutdown budget, and no fake —
  by pid and by process group, pids taken from the fakes' own event logs —
  is still alive;
* modelswap's open fds after a final unload-all are back to the idle level
  (± ``FD_SLACK``) and RSS grew by less than ``RSS_GROWTH_LIMIT`` from the
  warm sample (after the first 10 % of requests) to the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_MODULE = "modelswap.testing.fake_upstream"


def wrap(argv: list[str]) -> None:
    """``soak.py wrap SEED RATIO COUNTER_DIR -- FAKE_ARGS``: decide this start's fate, exec.

    Stdlib only and no modelswap import: it runs once per upstream start and
    its cost is part of every swap.
    """
    seed, ratio, counter_dir = argv[0], float(argv[1]), Path(argv[2])
    fake_args = argv[argv.index("--") + 1 :]
    model = fake_args[fake_args.index("--model-id") + 1]
    fd = os.open(counter_dir / f"{model}.starts", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b".")
        start = os.fstat(fd).st_size - 1
    finally:
        os.close(fd)
    rng = random.Random(f"{seed}/{model}/{start}")
    crash_after = rng.randint(1, 3) if rng.random() < ratio else None
    if crash_after is not None:
        fake_args += ["--crash-after", str(crash_after)]
    line = {"model": model, "start": start, "pid": os.getpid(), "crash_after": crash_after}
    with open(counter_dir / "starts.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
    os.execv(sys.executable, [sys.executable, "-m", FAKE_MODULE, *fake_args])


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Soak modelswap with swaps, crashes and disconnects.")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--models", type=int, default=4)
    p.add_argument("--startup-min", type=float, default=0.2, metavar="SECONDS")
    p.add_argument("--startup-max", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--stream-ratio", type=float, default=0.5)
    p.add_argument("--disconnect-ratio", type=float, default=0.05)
    p.add_argument("--crash-ratio", type=float, default=0.01, help="per upstream start")
    p.add_argument("--unload-every", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--request-deadline", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--time-limit", type=float, default=540.0, metavar="SECONDS",
                   help="stop sending new requests after this (then the run fails)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "wrap":
        wrap(args[1:])  # never returns: execs the fake
    # Deferred so that ``wrap`` (run on every upstream start) stays light.
    sys.path.insert(0, str(ROOT))
    from bench.soak_run import run

    return run(parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
