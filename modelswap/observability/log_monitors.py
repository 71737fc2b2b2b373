"""The app's three log monitors — proxy, upstream, mux — and stdout (server spec §19).

* ``proxy``: modelswap's own lines (fed by :class:`~.proxy_log.ProxyLogHandler`);
* ``upstream``: the raw stdout/stderr of every model process (each process's own
  :class:`~.log_fanout.LogFanout` has this one's ``write`` as its sink);
* ``mux``: what goes to stdout, per ``logToStdout`` — ``proxy`` (the default),
  ``upstream``, ``both`` or ``none``.

Each is a :class:`~.log_fanout.LogFanout` with 100 KiB of history; ``proxy`` and
``upstream`` keep theirs whatever ``logToStdout`` says (they also feed
``/api/events``). Routing is decided once, here, by which fan-out gets which
sink: nothing on the per-line path tests the mode.

stdout is written by :class:`StdoutPump`'s daemon thread through a bounded
queue, so a stalled stdout (a pipe nobody reads) costs dropped lines, never a
blocked event loop or a blocked model: the loop only enqueues.

:class:`LogMonitors` also keeps the live ``/logs/stream`` connections
(:meth:`LogMonitors.open_stream`), so the app's shutdown can end them at once
instead of letting them hold the HTTP drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from modelswap.config import Config
from modelswap.observability.log_fanout import (
    HISTORY_BYTES,
    LogFanout,
    LogSubscription,
    dropped_marker,
)
from modelswap.observability.proxy_log import ProxyLogHandler, attach_handler, detach_handler

log = logging.getLogger("modelswap.observability")

LOG_TO_STDOUT_MODES = ("proxy", "upstream", "both", "none")
STDOUT_QUEUE_BYTES = 4 * 1024 * 1024
"""How much stdout output may wait for a slow stdout before lines are dropped."""
STDOUT_FLUSH_SECONDS = 2.0
"""On cleanup, how long the app waits for queued stdout output to be written."""

Writer = Callable[[bytes], None]


def fd_writer(fd: int) -> Writer:
    """Write all of ``data`` to ``fd`` with ``os.write``.

    Not through ``sys.stdout.buffer``: a thread blocked inside a buffered
    writer holds its lock, and the interpreter aborts at exit when it cannot
    flush ``sys.stdout``. ``os.write`` holds no Python-level lock.
    """

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def stdout_fd() -> int:
    """The file descriptor behind ``sys.stdout`` (1 when it has none, e.g. under capture)."""
    try:
        return sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return 1


HANDOVER_SECONDS = 0.01
"""Lines written within this window reach the stdout thread as one batch."""


class StdoutPump:
    """Bytes to a blocking writer from a daemon thread; ``write`` never blocks.

    The queue is bounded in bytes (counted as put by the producer and taken by
    the thread, each counter with a single writer, so no lock is needed). When
    a chunk does not fit it is dropped and counted; the next chunk that fits
    is preceded by a ``— N bytes dropped —`` marker. A writer that fails
    (stdout closed) ends the output; later chunks are discarded.
    """

    def __init__(
        self, writer: Writer, *, max_bytes: int = STDOUT_QUEUE_BYTES, handover: float = 0.0
    ) -> None:
        self._writer = writer
        self._handover_seconds = handover
        self._max_bytes = max_bytes
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._put = 0  # producer only
        self._taken = 0  # thread only
        self._unreported = 0
        self.dropped_bytes = 0
        self.dropped_chunks = 0
        self.failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._finished = threading.Event()
        self._done: list[Callable[[], None]] = []
        self._pending: list[bytes] = []  # written on the loop, handed over in one piece
        self._handover: asyncio.TimerHandle | None = None

    @classmethod
    def to_stdout(cls, *, max_bytes: int = STDOUT_QUEUE_BYTES) -> StdoutPump:
        """The process's stdout, with lines batched per :data:`HANDOVER_SECONDS`."""
        return cls(fd_writer(stdout_fd()), max_bytes=max_bytes, handover=HANDOVER_SECONDS)

    def __repr__(self) -> str:
        return (
            f"<StdoutPump pending={self.pending_bytes}B dropped={self.dropped_bytes}B"
            f"{' closed' if self._closed else ''}>"
        )

    @property
    def pending_bytes(self) -> int:
        """Bytes queued or being written."""
        return self._put - self._taken

    def write(self, data: bytes) -> None:
        """Queue ``data`` for stdout, or drop and count it if the queue is full."""
        if self._closed or not data:
            return
        if self._put - self._taken + len(data) > self._max_bytes:
            self.dropped_bytes += len(data)
            self.dropped_chunks += 1
            self._unreported += len(data)
            return
        if self._thread is None:
            self._start()
        if self._unreported:
            self._enqueue(dropped_marker(self._unreported))
            self._unreported = 0
        self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        """Count ``data`` as queued; hand it to the thread now, or with what follows soon.

        With a ``handover`` window and an event loop, lines written within the
        window go to the thread together: one wake-up (and one ``write``) per
        batch instead of per line, which is most of what a log line would
        otherwise cost a request.
        """
        self._put += len(data)
        self._pending.append(data)
        if self._handover is not None:
            return
        try:
            loop = asyncio.get_running_loop() if self._handover_seconds > 0 else None
        except RuntimeError:  # no loop (startup): hand over at once
            loop = None
        if loop is None:
            self._hand_over()
            return
        self._handover = loop.call_later(self._handover_seconds, self._hand_over)

    def _hand_over(self) -> None:
        self._handover = None
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._queue.put(data)

    def _start(self) -> None:
        with contextlib.suppress(Exception):  # no or closed sys.stdout: nothing to flush
            sys.stdout.flush()  # what print() left buffered goes first
        self._thread = threading.Thread(target=self._run, name="modelswap-stdout", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                batch = [item]
                while True:  # write what piled up in one call
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)
                        break
                    batch.append(more)
                data = b"".join(batch)
                if self.failed is None:
                    try:
                        self._writer(data)
                    except Exception as error:  # stdout closed: stop writing, keep draining
                        self.failed = error
                self._taken += len(data)
        finally:
            self._finished.set()  # before the callbacks: see aclose()
            for callback in self._done:
                callback()

    def close(self) -> None:
        """Stop accepting; the thread writes what is queued, then ends."""
        if not self._closed:
            self._closed = True
            if self._handover is not None:
                self._handover.cancel()
            self._hand_over()
            if self._thread is not None:
                self._queue.put(None)

    async def aclose(self, timeout: float = STDOUT_FLUSH_SECONDS) -> bool:
        """:meth:`close`, then wait up to ``timeout`` for the queue to be written.

        Returns whether it was (False: stdout is stalled; the daemon thread is
        abandoned with what it holds).
        """
        thread = self._thread
        if thread is None or self._finished.is_set():
            self.close()
            return True
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def settle() -> None:
            if not finished.done():
                finished.set_result(None)

        def done() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle)

        self._done.append(done)
        self.close()
        if self._finished.is_set():  # it may have run the callbacks before ours was added
            return True
        try:
            async with asyncio.timeout(timeout):
                await finished
        except TimeoutError:
            return False
        return True


