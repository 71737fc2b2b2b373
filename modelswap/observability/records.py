"""What one finished request leaves behind, as plain data: :class:`RequestRecord`.

The HTTP layer builds one record per recorded request after its response has
ended (never on the request's path) and hands it to the
:class:`~modelswap.observability.recorder.Recorder`, which feeds the activity
store, the capture ring, ``/api/events`` and Prometheus. Each of those reads
only this dataclass, so they can be built and tested apart from the server.

:class:`Explain` is modelswap's own addition (no peer has it): why the request
took as long as it did — its wait, the swap it waited for (what that swap
loaded, what it evicted and why), the load time, time to first byte and
generation time. The same figures go to the client as a ``Server-Timing``
header (:meth:`Explain.server_timing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelswap.router.facts import SwapFinished

__all__ = ["Explain", "RequestRecord", "build_explain"]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True, slots=True)
class Explain:
    """Where a request's time went (milliseconds; None = did not apply / unknown).

    * ``queue_ms``: arrival at the router → grant, minus the part of it spent
      waiting for the swap below (so queue + evict + load ≈ the whole wait);
    * ``swap_model`` … ``load_ms``: the swap this request waited for, if any:
      the model it loaded, the models it stopped first and why (``group``,
      ``matrix``, ``maxWait``), how long stopping them took and how long the
      model took to become ready;
    * ``ttfb_ms``: grant → the upstream's response headers;
    * ``gen_ms``: the upstream's response headers → the end of the body.
    """

    queue_ms: float = 0.0
    swap_model: str | None = None
    evicted: tuple[str, ...] = ()
    evict_reason: str | None = None
    evict_ms: float | None = None
    load_ms: float | None = None
    ttfb_ms: float | None = None
    gen_ms: float | None = None

    @property
    def waited_for_swap(self) -> bool:
        return self.swap_model is not None

    def server_timing(self) -> str:
        """The ``Server-Timing`` header value (RFC-style ``name;dur=ms`` entries).

        Sent with the response headers, so ``gen`` (known only at the end) is
        not in it; ``load``/``evict`` appear only when the request waited for a
        swap, with the model in ``desc``.
        """
        parts = [f"queue;dur={self.queue_ms:.1f}"]
        if self.swap_model is not None:
            if self.evicted:
                stopped = ",".join(self.evicted)
                parts.append(f'evict;dur={self.evict_ms or 0.0:.1f};desc="{stopped}"')
            parts.append(f'load;dur={self.load_ms or 0.0:.1f};desc="{self.swap_model}"')
        if self.ttfb_ms is not None:
            parts.append(f"ttfb;dur={self.ttfb_ms:.1f}")
        return ", ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The ``explain`` object of an activity row (keys always present)."""
        return {
            "queue_ms": _ms(self.queue_ms),
            "waited_for_swap": self.waited_for_swap,
            "swap_model": self.swap_model,
            "evicted": list(self.evicted),
            "evict_reason": self.evict_reason,
            "evict_ms": _ms(self.evict_ms),
            "load_ms": _ms(self.load_ms),
            "ttfb_ms": _ms(self.ttfb_ms),
            "gen_ms": _ms(self.gen_ms),
        }


def build_explain(
    arrived: float,
    granted: float,
    swap: SwapFinished | None,
    headers_at: float | None = None,
    ended: float | None = None,
) -> Explain:
    """The explain record from a request's timeline (all on one monotonic clock).

    The wait (``arrived`` → ``granted``) is split into the part spent while
    the swap it waited for ran (its evictions, then the load) and the rest,
    ``queue_ms``: time spent behind other requests or for a busy model.
    """
    wait = max(0.0, granted - arrived)
    ttfb = None if headers_at is None else max(0.0, headers_at - granted) * 1000.0
    gen = None if headers_at is None or ended is None else max(0.0, ended - headers_at) * 1000.0
    if swap is None:
        return Explain(queue_ms=wait * 1000.0, ttfb_ms=ttfb, gen_ms=gen)
    overlap = max(0.0, min(swap.finished, granted) - max(swap.started, arrived))
    return Explain(
        queue_ms=max(0.0, wait - overlap) * 1000.0,
        swap_model=swap.model,
        evicted=swap.evict,
        evict_reason=swap.reason if swap.evict else None,
        evict_ms=swap.evict_seconds * 1000.0 if swap.evict else None,
        load_ms=swap.load_seconds * 1000.0,
        ttfb_ms=ttfb,
        gen_ms=gen,
    )


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One finished, recorded request (server spec §16), handed over after it ended.

    Bodies are the bytes as they crossed the proxy: ``resp_body`` may still be
    compressed (``resp_headers`` says how) and is ``None`` when it was not
    kept (a websocket, or a body too large to keep whole, in which case
    ``resp_tail`` still holds its last bytes for usage parsing).
    """

    request_id: int
    """The in-flight id (decimal counter per app, from 1)."""
    model: str
    """Real model name after profiles/selectors; for peers the requested peer name."""
    method: str
    req_path: str
    """Path at the end of handling (prefix-stripped, or the ``/upstream`` rest)."""
    started_wall: float
    """``time.time()`` when the request arrived."""
    ended_wall: float
    duration_ms: float
    status: int
    resp_content_type: str
    req_headers: Mapping[str, str] = field(default_factory=dict)
    """First value per header name, as received (redaction is the consumer's job)."""
    req_body: bytes | None = None
    resp_headers: Mapping[str, str] = field(default_factory=dict)
    resp_body: bytes | None = None
    resp_tail: bytes = b""
    metadata: Mapping[str, str] = field(default_factory=dict)
    explain: Explain | None = None
    """None for requests that never reached the local router (peers, early errors)."""
    client_aborted: bool = False
    granted_wall: float | None = None
    """``time.time()`` when the router's serve grant was delivered (None: never granted)."""
    swap_id: int | None = None
    """The swap whose completion granted the request (None: it waited for none)."""
