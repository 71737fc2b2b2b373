"""One spawned upstream: an OS process leading its own process group.

Why not :func:`asyncio.create_subprocess_exec`: its ``Process.wait()`` returns
only once the child has exited *and* its stdout/stderr pipes are closed, so a
grandchild that inherited the pipes (a wrapper script's background job) hangs
every wait. llama-swap needed a pipe backstop for the same reason (router.md
§2.5 step 4). Here the two are separate facts:

* **exit** is observed through a pidfd registered with the event loop (a thread
  waiting in ``waitpid`` when pidfds are unavailable), which reaps the child;
* **pipes** are read by asyncio read-pipe transports that hand every chunk to
  the output callback, and can be force-closed after a backstop.

The child never runs through a shell and always starts a new session, so one
``killpg`` reaches it and everything it forked that stayed in its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

import psutil

log = logging.getLogger("modelswap.process")

OutputCallback = Callable[[bytes], None]


class _PipeReader(asyncio.Protocol):
    """Forwards one pipe's chunks to the output callback; resolves ``closed`` at EOF."""

    def __init__(self, on_output: OutputCallback, closed: asyncio.Future[None]) -> None:
        self._on_output = on_output
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        self._on_output(data)

    def eof_received(self) -> bool | None:
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


class Child:
    """A running (or exited) child process. Create it with :meth:`spawn`."""

    def __init__(self, popen: subprocess.Popen[bytes], on_exit: Callable[[Child], None]) -> None:
        self._popen = popen
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._pipes_closed: list[asyncio.Future[None]] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._pidfd: int | None = None

    def __repr__(self) -> str:
        return f"<Child pid={self.pid} returncode={self.returncode}>"

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        on_output: OutputCallback,
        on_exit: Callable[[Child], None],
    ) -> Child:
        """Start ``argv`` (no shell) as leader of a new session with piped output.

        OSError from the exec propagates for the caller to word. ``on_exit`` is
        called once, from the event loop, after the child has been reaped.
        """
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
        child = cls(popen, on_exit)
        try:
            await child._connect_pipes(on_output)
            child._watch_exit()
        except BaseException:
            child.kill_now()
            raise
        return child

    async def _connect_pipes(self, on_output: OutputCallback) -> None:
        for pipe in (self._popen.stdout, self._popen.stderr):
            assert pipe is not None
            closed: asyncio.Future[None] = self._loop.create_future()
            transport, _ = await self._loop.connect_read_pipe(
                lambda closed=closed: _PipeReader(on_output, closed),  # type: ignore[misc]
                pipe,
            )
            self._pipes_closed.append(closed)
            self._transports.append(transport)

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
            self._loop.add_reader(self._pidfd, self._on_pidfd_readable)
        except (AttributeError, OSError, NotImplementedError):
            # No pidfd (old kernel, non-Linux) or the loop cannot watch it: a
            # thread blocked in waitpid does the same job.
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            waiting = self._loop.run_in_executor(None, self._popen.wait)
            waiting.add_done_callback(lambda _: self._reaped())

    def _on_pidfd_readable(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._popen.wait()  # exited already (the pidfd said so): this reaps at once
        self._reaped()

    def _reaped(self) -> None:
        if self.exited.done():
            return
        returncode = self._popen.returncode
        self.exited.set_result(returncode if returncode is not None else -1)
        try:
            self._on_exit(self)
        except Exception:
            log.exception("exit callback for %r failed", self)

    # --- facts -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit code once reaped (negative: killed by that signal); None while running."""
        return self.exited.result() if self.exited.done() else None

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def descendants(self) -> list[psutil.Process]:
        """Everything the child forked that is still linked to it (best effort)."""
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []

    # --- actions ------------------------------------------------------------------

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's process group; False if nobody was there.

        Falls back to the child alone if the group cannot be signalled. Once the
        child is reaped its pid may be reused, so then only the group (which
        cannot be reused while any member lives) is tried.
        """
        try:
            os.killpg(self.pid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            if not self.alive:
                return False
            try:
                os.kill(self.pid, sig)
                return True
            except ProcessLookupError:
                return False

    async def wait_exit(self) -> int:
        """The exit code, once the child has exited and been reaped."""
        return await asyncio.shield(self.exited)

    async def wait_pipes_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for EOF on both pipes; False if they stayed open."""
        pending = [f for f in self._pipes_closed if not f.done()]
        if not pending:
            return True
        done, _ = await asyncio.wait(pending, timeout=timeout)
        return len(done) == len(pending)

    def close_pipes(self) -> None:
        """Force both pipes closed (a grandchild may still hold their write ends)."""
        for transport in self._transports:
            transport.close()

    def kill_now(self) -> None:
        """Synchronous last resort (cancellation, bugs): SIGKILL the group, reap, close."""
        self.signal_group(signal.SIGKILL)
        if self._pidfd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        with contextlib.suppress(Exception):
            self._popen.wait(timeout=5)  # SIGKILL cannot be ignored: this is quick
        self.close_pipes()
        if not self._transports:  # the pipes were never handed to transports
            for pipe in (self._popen.stdout, self._popen.stderr):
                if pipe is not None:
                    pipe.close()
        self._reaped()
