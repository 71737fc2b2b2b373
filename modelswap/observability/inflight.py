"""In-flight requests (server spec §15): who is being served right now, and a way to stop them.

The request path calls :class:`InflightTracker` at four points — ``begin``
when the request is known (model resolved), ``response_started`` when the
upstream's headers are written, ``add_bytes`` per body chunk, ``end`` in a
``finally`` — and ``POST /api/inflight/<id>/cancel`` calls :meth:`cancel`,
which cancels that request's handler (normal cleanup then removes it).

What the UI sees are ``inflight`` events on the :class:`EventsHub`: ``upsert``
on start, on response headers and as bytes flow (at most one per 250 ms per
request, with a trailing update so the last count is shown), ``remove`` at the
end, and a full ``snapshot`` on connect. Nothing here may slow a request:

* the calls on the request path only update the entry and note its id in an
  **outbox** of 128; the entry is encoded later, in a loop callback (with the
  events hub: just before the hub's next send), so ``elapsed_ms`` is
  recomputed when published;
* a flush publishes each changed request's **current** state once: one
  ``upsert`` however many changes it had since the last flush, or ``remove``
  if it ended — and nothing at all for a request that began and ended between
  two flushes, which no listener was ever told about. A client sees the same
  states as one reading a little later would; what it does not see is a
  request shorter than the hub's send window (0.1 s) flash by. This is the
  spec's own rule for a full outbox (drop incremental updates, send the
  current state) applied per window: with the UI open, four ``inflight``
  events per request were most of what a request cost to show (BENCHMARKS.md);
* when the outbox is full, the pending incremental updates are discarded and
  one full snapshot is published instead (it describes the current state, so
  nothing is lost but intermediate steps);
* with nobody listening nothing is queued at all: ``add_bytes`` is a dict
  lookup and an addition. A client that connects later gets the snapshot.

Headers are kept as the (immutable) mappings the caller passes and redacted
only when an entry is first encoded: first value per name, Go's canonical
names, and ``[REDACTED]`` for credentials. Time is injected (``clock``,
``wall_ns``, ``call_later``, ``defer``) so throttling is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger("modelswap.observability")

__all__ = [
    "INFLIGHT",
    "OUTBOX_SIZE",
    "REDACTED",
    "THROTTLE_SECONDS",
    "EventSink",
    "InflightTracker",
    "canonical_header_key",
    "redact_headers",
    "rfc3339_nano",
]

OUTBOX_SIZE = 128
THROTTLE_SECONDS = 0.25
REDACTED = "[REDACTED]"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
_EMPTY: Mapping[str, Any] = {}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@functools.lru_cache(maxsize=512)
def canonical_header_key(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``x-api-key`` → ``X-Api-Key``; odd names unchanged."""
    if not _TOKEN.fullmatch(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """First value per header (canonical name); credentials shown as ``[REDACTED]``.

    ``headers`` may be a multi-dict: its ``items()`` yields every value, and
    only the first one per name is kept, as llama-swap shows them.
    """
    shown: dict[str, str] = {}
    for name, value in headers.items():
        key, sensitive = _shown_name(name)
        if key not in shown:
            shown[key] = REDACTED if sensitive else value
    return shown


@functools.lru_cache(maxsize=512)
def _shown_name(name: str) -> tuple[str, bool]:
    """A header name as shown, and whether its value is a credential (once per name)."""
    key = canonical_header_key(name)
    return key, key.lower() in SENSITIVE_HEADERS


def rfc3339_nano(wall_ns: int) -> str:
    """Go's ``RFC3339Nano`` in local time: ``2024-05-01T12:00:00.1234Z`` (no trailing zeros)."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds).astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    offset = moment.utcoffset()
    minutes = 0 if offset is None else int(offset.total_seconds()) // 60
    if minutes == 0:
        return text + "Z"
    sign = "+" if minutes > 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


class EventSink(Protocol):
    """Where ``inflight`` events go (an :class:`~modelswap.observability.events_hub.EventsHub`)."""

    @property
    def has_subscribers(self) -> bool: ...

    def publish(self, event_type: str, data: object) -> None: ...


class _Cancellable(Protocol):
    def cancel(self) -> object: ...


CallLater = Callable[[float, Callable[[], None]], _Cancellable]
Defer = Callable[[Callable[[], None]], object]


def _loop_call_later(delay: float, callback: Callable[[], None]) -> _Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


def _loop_call_soon(callback: Callable[[], None]) -> object:
    return asyncio.get_running_loop().call_soon(callback)


@dataclass(slots=True, eq=False)
class _Entry:
    id: int
    model: str
    method: str
    path: str
    headers: Mapping[str, str]
    remote_ip: str
    metadata: Mapping[str, Any]
    cancel: Callable[[], None]
    started_ns: int
    started: float
    resp_headers: Mapping[str, str] = field(default_factory=dict)
    resp_bytes: int = 0
    next_bytes_at: float = float("-inf")
    """Earliest clock time the next byte-count upsert may be published."""
    timer: _Cancellable | None = None
    """The scheduled trailing byte-count upsert, if any."""
    shown_headers: dict[str, str] | None = None
    timestamp: str | None = None


class InflightTracker:
    """The in-flight requests of one app and the ``inflight`` events that describe them."""

    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        call_later: CallLater = _loop_call_later,
        defer: Defer = _loop_call_soon,
        outbox_size: int = OUTBOX_SIZE,
        throttle: float = THROTTLE_SECONDS,
    ) -> None:
        if outbox_size < 1:
            raise ValueError("outbox_size must be >= 1")
        self._sink = sink
        self._clock = clock
        self._wall_ns = wall_ns
        self._call_later = call_later
        self._defer = defer
        self._outbox_size = outbox_size
        self._throttle = throttle
        self._ids = itertools.count(1)
        self._entries: dict[int, _Entry] = {}
        self._outbox: dict[int, None] = {}
        """Ids changed since the last flush, in order of first change."""
        self._shown: set[int] = set()
        """Ids the listeners were told about (an upsert or a snapshot) and not yet removed."""
        self._snapshot_due = False
        self._flush_scheduled = False
        self.overflows = 0
        """Times the outbox was full and replaced by a snapshot."""

    def __repr__(self) -> str:
        return (
            f"<InflightTracker in_flight={len(self._entries)} outbox={len(self._outbox)}"
            f"{' snapshot-due' if self._snapshot_due else ''} overflows={self.overflows}>"
        )

    def __len__(self) -> int:
        return len(self._entries)

    # --- the request path (synchronous, never blocks) ----------------------------

    def begin(
        self,
        model: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        remote_ip: str,
        metadata: Mapping[str, Any] | None,
        cancel: Callable[[], None],
    ) -> int:
        """Track a new request; returns its id (decimal counter from 1 per app).

        ``headers`` is kept by reference (pass an immutable view such as
        aiohttp's ``request.headers``); ``metadata`` is copied now.
        """
        request_id = next(self._ids)
        self._entries[request_id] = _Entry(
            request_id,
            model,
            method,
            path,
            headers,
            remote_ip,
            dict(metadata) if metadata else _EMPTY,
            cancel,
            self._wall_ns(),
            self._clock(),
        )
        self._enqueue(request_id)
        return request_id

    def response_started(self, request_id: int, headers: Mapping[str, str]) -> None:
        """The response headers were written (kept by reference, redacted when shown)."""
        entry = self._entries.get(request_id)
        if entry is not None:
            entry.resp_headers = headers
            self._enqueue(request_id)

    def add_bytes(self, request_id: int, count: int) -> None:
        """``count`` more body bytes were written; throttled upsert when someone listens."""
        entry = self._entries.get(request_id)
        if entry is None:
            return
        entry.resp_bytes += count
        if entry.timer is not None or not self._sink.has_subscribers:
            return
        now = self._clock()
        wait = entry.next_bytes_at - now
        if wait <= 0:
            entry.next_bytes_at = now + self._throttle
            self._enqueue(request_id)
        else:
            entry.timer = self._call_later(wait, functools.partial(self._trailing, entry))

    def end(self, request_id: int) -> None:
        """The request is over (whatever the outcome): forget it and publish ``remove``."""
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._enqueue(request_id)

    # --- control and views ----------------------------------------------------------

    def cancel(self, request_id: int) -> bool:
        """Cancel that request's handler; False if no such request is in flight."""
        entry = self._entries.get(request_id)
        if entry is None:
            return False
        try:
            entry.cancel()
        except Exception:
            log.exception("cancelling in-flight request %d failed", request_id)
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        """Every in-flight entry (spec §15 JSON), oldest first, ``elapsed_ms`` as of now."""
        now = self._clock()
        return [self._entry_json(entry, now) for entry in self._entries.values()]

    def snapshot_event(self) -> dict[str, Any]:
        """The ``inflight`` snapshot payload (``requests`` omitted when empty, as in Go)."""
        requests = self.snapshot()
        self._shown.update(self._entries)  # a client now knows them: their removes must follow
        event: dict[str, Any] = {"operation": "snapshot"}
        if requests:
            event["requests"] = requests
        return event

    # --- publishing -----------------------------------------------------------------

    def _trailing(self, entry: _Entry) -> None:
        entry.timer = None
        if entry.id in self._entries:
            entry.next_bytes_at = self._clock() + self._throttle
            self._enqueue(entry.id)

    def _enqueue(self, request_id: int) -> None:
        if not self._sink.has_subscribers:
            if self._shown:
                self._shown.clear()  # nobody left who saw them; a later client gets a snapshot
            return
        if not self._snapshot_due:
            if request_id in self._outbox or len(self._outbox) < self._outbox_size:
                self._outbox[request_id] = None
            else:
                self._outbox.clear()
                self._snapshot_due = True
                self.overflows += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._defer(self.flush)

    def flush(self) -> None:
        """Publish what the outbox holds (runs as a loop callback, off the request path)."""
        self._flush_scheduled = False
        if self._snapshot_due:
            self._snapshot_due = False
            self._outbox.clear()
            self._shown.clear()  # the snapshot replaces what every client had
            self._sink.publish("inflight", self.snapshot_event())
            return
        now = self._clock()
        outbox, self._outbox = self._outbox, {}
        shown = self._shown
        for request_id in outbox:
            entry = self._entries.get(request_id)
            if entry is not None:
                request = self._entry_json(entry, now)
                self._sink.publish("inflight", {"operation": "upsert", "request": request})
                shown.add(request_id)
            elif request_id in shown:  # ended; never shown: began and ended since the last flush
                shown.discard(request_id)
                self._sink.publish("inflight", {"operation": "remove", "id": str(request_id)})

    def _entry_json(self, entry: _Entry, now: float) -> dict[str, Any]:
        if entry.timestamp is None:
            entry.timestamp = rfc3339_nano(entry.started_ns)
            entry.shown_headers = redact_headers(entry.headers)
        shown: dict[str, Any] = {
            "id": str(entry.id),
            "timestamp": entry.timestamp,
            "model": entry.model,
            "req_path": entry.path,
            "method": entry.method,
            "req_headers": entry.shown_headers,
            "remote_ip": entry.remote_ip,
            "resp_headers": redact_headers(entry.resp_headers),
            "resp_bytes": entry.resp_bytes,
            "elapsed_ms": int((now - entry.started) * 1000),
        }
        if entry.metadata:
            shown["metadata"] = dict(entry.metadata)
        return shown


INFLIGHT: web.AppKey[InflightTracker] = web.AppKey("inflight", InflightTracker)
