"""The fake upstream's command line, as one frozen :class:`Options` value.

Separate from the server so the flag list (which tests, the demo and
``fake_process.fake_upstream_argv`` all spell) can be read on one screen.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    """Parsed command line; see :func:`parse_args` for the meaning of each."""

    port: int
    model_id: str
    host: str = "127.0.0.1"
    startup_delay: float = 0.0
    chunks: int = 5
    chunk_interval: float = 0.0
    response_text: str | None = None
    exit_at_start: int | None = None
    never_healthy: bool = False
    crash_after: int | None = None
    ignore_sigterm: bool = False
    fork_grandchild: bool = False
    slow_body: float = 0.0
    event_log: str | None = None
    close_after_response: bool = False
    metrics: bool = False
    nagle: bool = False

    @property
    def text(self) -> str:
        return (
            self.response_text if self.response_text is not None else f"Hello from {self.model_id}"
        )


_NOT_WITH_NAGLE = (
    "chunk_interval", "exit_at_start", "crash_after", "ignore_sigterm", "fork_grandchild",
    "slow_body", "close_after_response", "metrics",
)  # fmt: skip
"""Options the ``--nagle`` server (:mod:`modelswap.testing.fake_nagle`) does not implement."""


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m modelswap.testing.fake_upstream",
        description="Fake OpenAI-compatible inference server for tests, demo and benchmarks.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model-id", required=True, help="id reported in every answer")
    p.add_argument("--startup-delay", type=float, default=0.0, metavar="SECONDS",
                   help="/health answers 503 until this long after listening")  # fmt: skip
    p.add_argument("--chunks", type=int, default=5, help="SSE content chunks per stream")
    p.add_argument("--chunk-interval", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--response-text", default=None, help='default "Hello from <model-id>"')
    p.add_argument("--exit-at-start", type=int, default=None, metavar="CODE",
                   help="print to stderr and exit with CODE before listening")  # fmt: skip
    p.add_argument("--never-healthy", action="store_true", help="/health always 503")
    p.add_argument("--crash-after", type=int, default=None, metavar="N",
                   help="os._exit(1) after N completed inference requests")  # fmt: skip
    p.add_argument("--ignore-sigterm", action="store_true", help="only SIGKILL ends it")
    p.add_argument("--fork-grandchild", action="store_true",
                   help="spawn a sleeping grandchild in our process group")  # fmt: skip
    p.add_argument("--slow-body", type=float, default=0.0, metavar="SECONDS",
                   help="write non-streaming bodies in pieces with this delay between")  # fmt: skip
    p.add_argument("--event-log", default=None, metavar="PATH", help="append JSON event lines")
    p.add_argument("--close-after-response", action="store_true",
                   help="answer once per connection, then drop it when the next request "
                   "arrives (llama-server drops kept-alive connections after streams)")  # fmt: skip
    p.add_argument("--metrics", action="store_true",
                   help="serve Prometheus text at /metrics (like llama-server)")  # fmt: skip
    p.add_argument("--nagle", action="store_true",
                   help="serve with the stdlib http.server, Nagle on, headers and body in "
                   "separate sends (stalls ~40 ms per kept-alive answer without quick ACKs; "
                   "/health, /v1/models, /v1/chat/completions only)")  # fmt: skip
    ns = p.parse_args(argv)
    if ns.chunks < 1:
        p.error("--chunks must be >= 1")
    if ns.nagle:
        unsupported = [
            name for name in _NOT_WITH_NAGLE if getattr(ns, name) not in (None, False, 0)
        ]
        if unsupported:
            flags = ", ".join("--" + name.replace("_", "-") for name in unsupported)
            p.error(f"--nagle does not support {flags}")
    return Options(**vars(ns))
