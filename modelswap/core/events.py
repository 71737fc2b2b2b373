"""What the router runtime tells the scheduler: frozen facts, in the order they happened.

The runtime (:mod:`modelswap.router.runtime`) owns one
:class:`~modelswap.core.scheduler.FifoScheduler` and feeds it these events from
one task, one at a time, through :meth:`FifoScheduler.handle`. Each event is a
*fact* about the outside world ("this client left", "this swap finished"), never
a command; the scheduler answers with :mod:`decisions <modelswap.core.decisions>`.

Identity rules, which are what make stale and duplicate reports harmless:

* ``request_id`` and ``op_id`` are chosen by the runtime and must be unique for
  the scheduler's lifetime (a counter is fine). They share no namespace, so a
  request and an op may have the same number.
* ``swap_id`` is chosen by the scheduler (in :class:`~.decisions.StartSwap`);
  the runtime only echoes it back.

Time is an input (design rule 4): events that can change what the scheduler
decides carry ``now``, a monotonic clock reading in seconds taken by the
runtime when it posts the event. The scheduler never reads a clock; it keeps
the largest ``now`` it has seen, so a slightly out-of-order reading is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from modelswap.core.memory import MemoryPolicy
from modelswap.core.policy import EvictionPolicy

__all__ = [
    "Cancelled",
    "Event",
    "FootprintMeasured",
    "GrantUndelivered",
    "ModelRetired",
    "Reconfigured",
    "RequestArrived",
    "ServeDone",
    "ShutdownRequested",
    "StopsDone",
    "SwapDone",
    "Tick",
    "UnloadRequested",
]


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """A client wants ``model`` (a real model ID: aliases are resolved before this).

    Preloads (router spec §7.1) are ordinary arrivals too. ``client_gone`` says
    the runtime already knows the client disconnected before the event was
    handled: such a request is dropped silently, with no reservation (§8.2 #29).
    """

    request_id: int
    model: str
    now: float
    client_gone: bool = False


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The client of an admitted request went away before it got a grant.

    Harmless for a request that was already granted (the runtime must still post
    :class:`ServeDone` or :class:`GrantUndelivered` for that one) or unknown.
    """

    request_id: int


@dataclass(frozen=True, slots=True)
class GrantUndelivered:
    """A :class:`~.decisions.GrantServe` found its waiter already gone.

    Releases the request's in-flight slot and reservation exactly like
    :class:`ServeDone`: a grant to a caller who has gone never counts as in
    flight (router spec §3.1). The scheduler counted it optimistically between
    the grant and this event, which only errs towards not evicting.
    """

    request_id: int
    now: float | None = None


@dataclass(frozen=True, slots=True)
class SwapDone:
    """The worker for ``swap_id`` finished: ``error`` is None on success.

    A report for a swap the scheduler no longer tracks (cancelled by an unload,
    or already reported) is ignored, so a late completion can never resolve a
    newer swap of the same model (router spec §9 #3).
    """

    swap_id: int
    error: str | None
    now: float


@dataclass(frozen=True, slots=True)
class ServeDone:
    """The handler of a delivered serve grant returned (in its ``finally``)."""

    request_id: int
    now: float | None = None


@dataclass(frozen=True, slots=True)
class UnloadRequested:
    """Stop ``models`` (None: every model of this router); unknown IDs are skipped.

    The runtime resolves the unload's timeout itself (it keeps it under
    ``op_id``); for ``timeout <= 0`` it posts one event per unloadTimeout bucket,
    smallest first, waiting for each one's :class:`~.decisions.OpDone`.
    """

    op_id: int
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class StopsDone:
    """Every process of :class:`~.decisions.StopModels` ``op_id`` has stopped."""

    op_id: int
    now: float | None = None


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    """Fail everything pending and stop every process. Only the first one counts."""

    op_id: int


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic clock reading (about once a second).

    It advances the starvation bound's clock and re-runs the queue, which also
    picks up changes the router cannot see as events (a TTL stop, a crash).
    """

    now: float


@dataclass(frozen=True, slots=True)
class Reconfigured:
    """A config reload: from now on the router serves ``models`` under these settings.

    Everything the scheduler tracks — queue order, swaps, in-flight counts,
    reservations — carries over; only the rules change, all at once. Models
    in ``replace`` (a changed definition, a removed model, a model re-added
    while its old process still drains) stop taking new work on their current
    process: once nothing of theirs is serving or swapping, the scheduler
    answers :class:`~.decisions.RetireModel`. Requests still queued for a model
    no longer served fail with 404.

    ``memory`` is the new memory policy (None: memory routing off). It is part
    of the rules, so a reload can change a budget or a model's declared size;
    what was measured carries over for models still served (see
    :meth:`~.scheduler.FifoScheduler.handle`).
    """

    models: frozenset[str]
    policy: EvictionPolicy
    now: float
    limits: Mapping[str, int] = field(default_factory=dict)
    priority: Mapping[str, int] = field(default_factory=dict)
    max_wait: float = 0.0
    min_residency: float = 0.0
    replace: frozenset[str] = frozenset()
    memory: MemoryPolicy | None = None


@dataclass(frozen=True, slots=True)
class ModelRetired:
    """The old process of a :class:`~.decisions.RetireModel` has stopped; its successor
    (if the model is still served) is in place and stopped."""

    model: str
    now: float | None = None


@dataclass(frozen=True, slots=True)
class FootprintMeasured:
    """``model`` was measured to use ``sizes`` (resource name → bytes).

    Sent once a model is ready (and again as it grows), and at startup for
    footprints remembered from an earlier run. The memory policy then uses the
    larger of declared and measured; a smaller later reading replaces a larger
    earlier one. Without a memory policy it is only remembered.
    """

    model: str
    sizes: Mapping[str, int] = field(hash=False)
    now: float | None = None


Event: TypeAlias = (
    RequestArrived
    | Cancelled
    | GrantUndelivered
    | SwapDone
    | ServeDone
    | UnloadRequested
    | StopsDone
    | ShutdownRequested
    | Tick
    | Reconfigured
    | ModelRetired
    | FootprintMeasured
)
