"""One upstream's output: a bounded history plus live fan-out to subscribers.

Spec router.md §2.11. The child's stdout/stderr arrive here chunk by chunk from
the event loop (:meth:`LogFanout.write` is synchronous and never blocks), and
go to three places:

* a **history** ring buffer holding the last ``history_bytes`` (100 KiB), so a
  late reader (``GET /logs/<model>``) still sees why a model failed to load;
* every **live subscriber**, each through its own bounded queue of
  ``queue_entries`` (1024) chunks. A subscriber that does not keep up loses
  data, never the child: when its queue is full the chunk is counted instead
  of queued, and a ``— N bytes dropped —`` marker takes its place in that
  subscriber's stream. History and the other subscribers are unaffected;
* a shared **sink** callable (the "upstream" log that reaches stdout when
  ``logToStdout`` says so), called with every chunk.

Why a queue per subscriber instead of one shared buffer with cursors: a slow
reader must only hurt itself, and per-subscriber queues make the drop
accounting (and the marker) local and obvious.

The object is kept for the whole life of a process, across child restarts, so
history spans restarts like llama-swap's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType

log = logging.getLogger("modelswap.observability")

HISTORY_BYTES = 100 * 1024
QUEUE_ENTRIES = 1024

LogSink = Callable[[bytes], None]


def dropped_marker(n_bytes: int) -> bytes:
    """The text a slow subscriber sees in place of what it missed."""
    return f"\n— {n_bytes} bytes dropped —\n".encode()  # spec §19: on a line of its own


class LogSubscription:
    """A live view of a :class:`LogFanout`: an async iterator of byte chunks.

    Use it as a context manager so it is always unsubscribed::

        with fanout.subscribe(with_history=True) as sub:
            async for chunk in sub:
                ...

    Iteration ends after :meth:`close` (or the fan-out's ``close()``) once the
    queued chunks have been read.
    """

    def __init__(self, fanout: LogFanout, max_entries: int) -> None:
        self._fanout = fanout
        self._max_entries = max_entries
        self._queue: deque[bytes] = deque()
        self._dropped = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return (
            f"<LogSubscription queued={len(self._queue)} dropped={self._dropped}"
            f"{' closed' if self._closed else ''}>"
        )

    @property
    def dropped_bytes(self) -> int:
        """Bytes dropped since the last marker was handed out."""
        return self._dropped

    def _offer(self, data: bytes) -> None:
        """Queue ``data`` or count it as dropped; called by the fan-out only."""
        if self._closed:
            return
        if self._dropped and len(self._queue) < self._max_entries:
            self._queue.append(dropped_marker(self._dropped))
            self._dropped = 0
        if len(self._queue) < self._max_entries:
            self._queue.append(data)
        else:
            self._dropped += len(data)
        self._wakeup.set()

    def get_nowait(self) -> bytes | None:
        """The next chunk (or drop marker), or None if nothing is waiting."""
        if self._queue:
            return self._queue.popleft()
        if self._dropped:
            # The queue drained and nothing new arrived since the drop: the
            # reader must still learn that it missed data.
            marker = dropped_marker(self._dropped)
            self._dropped = 0
            return marker
        return None

    async def wait_chunk(self) -> bytes | None:
        """Wait for the next chunk; None once the subscription is closed and drained."""
        while True:
            chunk = self.get_nowait()
            if chunk is not None:
                return chunk
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (chunk := await self.wait_chunk()) is not None:
            yield chunk

    def close(self) -> None:
        """Unsubscribe; queued chunks can still be read, then iteration ends."""
        if not self._closed:
            self._closed = True
            self._fanout._unsubscribe(self)
            self._wakeup.set()

    def __enter__(self) -> LogSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LogFanout:
    """History ring buffer + live subscribers + shared sink for one model's output."""

    def __init__(
        self,
        name: str = "",
        *,
        history_bytes: int = HISTORY_BYTES,
        queue_entries: int = QUEUE_ENTRIES,
        sink: LogSink | None = None,
    ) -> None:
        if history_bytes < 0 or queue_entries < 1:
            raise ValueError("history_bytes must be >= 0 and queue_entries >= 1")
        self.name = name
        self._history_bytes = history_bytes
        self._queue_entries = queue_entries
        self._sink = sink
        self._history: bytearray | None = None  # allocated on first write, as spec'd
        self._subscribers: list[LogSubscription] = []
        self._written = 0

    def __repr__(self) -> str:
        return (
            f"<LogFanout {self.name!r} history={len(self._history or b'')}B "
            f"subscribers={len(self._subscribers)} written={self._written}B>"
        )

    @property
    def bytes_written(self) -> int:
        """Total bytes ever written (history keeps only the tail)."""
        return self._written

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def write(self, data: bytes) -> None:
        """Record ``data`` everywhere. Synchronous and O(len + subscribers): never blocks."""
        if not data:
            return
        self._written += len(data)
        if self._history_bytes:
            if self._history is None:
                self._history = bytearray()
            history = self._history
            history += data
            excess = len(history) - self._history_bytes
            if excess > 0:
                del history[:excess]
        for subscriber in self._subscribers:
            subscriber._offer(data)
        if self._sink is not None:
            try:
                self._sink(data)
            except Exception:  # a broken sink must not break the child's output
                log.exception("log sink for %r failed; disabling it", self.name)
                self._sink = None

    def history(self) -> bytes:
        """The last ``history_bytes`` written (a copy)."""
        return bytes(self._history or b"")

    def subscribe(
        self, *, with_history: bool = False, queue_entries: int | None = None
    ) -> LogSubscription:
        """A new live subscriber; ``with_history`` queues the history first.

        History and subscription are taken in one synchronous step, so the
        subscriber sees every byte exactly once, with no gap and no overlap.
        ``queue_entries`` overrides the fan-out's per-subscriber bound.
        """
        bound = self._queue_entries if queue_entries is None else queue_entries
        if bound < 1:
            raise ValueError("queue_entries must be >= 1")
        subscription = LogSubscription(self, bound)
        if with_history and self._history:
            subscription._offer(bytes(self._history))
        self._subscribers.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: LogSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def close(self) -> None:
        """End every live subscription (history stays readable)."""
        for subscription in list(self._subscribers):
            subscription.close()
