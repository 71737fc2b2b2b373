"""What the scheduler tells the runtime to do: frozen instructions, applied in list order.

:meth:`FifoScheduler.handle` returns a list of these for every event. The
runtime applies them **in order and without awaiting in between** (each one is
a non-blocking action: resolve a future, create a task, cancel a task), then
handles its next event. Order matters in exactly two places, and the list is
already in the right order for both: a request's :class:`Admit` precedes its
grant, and an unload's :class:`CancelSwap` precedes its :class:`StopModels`.

How to apply each one, and which event it must eventually produce back:

================  ==========================================  ========================
decision          apply                                       report back
================  ==========================================  ========================
Admit             resolve the request's admission future      —
Reject            answer the request with status/message      —
                  (429: header ``Retry-After``)
GrantServe        hand the serve grant to the waiter          ServeDone when its handler
                                                              returns, or
                                                              GrantUndelivered at once
                                                              if the waiter was gone
GrantError        fail the waiter with status/message         —
StartSwap         launch a worker task: stop ``evict`` in     SwapDone(swap_id, error,
                  parallel, then ``ensure_ready(model)``;     now), exactly once; after
                  log ``log_line`` at ``log_level`` if set    CancelSwap it may be
                                                              omitted (it is ignored)
CancelSwap        cancel that worker task (a no-op if it      —
                  already finished)
StopModels        launch a task stopping ``models`` in        StopsDone(op_id) when all
                  parallel (unload: the unload's timeout;     have stopped
                  shutdown: then tear every process down)
Positions         store each request's latest queue position  —
OpDone            resolve the unload/shutdown caller of       —
                  ``op_id`` (``error`` set: the call failed)
Diagnostic        log at error level: a scheduler invariant   —
                  was violated and repaired (a bug)
RetireModel       launch a task stopping the model's current  ModelRetired(model) once
                  process (it has drained), then put its      it has stopped and the
                  successor in place (or drop it: removed)    successor is in place
================  ==========================================  ========================

Statuses and messages are the bare router texts (``group: model unloaded``);
the runtime's error classes (``modelswap.errors.RouterError``) add the
``unspecific error: `` prefix for 500s (router spec §3.15), exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = [
    "Admit",
    "CancelSwap",
    "Decision",
    "Diagnostic",
    "GrantError",
    "GrantServe",
    "LogLevel",
    "OpDone",
    "Positions",
    "Reject",
    "RetireModel",
    "StartSwap",
    "StopModels",
]

LogLevel: TypeAlias = Literal["debug", "info", "warning"]


@dataclass(frozen=True, slots=True)
class Admit:
    """The request holds a reservation now; a grant (serve or error) will follow."""

    request_id: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Admission refused (404 unknown model, 429 over the limit, 500 shutting down).

    No reservation was taken and no grant will follow.
    """

    request_id: int
    status: int
    message: str
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class GrantServe:
    """Serve the request with ``model``'s process.

    ``fifo_priority`` is the model's configured priority as a decimal string,
    recorded in the request's activity metadata (router spec §3.4).
    """

    request_id: int
    model: str
    fifo_priority: str = "0"


@dataclass(frozen=True, slots=True)
class GrantError:
    """Fail an admitted request; its reservation is already released."""

    request_id: int
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class StartSwap:
    """Stop every model in ``evict`` (in parallel), then make ``model`` ready.

    The worker must not read ``model``'s state to decide whether to start: it
    calls ``ensure_ready`` and lets the process decide (router spec §3.8, #946).
    ``log_line`` is the eviction policy's description of the choice, if any;
    ``memory`` is True when the memory policy added evictees (they must go
    for ``model`` to fit), which observers report as the eviction's reason.
    """

    swap_id: int
    model: str
    evict: tuple[str, ...] = ()
    log_line: str | None = None
    log_level: LogLevel = "info"
    memory: bool = False


@dataclass(frozen=True, slots=True)
class CancelSwap:
    """Cancel the worker of ``swap_id``: its target is being unloaded or shut down.

    Without this an unload could be undone by a worker still stopping evictees,
    which would then load the target anyway (router spec §9 #4).
    """

    swap_id: int


@dataclass(frozen=True, slots=True)
class StopModels:
    """Stop ``models`` in parallel; report :class:`~.events.StopsDone` ``op_id``.

    Only unload and shutdown stop models outside a swap, and only they may stop
    a model that is serving (its requests then fail upstream; their ServeDone
    still arrives normally).
    """

    op_id: int
    models: tuple[str, ...]
    reason: Literal["unload", "shutdown"]


@dataclass(frozen=True, slots=True)
class Positions:
    """New 1-based queue positions, only for requests whose position changed.

    Only the latest value per request counts; a request that left the queue
    gets no further updates.
    """

    positions: Mapping[int, int] = field(hash=False)


@dataclass(frozen=True, slots=True)
class OpDone:
    """The unload or shutdown ``op_id`` is complete (``error``: it was refused)."""

    op_id: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A bookkeeping invariant was violated and clamped instead of crashing (§9 #24)."""

    message: str


@dataclass(frozen=True, slots=True)
class RetireModel:
    """``model``'s definition was replaced or removed by a reload and it has drained.

    Nothing of it is serving, waiting on a swap or being evicted, and the
    scheduler routes nothing to it until :class:`~.events.ModelRetired`: the
    old process can stop without cutting a request short.
    """

    model: str


Decision: TypeAlias = (
    Admit
    | Reject
    | GrantServe
    | GrantError
    | StartSwap
    | CancelSwap
    | StopModels
    | Positions
    | OpDone
    | Diagnostic
    | RetireModel
)
