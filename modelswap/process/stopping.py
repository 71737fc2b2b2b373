"""The kill procedure: graceful stop → grace period → SIGKILL the group → reap → pipes.

Spec router.md §2.5. :func:`terminate` is the only way a child is stopped, for
every reason (unload, TTL, eviction, failed start, abort, teardown); only the
grace period differs, and the caller picks it.

The procedure, and why each step is there:

1. **Graceful signal, asynchronously.** ``cmdStop`` (with ``${PID}``) runs as
   its own task in its own process group with the child's environment, so a
   slow or hanging stop command cannot eat into or extend the grace window.
   Without ``cmdStop`` — or when it cannot be parsed or spawned — SIGTERM goes
   to the child's whole process group.
2. **Grace.** Wait up to ``grace`` seconds, counted from the signal, for the
   child *and* every descendant seen before signalling. The descendants are
   snapshotted first because once a wrapper script dies its background job is
   re-parented and can no longer be found through it.
3. **Force.** SIGKILL the group and every surviving descendant (including ones
   that escaped into another group or session).
4. **Reap, then pipes.** Wait for the exit (the child's own pidfd), then give
   the stdout/stderr pipes ``pipe_backstop`` seconds to reach EOF before
   closing them by force: a grandchild that escaped and still holds them must
   not hang the stop.

Exits are awaited through pidfds (the kernel tells us), not by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence

import psutil

from modelswap.process.child import Child

log = logging.getLogger("modelswap.process")

#: Re-check interval used only where pidfds are unavailable.
_FALLBACK_POLL = 0.01


async def terminate(
    child: Child,
    *,
    grace: float,
    stop_argv: Sequence[str] | None,
    env: Mapping[str, str],
    pipe_backstop: float,
    name: str,
) -> None:
    """Stop ``child`` and everything it started; return once all of it is gone.

    Safe to call on a child that already exited (it then only sweeps the
    group and drains the pipes). Never raises for "already gone".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, grace)
    descendants = child.descendants()
    stopper: asyncio.Task[None] | None = None
    if child.alive:
        if stop_argv:
            stopper = asyncio.create_task(_run_stop_command(stop_argv, env, child, name))
        else:
            child.signal_group(signal.SIGTERM)
    try:
        remaining = max(0.0, deadline - loop.time())
        if not await _wait_all_gone(child, descendants, remaining):
            log.info("<%s> still running after %.3gs grace; sending SIGKILL", name, grace)
        # Unconditional: also catches group members forked after the snapshot.
        child.signal_group(signal.SIGKILL)
        _kill_all(descendants)
        returncode = await child.wait_exit()
        log.debug("<%s> child pid %d exited with %s", name, child.pid, returncode)
    finally:
        if stopper is not None and not stopper.done():
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
    if not await child.wait_pipes_closed(pipe_backstop):
        log.warning(
            "<%s> output pipes still open %.3gs after exit; closing them", name, pipe_backstop
        )
    child.close_pipes()


async def _run_stop_command(
    argv: Sequence[str], env: Mapping[str, str], child: Child, name: str
) -> None:
    """Run ``cmdStop``; failures are logged, and a command that cannot even be
    spawned falls back to SIGTERM so the grace period is not wasted."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,  # spec: cmdStop output is not captured
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("<%s> cmdStop %r failed to start: %s; sending SIGTERM", name, argv[0], exc)
        child.signal_group(signal.SIGTERM)
        return
    try:
        returncode = await proc.wait()
    except asyncio.CancelledError:
        # The child is gone but the stop command still runs: end it, and its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.shield(proc.wait())
        raise
    if returncode != 0:
        log.warning("<%s> cmdStop exited with code %d", name, returncode)


async def _wait_all_gone(child: Child, others: Sequence[psutil.Process], timeout: float) -> bool:
    """Wait up to ``timeout`` for ``child`` and ``others`` to exit; True if they all did."""
    waits: list[asyncio.Future[object]] = [asyncio.ensure_future(child.wait_exit())]
    watchers: list[_PidWatch] = []
    for proc in others:
        watch = _PidWatch.open(proc)
        if watch is not None:
            watchers.append(watch)
            waits.append(watch.gone)
    try:
        _, pending = await asyncio.wait(waits, timeout=timeout)
        return not pending
    finally:
        for fut in waits:
            fut.cancel()
        for watch in watchers:
            watch.close()


class _PidWatch:
    """Resolves ``gone`` when a process we did not spawn exits (pidfd, else polling)."""

    def __init__(self, proc: psutil.Process) -> None:
        self._proc = proc
        self._loop = asyncio.get_running_loop()
        self.gone: asyncio.Future[object] = self._loop.create_future()
        self._fd: int | None = None
        self._poller: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, proc: psutil.Process) -> _PidWatch | None:
        """A watch for ``proc``, or None if it has already gone."""
        if not _running(proc):
            return None
        watch = cls(proc)
        try:
            watch._fd = os.pidfd_open(proc.pid)
            watch._loop.add_reader(watch._fd, watch._mark_gone)
        except ProcessLookupError:
            watch.close()
            return None
        except (AttributeError, OSError, NotImplementedError):
            watch.close()
            watch._poller = asyncio.create_task(watch._poll())
        return watch

    def _mark_gone(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)

    async def _poll(self) -> None:
        while _running(self._proc):
            await asyncio.sleep(_FALLBACK_POLL)
        self._mark_gone()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._poller is not None:
            self._poller.cancel()


def _running(proc: psutil.Process) -> bool:
    """Alive and still the same process (a zombie counts as gone)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill_all(procs: Sequence[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running():  # guards against pid reuse
                proc.kill()