@dataclass(eq=False)
class LogStream:
    """One live ``/logs/stream`` connection, as shutdown needs to see it."""

    subscription: LogSubscription
    abort: Callable[[], None]
    """Cut the connection (its writer is stalled on a client that does not read)."""
    writing: bool = False
    ended: bool = False


class LogMonitors:
    """The app's proxy, upstream and mux monitors, routed per ``logToStdout``."""

    def __init__(
        self,
        log_to_stdout: str = "proxy",
        *,
        stdout: StdoutPump | None = None,
        history_bytes: int = HISTORY_BYTES,
    ) -> None:
        mode = log_to_stdout.strip().lower()
        if mode not in LOG_TO_STDOUT_MODES:
            raise ValueError(f"logToStdout must be one of: {', '.join(LOG_TO_STDOUT_MODES)}")
        self.mode = mode
        self.stdout = stdout if mode != "none" else None
        mux_sink = self.stdout.write if self.stdout is not None else None
        self.mux = LogFanout("mux", history_bytes=history_bytes, sink=mux_sink)
        into_mux = self.mux.write if mode != "none" else None
        self.proxy = LogFanout(
            "proxy",
            history_bytes=history_bytes,
            sink=into_mux if mode in ("proxy", "both") else None,
        )
        self.upstream = LogFanout(
            "upstream",
            history_bytes=history_bytes,
            sink=into_mux if mode in ("upstream", "both") else None,
        )
        self._streams: set[LogStream] = set()
        self._closing = False

    def __repr__(self) -> str:
        return (
            f"<LogMonitors logToStdout={self.mode} streams={len(self._streams)} "
            f"proxy={self.proxy.bytes_written}B upstream={self.upstream.bytes_written}B "
            f"mux={self.mux.bytes_written}B>"
        )

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def open_stream(
        self,
        fanout: LogFanout,
        abort: Callable[[], None],
        *,
        with_history: bool,
        queue_entries: int,
    ) -> LogStream:
        """Subscribe a ``/logs/stream`` connection to ``fanout`` until :meth:`end_stream`.

        Once the app is shutting down the stream gets its history only.
        """
        subscription = fanout.subscribe(with_history=with_history, queue_entries=queue_entries)
        stream = LogStream(subscription, abort)
        if self._closing:
            stream.ended = True
            subscription.close()
        else:
            self._streams.add(stream)
        return stream

    def end_stream(self, stream: LogStream) -> None:
        stream.subscription.close()
        self._streams.discard(stream)

    def close_streams(self) -> None:
        """End every live stream (app shutdown): idle ones finish, stalled ones are cut."""
        self._closing = True
        for stream in list(self._streams):
            stream.ended = True
            stream.subscription.close()
            if stream.writing:
                stream.abort()
        self._streams.clear()

    async def aclose(self) -> None:
        """End the streams, then give stdout a bounded moment to write what is queued."""
        self.close_streams()
        if self.stdout is not None:
            await self.stdout.aclose()


LOG_MONITORS: web.AppKey[LogMonitors] = web.AppKey("log_monitors", LogMonitors)


def setup_log_monitors(
    app: web.Application, config: Config, *, stdout: StdoutPump | None = None
) -> LogMonitors:
    """Create the app's monitors (``app[LOG_MONITORS]``) and tie them to its life.

    On startup the proxy handler is attached to the ``modelswap`` logger; on
    shutdown (before HTTP drains) the log streams end; on cleanup the handler
    is detached and stdout flushed. Call it before other cleanup contexts are
    added, so the router's shutdown lines still reach the monitors.
    ``stdout`` defaults to a pump writing to this process's stdout.
    """
    if stdout is None and config.log_to_stdout.strip().lower() != "none":
        stdout = StdoutPump.to_stdout()
    monitors = LogMonitors(config.log_to_stdout, stdout=stdout)
    handler = ProxyLogHandler(
        monitors.proxy.write, level=config.log_level, time_format=config.log_time_format
    )
    app[LOG_MONITORS] = monitors

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        handler.bind_loop(asyncio.get_running_loop())
        attach_handler(handler)
        try:
            yield
        finally:
            detach_handler(handler)
            handler.bind_loop(None)
            await monitors.aclose()

    async def on_shutdown(app: web.Application) -> None:
        monitors.close_streams()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return monitors
