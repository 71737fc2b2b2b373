"""The ``/api/events`` message bus: publish once, fan out to bounded per-client queues.

Server spec §14. Every observer that has something to show the UI — process
states, log chunks, in-flight requests, activity rows — calls
:meth:`EventsHub.publish` synchronously from the event loop. The hub encodes
the message **once**, in llama-swap's wire format::

    event:message
    data:{"type":"<type>","data":"<JSON document as a string>"}

(no space after the colons, ``data`` double-encoded), and offers the same
bytes to every subscriber. Subscribers are woken once per :data:`SEND_WINDOW`
(not once per message), so a client gets one write per window however many
events its requests made — with the UI open, a request publishes several
(in-flight changes, ``activity``, ``metrics``, its access line), and one
write each cost more than the events themselves (BENCHMARKS.md, "With the UI
open"). Producers that coalesce their updates (the in-flight tracker) run
just before each send (:meth:`EventsHub.before_send`). Each subscriber (one per open ``/api/events``
connection) has its own queue of at most 1024 messages: a client that does not
keep up loses messages — counted, and logged once per overflow — and never
slows the publisher or the other clients. With nobody subscribed,
:meth:`EventsHub.publish` returns before serialising anything, so observers
cost nothing while no UI is open.

:meth:`EventsHub.close` ends every stream: it runs when the app shuts down,
*before* aiohttp drains open requests, so an open event stream never holds up
shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from json.encoder import encode_basestring
from types import TracebackType
from typing import Any

from aiohttp import web

log = logging.getLogger("modelswap.observability")

__all__ = [
    "EVENTS_HUB",
    "QUEUE_MESSAGES",
    "SEND_WINDOW",
    "EventSubscription",
    "EventsHub",
    "encode_event",
]

QUEUE_MESSAGES = 1024
"""Messages one ``/api/events`` connection may have waiting (spec §14)."""
SEND_WINDOW = 0.1
"""Seconds from the first message published to the subscribers being woken (one write each)."""

_COMPACT = (",", ":")
_ENCODER = json.JSONEncoder(separators=_COMPACT, ensure_ascii=False)
"""Made once: ``json.dumps`` with any non-default option builds a new encoder per call."""
_quote = encode_basestring
"""A JSON string literal (what ``json.dumps`` of a ``str`` gives, without its per-call set-up)."""


def encode_event(event_type: str, data: object) -> bytes:
    """One SSE message in llama-swap's format (``data`` is JSON inside a JSON string).

    Non-ASCII text is kept as UTF-8 rather than ``\\u`` escapes, as Go's
    encoder does; Go additionally escapes ``<``, ``>`` and ``&``, which any
    JSON parser reads back identically, so that difference is not copied.
    """
    inner = _ENCODER.encode(data)
    # ``inner`` is JSON text: no raw control characters (they are escaped inside its
    # strings), so quoting it needs only ``\`` and ``"`` escaped — two C-speed
    # replaces instead of the encoder's per-character loop (a third of an
    # ``activity`` row's publishing cost).
    quoted = inner.replace("\\", "\\\\").replace('"', '\\"')
    envelope = f'{{"type":{_quote(event_type)},"data":"{quoted}"}}'
    return b"event:message\ndata:" + envelope.encode() + b"\n\n"


class EventSubscription:
    """One client's view of the hub: an async iterator of encoded messages.

    Use it as a context manager so it is always unsubscribed. Iteration ends
    after :meth:`close` (or the hub's ``close()``) once the queued messages
    have been read — unless the hub closed it, in which case what is still
    queued is dropped (the server is going away).
    """

    def __init__(self, hub: EventsHub, max_messages: int, metrics: bool = True) -> None:
        self._hub = hub
        self._max = max_messages
        self.metrics = metrics
        """Whether this client gets ``metrics`` events (see :meth:`EventsHub.subscribe`)."""
        self._queue: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Messages lost because this subscriber's queue was full."""
        self._overflowing = False

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<EventSubscription queued={len(self._queue)} dropped={self.dropped}{state}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, message: bytes) -> bool:
        """Queue ``message``, or count it as dropped and return False (called by the hub)."""
        if len(self._queue) < self._max:
            self._queue.append(message)
            self._overflowing = False
            return True
        self.dropped += 1
        if not self._overflowing:  # log once per overflow, not once per message
            self._overflowing = True
            log.warning("event stream client too slow: dropping messages (%d)", self.dropped)
        return False

    def _wake(self) -> None:
        """Messages are waiting: wake the reader (the hub calls it once per send window)."""
        if self._queue:
            self._wakeup.set()

    def get_nowait(self) -> list[bytes]:
        """Every queued message, oldest first (empty if none)."""
        messages = list(self._queue)
        self._queue.clear()
        return messages

    async def wait_messages(self) -> list[bytes]:
        """Wait for the hub's next send; every queued message is returned. [] once closed.

        Messages queued since the last call wait for the send too (they are
        not returned at once), so a reader busy writing still writes once
        per send window.
        """
        wakeup = self._wakeup
        while True:
            if wakeup.is_set() or self._closed:
                wakeup.clear()
                if self._queue:
                    return self.get_nowait()
                if self._closed:
                    return []
            await wakeup.wait()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while messages := await self.wait_messages():
            for message in messages:
                yield message

    def close(self) -> None:
        """Unsubscribe; queued messages can still be read, then iteration ends."""
        if not self._closed:
            self._closed = True
            self._hub._unsubscribe(self)
            self._wakeup.set()

    def _end(self) -> None:
        """Closed by the hub: nothing more is delivered, not even what is queued."""
        self._queue.clear()
        self.close()

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventsHub:
    """Encode-once fan-out of ``/api/events`` messages to bounded subscriber queues."""

    def __init__(
        self, *, queue_messages: int = QUEUE_MESSAGES, send_window: float = SEND_WINDOW
    ) -> None:
        if queue_messages < 1:
            raise ValueError("queue_messages must be >= 1")
        self._queue_messages = queue_messages
        self._send_window = send_window
        self._send_timer: asyncio.TimerHandle | None = None
        self._before_send: list[Callable[[], None]] = []
        self._subscribers: list[EventSubscription] = []
        self._closed = False
        self.published = 0
        """Messages encoded and offered to at least one subscriber."""
        self.dropped = 0
        """Deliveries lost to full subscriber queues, over the hub's life."""

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<EventsHub subscribers={len(self._subscribers)} published={self.published}"
            f" dropped={self.dropped}{state}>"
        )

    @property
    def has_subscribers(self) -> bool:
        """Whether anyone listens; observers may skip building a payload when not."""
        return bool(self._subscribers)

    @property
    def wants_metrics(self) -> bool:
        """Whether any subscriber gets ``metrics`` events (so a row must be made to publish)."""
        return any(subscriber.metrics for subscriber in self._subscribers)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, event_type: str, data: object) -> None:
        """Offer one message to every subscriber. Synchronous; never blocks; free when unheard."""
        if not self._subscribers:
            return
        message = encode_event(event_type, data)
        self.published += 1
        rows_only = event_type == "metrics"
        for subscriber in self._subscribers:
            if rows_only and not subscriber.metrics:
                continue
            if not subscriber._offer(message):
                self.dropped += 1
        if self._send_timer is None:
            self._schedule_send()

    def before_send(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` just before the next send (it may publish); a send is scheduled.

        For producers that fold many updates into the current state (the
        in-flight tracker): what they publish then is as fresh as it can be
        and reaches the clients in the same write.
        """
        if self._closed:  # no send will come: run it now (it publishes to nobody)
            callback()
            return
        self._before_send.append(callback)
        if self._send_timer is None:
            self._schedule_send()

    def _schedule_send(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): send now
            self._send()
            return
        self._send_timer = loop.call_later(self._send_window, self._send)

    def _send(self) -> None:
        """Run the before-send callbacks, then wake every subscriber with messages waiting."""
        while self._before_send:
            callbacks, self._before_send = self._before_send, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("events producer failed")
        self._send_timer = None
        for subscriber in self._subscribers:
            subscriber._wake()

    def publish_activity(self, row_id: int, row: dict[str, Any] | None) -> None:
        """An activity row was stored: ``activity`` ``{"id": …}``, then ``metrics`` ``[row]``.

        The ``metrics`` event carries the full row for older llama-swap UIs,
        which read rows from it instead of fetching them by id; it goes only
        to subscribers that want it (``row`` None: none do, or no such row).
        """
        if not self._subscribers:
            return
        self.publish("activity", {"id": row_id})
        if row is not None:
            self.publish("metrics", [row])

    def subscribe(self, *, metrics: bool = True) -> EventSubscription:
        """A new subscriber; already closed (empty) if the hub is closed.

        ``metrics=False``: no ``metrics`` events. Neither the spec nor
        llama-swap has them (modelswap sends them for older llama-swap UIs),
        and making each row at once only to show it in one is most of what a
        listener costs per request (BENCHMARKS.md, "With the UI open"); the web
        UI connects without them (``/api/events?metrics=0``).
        """
        subscription = EventSubscription(self, self._queue_messages, metrics)
        if self._closed:
            subscription._closed = True
        else:
            self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: EventSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def close(self) -> None:
        """End every stream now; later subscriptions start closed. Idempotent."""
        self._closed = True
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self._before_send.clear()
        for subscription in list(self._subscribers):
            subscription._end()


EVENTS_HUB: web.AppKey[EventsHub] = web.AppKey("events_hub", EventsHub)
