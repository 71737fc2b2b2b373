"""The FIFO scheduler with collation: events in, decisions out (router spec §3.3–§3.12).

Pure and synchronous: no asyncio, no logging, no clock, no I/O. The runtime owns
one :class:`FifoScheduler`, feeds it :mod:`events <modelswap.core.events>` from
one task through :meth:`FifoScheduler.handle`, and applies the returned
:mod:`decisions <modelswap.core.decisions>` in order (that module's docstring is
the table of how to apply each and what to report back). The contract in short:

* every :class:`~.events.RequestArrived` gets exactly one ``Admit`` or
  ``Reject``; every admitted request later gets exactly one ``GrantServe`` or
  ``GrantError``, unless the runtime posts ``Cancelled`` first;
* every ``GrantServe`` must come back as exactly one ``ServeDone`` (handler
  returned) or ``GrantUndelivered`` (waiter already gone). A handler that got
  the grant and is then cancelled still posts ``ServeDone`` from its
  ``finally``; ``Cancelled`` after a grant is a no-op and releases nothing;
* every ``StartSwap`` comes back as one ``SwapDone`` with the same ``swap_id``
  (after ``CancelSwap`` it may be skipped); every ``StopModels`` as one
  ``StopsDone``; every unload/shutdown ``op_id`` gets exactly one ``OpDone``;
* ``view`` is a fresh snapshot ``{model: state}`` (``stopped``, ``starting``,
  ``ready``, ``stopping``, ``shutdown``; missing = ``stopped``). It is advice
  only (fast path, running set): the decision to start a process is always
  taken inside the process, by the swap worker's ``ensure_ready`` (§3.1, #946).

Preloading (§7.1) needs nothing special: it is a ``RequestArrived`` whose
``Admit`` nobody waits for, followed by ``ServeDone`` once ``GET /`` returned.

Where this differs from llama-swap (router spec §9), and why:

* §9 #3 — every swap has a unique ``swap_id``; ``SwapDone`` is matched by it, so
  a late completion of a dropped swap can never resolve a newer swap of the same
  model (llama-swap keys completions by model ID).
* §9 #2 — unload does not block the scheduler. It fails the targets' waiters
  and queued requests, emits ``CancelSwap`` + ``StopModels`` and tracks the
  targets as a pseudo-swap: requests for them, and swaps that would evict or
  start them, queue until ``StopsDone``; every other model keeps routing
  (llama-swap stops the processes on its event loop, freezing all models).
* §9 #4 — unload cancels the target's swap worker (``CancelSwap`` before the
  stop), so a worker still stopping evictees cannot load the target afterwards.
* §9 #9 — the running set handed to the policy leaves out the target while its
  process is ``stopping``, so the matrix "target already running" shortcut no
  longer trusts a dying process (see :mod:`.matrix_policy`).
* §9 #15 — priorities are keyed by real model ID; unknown keys (an alias the
  loader failed to resolve) fail construction instead of silently doing nothing.
* §9 #24 — releasing a reservation or in-flight slot that is not held clamps at
  zero and returns a ``Diagnostic`` instead of crashing the router.
* §9 #1 — optional starvation bound (``max_wait``, ``min_residency``), off by
  default; see :mod:`.starvation`.
* Requests are identified by ID, so ``ServeDone``/``GrantUndelivered`` name the
  request, not the model: a duplicate report is detected instead of silently
  decrementing another request's slot.
* §9 #14 — kept on purpose: the limit counts waiting, queued and serving
  requests, as llama-swap does (clients rely on the 429). Keeping static assets
  out of the scheduler is the server's job (``ignorePaths``).
* ``Tick`` drains the queue, so a change the router cannot see as an event (TTL
  stop, crash; §9 #8) is picked up within one tick.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.core.ledger import Ledger
from modelswap.core.memory import MemoryPolicy
from modelswap.core.memory_book import MemoryBook
from modelswap.core.policy import EvictionPolicy
from modelswap.core.queue import RequestQueue
from modelswap.core.scheduler_stats import SchedulerStats, SwapInfo
from modelswap.core.starvation import StarvationBound
from modelswap.core.swaps import SwapTable

__all__ = ["DEFAULT_LIMIT", "FifoScheduler", "ProcessView", "SchedulerStats", "SwapInfo"]

DEFAULT_LIMIT = 10
"""Concurrency limit of a model without a positive ``concurrencyLimit`` (§3.3)."""

ProcessView = Mapping[str, str]
"""``{model: state}`` with state one of stopped/starting/ready/stopping/shutdown."""

_NOT_RUNNING = frozenset({"stopped", "shutdown"})


@dataclass(slots=True)
class _Request:
    request_id: int
    model: str
    arrived: float
    stage: Literal["queued", "waiting", "serving"] = "queued"
    swap_id: int | None = None
    resident_at_arrival: Mapping[str, float] = field(default_factory=dict)


class FifoScheduler:
    """FIFO scheduling with collation over one eviction policy (router spec §3).

    ``models`` are the model IDs this router serves; ``limits`` their
    concurrency limits (≤ 0 or missing: ``default_limit``); ``priority`` their
    FIFO priorities (missing: 0). ``max_wait`` > 0 turns on the starvation bound
    and ``min_residency`` protects a freshly loaded model from it (seconds).
    ``router_name`` (``group``/``matrix``) prefixes error texts. ``memory``, if
    given, is applied on top of ``policy``: a start must satisfy both (§ memory
    in docs/configuration.md).
    """

    def __init__(
        self,
        models: Collection[str],
        policy: EvictionPolicy,
        *,
        limits: Mapping[str, int] | None = None,
        default_limit: int = DEFAULT_LIMIT,
        priority: Mapping[str, int] | None = None,
        max_wait: float = 0.0,
        min_residency: float = 0.0,
        router_name: str = "group",
        memory: MemoryPolicy | None = None,
    ) -> None:
        self._models = frozenset(models)
        for what, mapping in (("priority", priority or {}), ("limit", limits or {})):
            unknown = sorted(set(mapping) - self._models)
            if unknown:
                raise ValueError(f"{what} for unknown model(s) {unknown}: use real model IDs")
        self._policy = policy
        self._book = MemoryBook(memory)
        self._limits = {m: n for m, n in (limits or {}).items() if n > 0}
        self._default_limit = default_limit if default_limit > 0 else DEFAULT_LIMIT
        self._priority = dict(priority or {})
        self._starvation = StarvationBound(max_wait, min_residency)
        self._name = router_name
        self._retiring: dict[str, bool] = {}  # model -> its RetireModel was sent

        self._requests: dict[int, _Request] = {}
        self._queue = RequestQueue()
        self._work = SwapTable()
        self._ledger = Ledger()
        self._shutdown_op: int | None = None
        self._now = float("-inf")
        # Per-handle context: set by handle(), read by the helpers below.
        self._view: ProcessView = {}
        self._out: list[d.Decision] = []

    # --- the one entry point --------------------------------------------------------

    def handle(self, event: e.Event, view: ProcessView) -> list[d.Decision]:
        """Apply one event; return what the runtime must do, in order."""
        self._view = view
        self._out = []
        self._starvation.sweep(view, self._now)
        before = self._queue.positions()
        match event:
            case e.RequestArrived():
                self._on_request(event)
            case e.Cancelled():
                self._on_cancel(event)
            case e.ServeDone() | e.GrantUndelivered():
                self._on_serve_done(event.request_id, event.now)
            case e.SwapDone():
                self._on_swap_done(event)
            case e.UnloadRequested():
                self._on_unload(event)
            case e.StopsDone():
                self._on_stops_done(event)
            case e.ShutdownRequested():
                self._on_shutdown(event)
            case e.Tick():
                self._advance(event.now)
                self._drain()
            case e.Reconfigured():
                self._on_reconfigured(event)
            case e.ModelRetired():
                self._on_retired(event)
            case e.FootprintMeasured():
                self._on_measured(event)
        if self._retiring:
            self._retire_drained()
        after = self._queue.positions()
        changed = {rid: pos for rid, pos in after.items() if before.get(rid) != pos}
        if changed:
            self._out.append(d.Positions(changed))
        out, self._out, self._view = self._out, [], {}
        return out

    def statistics(self) -> SchedulerStats:
        """What is queued, swapping, unloading and counted right now."""
        return SchedulerStats(
            queue=tuple((rid, self._requests[rid].model) for rid in self._queue),
            swaps=self._work.swap_infos(),
            unloading=self._work.unload_items(),
            retiring=tuple(sorted(self._retiring)),
            in_flight=self._ledger.in_flight_counts,
            reservations=self._ledger.reservations,
            shutting_down=self._shutdown_op is not None,
            now=self._now,
            footprints=self._book.footprints(),
        )

    @property
    def models(self) -> frozenset[str]:
        """The model IDs this router serves."""
        return self._models

    def handles(self, model: str) -> bool:
        """Whether ``model`` is served here (§3.14); preload skips models that are not."""
        return model in self._models

    @property
    def memory(self) -> MemoryPolicy | None:
        """The memory policy applied on top of the eviction policy, if configured."""
        return self._book.policy

    @property
    def max_wait(self) -> float:
        """The starvation bound in seconds (0 = off); observers use it to explain swaps."""
        return self._starvation.max_wait

    def limit(self, model: str) -> int:
        """``model``'s concurrency limit (§3.3)."""
        return self._limits.get(model, self._default_limit)

    def priority(self, model: str) -> int:
        """``model``'s FIFO priority, looked up by real model ID (§9 #15)."""
        return self._priority.get(model, 0)

    def __repr__(self) -> str:
        return (
            f"<FifoScheduler {self._name} queued={len(self._queue)} swaps={self._work.swap_count} "
            f"unloads={self._work.unload_count} in_flight={self._ledger.in_flight_counts}>"
        )

    # --- event handlers ---------------------------------------------------------------

    def _on_request(self, ev: e.RequestArrived) -> None:
        """Admission (§3.3), then the decision tree (§3.4)."""
        self._advance(ev.now)
        rid, model = ev.request_id, ev.model
        if rid in self._requests:
            self._diagnose(f"duplicate request id {rid} (rejected)")
            self._out.append(d.Reject(rid, 500, f"{self._name}: duplicate request id"))
            return
        if self._shutdown_op is not None:
            self._out.append(d.Reject(rid, 500, f"{self._name} is shutting down"))
            return
        if model not in self._models:
            self._out.append(d.Reject(rid, 404, "no local server found for requested model"))
            return
        if self._ledger.reserved(model) >= self.limit(model):
            self._out.append(d.Reject(rid, 429, "Too many requests", retry_after=1))
            return
        if ev.client_gone:
            return
        self._ledger.reserve(model)
        self._out.append(d.Admit(rid))
        req = _Request(rid, model, self._now)
        req.resident_at_arrival = self._starvation.arrival(self._now)
        self._requests[rid] = req
        if not self._route(req):
            self._queue.insert(rid, self.priority(model))

    def _on_cancel(self, ev: e.Cancelled) -> None:
        """Remove a queued or waiting request (§3.10); granted or unknown: nothing."""
        req = self._requests.get(ev.request_id)
        if req is None or req.stage == "serving":
            return
        was_queued = req.stage == "queued"
        if was_queued:
            self._queue.remove(req.request_id)
        else:
            # A waiter's swap is always active: unload and shutdown resolve the
            # waiters of every swap they drop.
            assert req.swap_id is not None
            self._work.leave(req.swap_id, req.request_id)
        self._forget(req)
        # A swap whose waiters all left keeps running (§3.10). Only the starvation
        # bound can be unblocked by a cancel (its anchor may have left), so only
        # then does a cancel drain.
        if was_queued and self._starvation.enabled:
            self._drain()

    def _on_serve_done(self, request_id: int, now: float | None) -> None:
        """One serve grant finished or was never delivered (§3.10)."""
        if now is not None:
            self._advance(now)
        req = self._requests.get(request_id)
        if req is None or req.stage != "serving":
            self._diagnose(f"serve done for request {request_id}, which is not being served")
            return
        del self._requests[request_id]
        self._book.used(req.model, self._now)
        self._diagnose(self._ledger.stop_serving(req.model))
        self._diagnose(self._ledger.release(req.model))
        if self._ledger.in_flight(req.model) == 0:
            self._drain()

    def _on_measured(self, ev: e.FootprintMeasured) -> None:
        """A footprint; one of a model already gone (measured just before a reload
        retired it) is dropped, or it would be counted for ever."""
        if ev.now is not None:
            self._advance(ev.now)
        if ev.model in self._models or ev.model in self._retiring:
            self._book.measured(ev.model, ev.sizes)
            self._drain()

    def _on_reconfigured(self, ev: e.Reconfigured) -> None:
        """A config reload: new rules at once; replaced models retire once drained.

        Queue order is kept (priorities apply to requests queued from now on).
        Requests already serving or waiting on a swap finish on the process
        they were granted or are loading; requests still queued for a replaced
        model wait for its successor; queued for a model no longer served: 404.
        The memory policy switches too; the old processes of replaced models
        still count until retired (:mod:`.memory_book`).
        """
        self._advance(ev.now)
        if self._shutdown_op is not None:
            return
        self._models = frozenset(ev.models)
        self._policy = ev.policy
        self._limits = {m: n for m, n in ev.limits.items() if n > 0}
        self._priority = dict(ev.priority)
        self._starvation.configure(ev.max_wait, ev.min_residency)
        for model in sorted(ev.replace):
            self._retiring.setdefault(model, False)
        self._book.reconfigure(ev.memory, ev.replace)
        for rid in list(self._queue):
            req = self._requests[rid]
            if req.model not in self._models:
                self._queue.remove(rid)
                self._grant_error(req, 404, f"model {req.model} was removed by a config reload")
        self._drain()

    def _retire_drained(self) -> None:
        """Send ``RetireModel`` for each retiring model nothing uses any more."""
        if self._shutdown_op is not None:
            return
        for model, sent in self._retiring.items():
            if sent or self._ledger.in_flight(model) > 0 or self._work.loading(model):
                continue
            if self._work.being_evicted(model) or self._work.unloading(model):
                continue
            self._retiring[model] = True
            self._out.append(d.RetireModel(model))

    def _on_retired(self, ev: e.ModelRetired) -> None:
        """The old process stopped and the successor is in place: route to it again."""
        if ev.now is not None:
            self._advance(ev.now)
        if self._retiring.pop(ev.model, None) is None:
            self._diagnose(f"retired {ev.model}, which was not retiring")
        self._starvation.retired(ev.model)
        self._book.retired(ev.model, served=ev.model in self._models)
        self._drain()

    def _on_swap_done(self, ev: e.SwapDone) -> None:
        """Resolve the swap's waiters in join order, then drain (§3.9)."""
        self._advance(ev.now)
        swap = self._work.finish(ev.swap_id)
        if swap is None:
            return  # stale: cancelled by an unload/shutdown, or reported twice (§9 #3)
        if ev.error is None:
            self._starvation.became_ready(swap.target, self._now)
            self._book.used(swap.target, self._now)
        for rid in swap.waiters:
            req = self._requests[rid]
            if ev.error is None:
                self._grant_serve(req)
            else:
                self._grant_error(req, 500, ev.error)
        self._drain()

    def _on_unload(self, ev: e.UnloadRequested) -> None:
        """Fail the targets' waiters and queue, cancel their swaps, stop them (§3.11)."""
        if self._shutdown_op is not None:
            self._out.append(d.OpDone(ev.op_id))  # shutdown stops everything anyway
            return
        if ev.models is None:
            targets = tuple(sorted(self._models))
        else:
            targets = tuple(dict.fromkeys(m for m in ev.models if m in self._models))
        if not targets:
            self._out.append(d.OpDone(ev.op_id))
            return
        message = f"{self._name}: model unloaded"
        cancelled: list[int] = []
        for target in targets:
            swap = self._work.drop(target)
            if swap is not None:
                for rid in swap.waiters:
                    self._grant_error(self._requests[rid], 500, message)
                cancelled.append(swap.swap_id)
        for rid in list(self._queue):
            req = self._requests[rid]
            if req.model in targets:
                self._queue.remove(rid)
                self._grant_error(req, 500, message)
        self._out.extend(d.CancelSwap(swap_id) for swap_id in cancelled)
        self._work.begin_unload(ev.op_id, targets)
        self._starvation.stopping(targets, self._now)
        self._out.append(d.StopModels(ev.op_id, targets, "unload"))
        # Dropping swaps can unblock queued requests for other models right away.
        self._drain()

    def _on_stops_done(self, ev: e.StopsDone) -> None:
        if ev.now is not None:
            self._advance(ev.now)
        if self._work.end_unload(ev.op_id):
            self._out.append(d.OpDone(ev.op_id))
            self._drain()
        elif ev.op_id == self._shutdown_op:
            # Every process is stopped now, so pending unloads are complete too.
            self._out.extend(d.OpDone(op_id) for op_id in self._work.end_unloads())
            self._out.append(d.OpDone(ev.op_id))
        elif self._shutdown_op is None:
            # During shutdown a late report of an unload it already settled is normal.
            self._diagnose(f"stops done for unknown op {ev.op_id}")

    def _on_shutdown(self, ev: e.ShutdownRequested) -> None:
        """Fail every waiter and queued request, cancel swaps, stop everything (§3.12)."""
        if self._shutdown_op is not None:
            self._out.append(d.OpDone(ev.op_id, f"{self._name} shutdown already in progress"))
            return
        self._shutdown_op = ev.op_id
        message = f"{self._name} is shutting down"
        swaps = self._work.drop_all()
        for swap in swaps:
            for rid in swap.waiters:
                self._grant_error(self._requests[rid], 500, message)
        for rid in self._queue.clear():
            self._grant_error(self._requests[rid], 500, message)
        self._out.extend(d.CancelSwap(swap.swap_id) for swap in swaps)
        self._out.append(d.StopModels(ev.op_id, tuple(sorted(self._models)), "shutdown"))

    # --- the decision tree (§3.4 steps 2-7) ----------------------------------------------

    def _route(self, req: _Request) -> bool:
        """Grant, join or start a swap for ``req``; False means "(stay) queued"."""
        model = req.model
        if model in self._retiring or self._work.unloading(model):
            return False  # being unloaded or replaced: start it only once it has stopped
        swap_id = self._work.join(model, req.request_id)
        if swap_id is not None:
            req.stage, req.swap_id = "waiting", swap_id
            return True
        running = self._running_for(model)
        evict = self._eviction(model, running)
        if not evict and self._state(model) == "ready" and not self._work.being_evicted(model):
            if self._starvation_blocks(model):
                return False
            self._grant_serve(req)
            return True
        if self._collides(model, evict):
            return False
        if any(self._ledger.in_flight(m) > 0 for m in evict):
            return False  # never stop a model that is serving
        self._start_swap(req, evict, running)
        return True

    def _eviction(self, target: str, running: tuple[str, ...]) -> tuple[str, ...]:
        """What the policy evicts, plus what the memory policy needs on top, in running order.

        Old processes of models a reload removed still hold memory while they
        drain, so the memory policy counts them too (the structural policy
        knows only served models); choosing one makes the request wait until
        it has stopped by itself (:meth:`_collides`).
        """
        evict = tuple(m for m in self._policy.eviction_for(target, running) if m != target)
        if self._book.policy is None:
            return evict
        draining = tuple(
            m for m in sorted(self._retiring) if m not in self._models and self._is_running(m)
        )
        serving = [m for m in (*running, *draining) if self._ledger.in_flight(m) > 0]
        return self._book.eviction(target, running, evict, serving, self._now, draining)

    def _drain(self) -> None:
        """Re-run the tree over the queue in order against current state (§3.7)."""
        if self._shutdown_op is not None:
            return
        for rid in list(self._queue):
            if self._route(self._requests[rid]):
                self._queue.remove(rid)

    def _start_swap(self, req: _Request, evict: tuple[str, ...], running: Sequence[str]) -> None:
        swap_id = self._work.start(req.model, evict, req.request_id)
        self._starvation.stopping(evict, self._now)
        req.stage, req.swap_id = "waiting", swap_id
        described = self._policy.describe_swap(req.model, running)
        extra: list[str] = []
        if self._book.policy is not None:
            own = set(self._policy.eviction_for(req.model, running))
            extra = [m for m in evict if m not in own]
            line = self._book.describe(req.model, extra)
            if described is None and line is not None:
                described = ("info", line)
        memory = bool(extra)
        if described is None:
            self._out.append(d.StartSwap(swap_id, req.model, evict, memory=memory))
        else:
            level, line = described
            self._out.append(d.StartSwap(swap_id, req.model, evict, line, level, memory))

    def _running_for(self, target: str) -> tuple[str, ...]:
        """§3.5: non-stopped models plus other swaps' targets, sorted.

        The target itself is left out while it is ``stopping`` (§9 #9): it has to
        start again, so it must not count as already running.
        """
        running = {
            m
            for m, state in self._view.items()
            if m in self._models
            and str(state) not in _NOT_RUNNING
            and not (m == target and str(state) == "stopping")
        }
        running.update(t for t in self._work.targets() if t != target)
        return tuple(sorted(running))

    def _collides(self, target: str, evict: tuple[str, ...]) -> bool:
        """§3.6 against swaps and unloads; a retiring model stops by itself, so
        evicting it would race that."""
        return self._work.collides(target, evict) or bool(set(evict) & self._retiring.keys())

    def _starvation_blocks(self, model: str) -> bool:
        """Whether a fast path to ready ``model`` must yield to a starving request.

        The anchor is the queued request that has waited longest; the rule is
        :meth:`.StarvationBound.blocks`.
        """
        if not self._starvation.enabled:
            return False
        anchor: _Request | None = None
        for rid in self._queue:
            req = self._requests[rid]
            if anchor is None or req.arrived < anchor.arrived:
                anchor = req
        if anchor is None:
            return False
        target = anchor.model
        return self._starvation.blocks(
            model,
            target,
            anchor.resident_at_arrival,
            self._now,
            lambda m: m in self._eviction(target, self._running_for(target)),
        )

    # --- grants and bookkeeping -----------------------------------------------------------

    def _grant_serve(self, req: _Request) -> None:
        req.stage, req.swap_id = "serving", None
        self._book.used(req.model, self._now)
        self._ledger.start_serving(req.model)
        self._out.append(d.GrantServe(req.request_id, req.model, str(self.priority(req.model))))

    def _grant_error(self, req: _Request, status: int, message: str) -> None:
        self._forget(req)
        self._out.append(d.GrantError(req.request_id, status, message))

    def _forget(self, req: _Request) -> None:
        """Drop a request that will never serve, with its reservation."""
        del self._requests[req.request_id]
        self._diagnose(self._ledger.release(req.model))

    def _state(self, model: str) -> str:
        return str(self._view.get(model, "stopped"))

    def _is_running(self, model: str) -> bool:
        return self._state(model) not in _NOT_RUNNING

    def _advance(self, now: float) -> None:
        self._now = max(self._now, now)

    def _diagnose(self, problem: str | None) -> None:
        if problem is not None:
            self._out.append(d.Diagnostic(f"{self._name} scheduler: {problem}"))
