"""Process states, the table of legal transitions, and the pure TTL rule.

Spec router.md §2.1. The transition table is data, like h11's: the owner of a
process's state calls :func:`check_transition` before every write, so a bug
that would move a process along an edge the spec does not have fails loudly at
the point of the mistake instead of as a wedged swap later.

Nothing here touches the clock, the event loop or the OS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelswap.errors import IllegalTransitionError


class ProcessState(enum.Enum):
    """Lifecycle of one model's upstream. ``SHUTDOWN`` is terminal."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"

    def __str__(self) -> str:
        return self.value


S = ProcessState

#: Every legal change of state. A same-state "change" is not in the table: it is
#: a no-op that emits no event (see :func:`check_transition`).
TRANSITIONS: frozenset[tuple[ProcessState, ProcessState]] = frozenset(
    {
        (S.STOPPED, S.STARTING),  # start request
        (S.STOPPED, S.SHUTDOWN),  # teardown
        (S.STARTING, S.READY),  # health check passed (or checkEndpoint: none)
        (S.STARTING, S.STOPPED),  # start failed, or a stop aborted it
        (S.STARTING, S.SHUTDOWN),  # teardown aborted the start
        (S.READY, S.STOPPING),  # stop request
        (S.READY, S.STOPPED),  # the child exited by itself (crash)
        (S.READY, S.SHUTDOWN),  # teardown
        (S.STOPPING, S.STOPPED),  # the kill finished
        (S.STOPPING, S.SHUTDOWN),  # teardown (spec: noticed only after the stop)
    }
)


def check_transition(old: ProcessState, new: ProcessState) -> bool:
    """Whether moving ``old`` → ``new`` is a real change.

    Returns False for a same-state "change" (no event must be emitted), True for
    a legal change, and raises :class:`IllegalTransitionError` for anything else.
    """
    if old is new:
        return False
    if (old, new) not in TRANSITIONS:
        raise IllegalTransitionError(f"illegal process state transition {old} -> {new}")
    return True


@dataclass(frozen=True, slots=True)
class StateChange:
    """One real state change of one process, as delivered to subscribers."""

    model_id: str
    old: ProcessState
    new: ProcessState


@dataclass(frozen=True, slots=True)
class ProcessStatistics:
    """A snapshot of one process, for ``repr``, tests, ``/running`` and metrics."""

    model_id: str
    state: ProcessState
    pid: int | None
    port: int | None
    in_flight: int
    last_use: float | None  # clock() of the last finished request (or of becoming ready)
    starts: int  # start attempts (spawns tried)
    restarts: int  # times it became ready again after the first time
    crashes: int  # ready children that exited by themselves


def ttl_expired(now: float, last_use: float, in_flight: int, ttl: float) -> bool:
    """Whether an idle model is due for unloading (spec router.md §2.8).

    ``ttl <= 0`` disables unloading; a request in flight (a stream counts until
    it ends) always holds the model; otherwise idle time must *exceed* ttl.
    """
    if ttl <= 0 or in_flight > 0:
        return False
    return now - last_use > ttl
