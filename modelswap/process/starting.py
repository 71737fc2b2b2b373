"""The steps of a start that need no process state: spawn the child, then race it.

A start must stay interruptible (router.md §2.2, §2.6). Once the child runs,
the controller waits on three things at once — the health poll, the child's
exit and the next operation — and reacts to whichever comes first: a health
200 makes the process ready, an exit fails the start fast, a stop or teardown
aborts it (another ``ensure_ready`` merely joins). :func:`race_start` is that
wait. What the controller's queue holds is its own business: the race only
calls ``take_interrupt`` whenever ``wakeup`` fires, and ends on the first stop
or teardown it returns.

Kept apart from :mod:`.managed` so the controller there reads as state
changes only, and apart from :mod:`.readiness`, which stays about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from modelswap.errors import UpstreamStartError
from modelswap.process import operations as ops
from modelswap.process.child import Child, OutputCallback
from modelswap.process.readiness import probe_session, wait_healthy
from modelswap.process.spec import Launch, format_duration

__all__ = ["StartOutcome", "race_start", "spawn_child"]

log = logging.getLogger("modelswap.process")

#: How a start ended: interrupted by an operation, failed, or None for ready.
StartOutcome = ops.Interrupt | UpstreamStartError | None


async def spawn_child(
    launch: Launch,
    *,
    on_output: OutputCallback,
    on_exit: Callable[[Child], None],
) -> Child:
    """Start the child of ``launch``; a command that cannot run is an ``UpstreamStartError``."""
    try:
        return await Child.spawn(launch.argv, launch.env, on_output=on_output, on_exit=on_exit)
    except OSError as exc:
        argv = " ".join(launch.argv)
        raise UpstreamStartError(f"failed to start command '{argv}': {exc}") from None


async def race_start(
    child: Child,
    health_url: str | None,
    *,
    timeout: float,
    http: aiohttp.ClientSession | None,
    take_interrupt: Callable[[], ops.Interrupt | None],
    wakeup: asyncio.Event,
    name: str,
) -> StartOutcome:
    """Run the health poll (if any) for one start against the child's exit and new operations.

    Without a health URL the start is ready at once (unless an interrupt is
    already queued). ``http`` is a shared probe pool; None gives this start its
    own pool, which lives as long as the start: every probe reuses one
    keep-alive connection, and nothing is left open afterwards.
    """
    if health_url is None:
        return take_interrupt()
    async with contextlib.AsyncExitStack() as stack:
        session = http
        if session is None:
            session = await stack.enter_async_context(probe_session())
        health = asyncio.create_task(wait_healthy(session, health_url, timeout=timeout))
        stack.push_async_callback(_cancel_and_wait, health)
        return await _watch(child, health, take_interrupt, wakeup, timeout, name)


async def _watch(
    child: Child,
    health: asyncio.Task[None],
    take_interrupt: Callable[[], ops.Interrupt | None],
    wakeup: asyncio.Event,
    timeout: float,
    name: str,
) -> StartOutcome:
    """Wait on the health poll, the child's exit and new operations at once."""
    while True:
        if (interrupt := take_interrupt()) is not None:
            return interrupt
        if not child.alive:
            log.warning("<%s> upstream exited with code %s while starting", name, child.returncode)
            return UpstreamStartError("upstream command exited prematurely")
        if health.done():
            return _health_outcome(health, timeout, name)
        wakeup.clear()
        woken = asyncio.ensure_future(wakeup.wait())
        watched: list[asyncio.Future[Any]] = [woken, child.exited, health]
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()


def _health_outcome(
    health: asyncio.Task[None], timeout: float, name: str
) -> UpstreamStartError | None:
    error = health.exception()
    if error is None:
        return None
    if isinstance(error, TimeoutError):
        return UpstreamStartError(f"health check timed out after {format_duration(timeout)}")
    log.error("<%s> health check crashed", name, exc_info=error)
    return UpstreamStartError(f"health check failed: {error}")


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
