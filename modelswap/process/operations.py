"""The operations a ManagedProcess's controller applies, one at a time.

Callers never change a process; they post one of these and await its future.
Keeping them as plain data makes the controller's queue easy to read in a
debugger and keeps "who asked for what" separate from "what happened".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from modelswap.process.child import Child


@dataclass(eq=False)
class Ensure:
    """``ensure_ready`` (or ``run``, which also wants to hear when the child is gone)."""

    done: asyncio.Future[None]
    run_exit: asyncio.Future[None] | None = None


@dataclass(eq=False)
class Stop:
    """``stop(timeout)``: a no-op when stopped, aborts a start, else the kill procedure."""

    timeout: float
    done: asyncio.Future[None]


@dataclass(eq=False)
class Shutdown:
    """Teardown: terminal."""

    done: asyncio.Future[None]


@dataclass(eq=False)
class ChildExited:
    """Posted by the child's exit watcher; a crash if that child is the current, ready one."""

    child: Child


@dataclass(eq=False)
class TtlDue:
    """Posted by the TTL monitor; the controller re-checks the rule before unloading."""

    child: Child


@dataclass(eq=False)
class KeepAlive:
    """Replace the TTL for the rest of this run (None: back to the config's ``ttl``).

    Posted by an Ollama request's ``keep_alive``; applied only while READY.
    """

    ttl: float | None


Op = Ensure | Stop | Shutdown | ChildExited | TtlDue | KeepAlive
#: What may interrupt a start.
Interrupt = Stop | Shutdown


def settle(fut: asyncio.Future[None], error: BaseException | None = None) -> None:
    """Resolve a caller's future unless the caller already gave up on it (cancelled)."""
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
