"""LocalRouter: the asyncio half of the router — one task, one queue, one scheduler.

Concurrency design (design.md rules 2, 3, 5):

* **One owner.** All scheduling state lives in the pure
  :class:`~modelswap.core.scheduler.FifoScheduler`, and only the loop task
  touches it: it takes one item from one ``asyncio.Queue``, calls
  ``scheduler.handle(event, view)`` with a fresh snapshot of the process
  states, and applies every returned decision in order *without awaiting in
  between* (resolving futures, creating or cancelling tasks). Everybody else —
  handlers, swap workers, stop tasks, process state listeners, the ticker —
  only posts events (``put_nowait``). The loop also owns the registries of
  tickets, pending unload/shutdown ops and swap workers.
* **Slow work is a task that reports back.** A swap (stop evictees, then
  ``ensure_ready``) and an unload/shutdown stop run in tasks the router owns
  (:mod:`~modelswap.router.workers`); they end by posting
  ``SwapDone``/``StopsDone``. The decision to start is taken inside the
  process (``ensure_ready``), never from a state read (#946).
* **Structured ends.** Every task is kept in a set and awaited by
  :meth:`LocalRouter.shutdown`, which runs in a shielded closer task so a
  cancelled caller cannot cut the cleanup short. After the loop has ended,
  late reports (a ``ServeDone`` from a request still streaming) are applied
  synchronously on the caller's stack, so counters stay exact.

* **A config reload is one item.** :meth:`LocalRouter.reconfigure` posts it;
  the loop switches the process table, the caller's state (``on_applied``)
  and the scheduler's rules in one step. A replaced model keeps its process
  until the scheduler says it has drained (``RetireModel``); the retire task
  stops it and reports ``ModelRetired``, and the loop puts the successor in
  place (:mod:`~modelswap.router.process_table`).

Why a fresh view per event and not per decision: decisions of one event are
applied without awaiting, so no process can change state in between.

The loop's helpers: :mod:`~modelswap.router.ticket_book` (the tickets it
follows), :mod:`~modelswap.router.observers` (listeners and swap facts),
:mod:`~modelswap.router.workers` (the tasks it spawns),
:mod:`~modelswap.router.process_table` and :mod:`~modelswap.router.items`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.core.scheduler import FifoScheduler
from modelswap.errors import (
    ModelNotFoundError,
    ModelNotLoadedError,
    ModelswapError,
    RouterError,
    RouterShuttingDownError,
    ShutdownInProgressError,
)
from modelswap.process import ManagedProcess, ProcessState, StateChange
from modelswap.router.facts import FactListener, SwapFinished, SwapStarted
from modelswap.router.items import Barrier as _Barrier
from modelswap.router.items import Item as _Item
from modelswap.router.items import Op as _Op
from modelswap.router.items import Posted as _Posted
from modelswap.router.items import Reload as _Reload
from modelswap.router.items import RouterStatistics
from modelswap.router.observers import RouterObservers
from modelswap.router.preload import PreloadListener, preload_models
from modelswap.router.process_table import ProcessFactory, ProcessTable
from modelswap.router.ticket import GrantedUpstream, LocalTicket, ServeGrant
from modelswap.router.ticket_book import TicketBook
from modelswap.router.update import RouterUpdate
from modelswap.router.workers import RouterWorkers

if TYPE_CHECKING:
    from modelswap.router.api import ModelRouter, Ticket, Upstream

__all__ = ["TICK_INTERVAL", "LocalRouter", "PreloadListener", "RouterStatistics"]

log = logging.getLogger("modelswap.router")

TICK_INTERVAL = 1.0
"""Seconds between ``Tick`` events: the starvation bound's clock (router spec §9 #1)."""

DEFAULT_HEALTH_CHECK_TIMEOUT = 30.0
"""Shutdown grace when none is configured (router spec §1.1: "built without the loader")."""

_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class LocalRouter:
    """The local model router (:class:`~modelswap.router.api.ModelRouter`).

    Build it with :func:`modelswap.router.build.build_router`. Construction
    has no side effects and needs no event loop; the loop task starts with
    :meth:`start` or the first request. End it with :meth:`shutdown` (or
    ``async with``).
    """

    def __init__(
        self,
        scheduler: FifoScheduler,
        processes: Mapping[str, ManagedProcess],
        *,
        name: str = "group",
        health_check_timeout: float = DEFAULT_HEALTH_CHECK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        tick_interval: float = TICK_INTERVAL,
        process_factory: ProcessFactory | None = None,
    ) -> None:
        missing = sorted(scheduler.models - set(processes))
        if missing:
            raise ValueError(f"no process for model(s) {missing}")
        self._scheduler = scheduler
        self._observers = RouterObservers(name)
        self._processes = ProcessTable(
            processes,
            process_factory or (lambda spec: ManagedProcess(spec, clock=clock)),
            self._on_process_change,
        )
        self._name = name
        self._health_check_timeout = (
            health_check_timeout if health_check_timeout > 0 else DEFAULT_HEALTH_CHECK_TIMEOUT
        )
        self._clock = clock
        self._tick_interval = tick_interval

        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._preloads: set[asyncio.Task[None]] = set()
        self._closer: asyncio.Task[None] | None = None
        self._closing = False  # shutdown() was called
        self._exit_loop = False  # the first shutdown's OpDone was applied
        self._loop_done = False  # the loop task has ended: handle inline
        self._ids = itertools.count(1)
        self._workers = RouterWorkers(
            name, self._post, clock, lambda: self._closing, self._processes.every_process
        )

        # Owned by the loop (after it ended: by whoever posts, synchronously).
        self._tickets = TicketBook(name)
        self._ops: dict[int, _Op] = {}
        self._swap_tasks: dict[int, asyncio.Task[None]] = {}
        self._shutdown_op: int | None = None
        self._granting: SwapFinished | None = None  # the swap whose SwapDone is being handled

    # --- queries (synchronous snapshots) ------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def processes(self) -> Mapping[str, ManagedProcess]:
        """The managed processes by model ID (composition, logs and tests; not for deciding)."""
        return dict(self._processes.current)

    def handles(self, model_id: str) -> bool:
        return self._scheduler.handles(model_id)

    def state_of(self, model_id: str) -> str:
        return self._processes.state_of(model_id)

    def running_models(self) -> Mapping[str, str]:
        return self._processes.running()

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            name=self._name,
            scheduler=self._scheduler.statistics(),
            processes={m: p.statistics() for m, p in sorted(self._processes.current.items())},
            tickets=len(self._tickets),
            swap_workers=len(self._swap_tasks),
            tasks=sum(1 for task in self._tasks if not task.done()),
            undelivered_grants=self._tickets.undelivered,
            shutting_down=self._closing,
            closed=self._loop_done,
        )

    def __repr__(self) -> str:
        st = self._scheduler.statistics()
        return (
            f"<LocalRouter {self._name} models={len(self._processes.current)} "
            f"running={dict(self.running_models())} queued={len(st.queue)} "
            f"swaps={len(st.swaps)} in_flight={dict(st.in_flight)}"
            f"{' shutting-down' if self._closing else ''}>"
        )

    # --- requests -------------------------------------------------------------------------

    async def admit(self, model_id: str) -> LocalTicket:
        """Reserve a slot for one request; 404, 429 and "shutting down" raise here."""
        if self._closing:
            raise RouterShuttingDownError(f"{self._name} is shutting down")
        ticket = LocalTicket(next(self._ids), model_id, self._post, self._clock)
        self._submit(_Posted(e.RequestArrived(ticket.request_id, model_id, self._clock()), ticket))
        await ticket.wait_admitted()
        return ticket

    def loaded_upstream(self, model_id: str) -> GrantedUpstream:
        """The upstream of a ready model, bypassing the scheduler (ignored websockets, §3.13).

        Takes no reservation, no in-flight slot and no TTL activity, and never
        starts anything: 404 for a model not served here, 409 if not ready.
        """
        process = self._processes.get(model_id)
        if process is None:
            raise ModelNotFoundError("no local server found for requested model")
        if process.state is not ProcessState.READY:
            raise ModelNotLoadedError(
                f"model {model_id} is not loaded; ignored websocket requests cannot start it"
            )
        priority = str(self._scheduler.priority(model_id))
        return GrantedUpstream(model_id, process.base_url(), priority)

    def keep_alive(self, model_id: str, ttl: float | None) -> None:
        """Set a loaded model's TTL for the rest of its run (Ollama's ``keep_alive``).

        0 unloads it as soon as nothing is in flight, ``math.inf`` keeps it
        loaded; the process applies it only while ready (see
        :meth:`ManagedProcess.keep_alive`). Unknown models are ignored.
        """
        process = self._processes.get(model_id)
        if process is not None and not self._closing:
            process.keep_alive(ttl)

    def preload(
        self, models: Sequence[str], on_preloaded: PreloadListener | None = None
    ) -> asyncio.Task[None]:
        """Load ``models`` one after another in the background (router spec §7.1).

        Each is an ordinary request through the scheduler, so eviction rules
        apply. A delivered grant counts as loaded (no ``GET /`` is sent; the
        grant's TTL accounting still refreshes ``last_use``). Cancelled by
        :meth:`shutdown`.
        """
        task = self._spawn(preload_models(self, tuple(models), on_preloaded), "preload")
        self._preloads.add(task)
        task.add_done_callback(self._preloads.discard)
        return task

    def report_footprint(self, model_id: str, sizes: Mapping[str, int]) -> None:
        """``model_id`` was measured to use ``sizes`` (memory policy input; see core/memory.py)."""
        if model_id in self._processes:
            self._post(e.FootprintMeasured(model_id, dict(sizes), self._clock()))

    # --- unload and shutdown ----------------------------------------------------------------

    async def unload(self, models: Sequence[str] | None = None, timeout: float = 0) -> None:
        """Stop ``models`` (all when None) and return once they are stopped (§3.11).

        ``timeout`` > 0 is every stop's grace. Otherwise each model's
        ``unloadTimeout`` applies: one unload per distinct value, smallest
        first, each awaited before the next. After shutdown: returns at once.
        """
        if self._closing:
            return
        if timeout > 0:
            await self._unload_op(None if models is None else tuple(models), timeout)
            return
        wanted = self._processes.current if models is None else dict.fromkeys(models)
        buckets: dict[float, list[str]] = {}
        for model in wanted:
            process = self._processes.get(model)
            if process is not None:
                buckets.setdefault(process.spec.unload_timeout, []).append(model)
        for grace in sorted(buckets):
            await self._unload_op(tuple(buckets[grace]), grace)

    async def _unload_op(self, models: tuple[str, ...] | None, grace: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self._submit(_Posted(e.UnloadRequested(next(self._ids), models), op=_Op(done, grace)))
        error = await done
        if error is not None:
            raise RouterError(error)

    async def shutdown(self, timeout: float = 0) -> None:
        """Fail every waiter, stop every process, tear them down (§3.12).

        Stops use ``timeout`` as grace if > 0, else ``healthCheckTimeout``. Only
        the first call runs; later ones raise ``<router> shutdown already in
        progress``. Requests still being served are not waited for.
        """
        grace = timeout if timeout > 0 else self._health_check_timeout
        done: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        op = _Op(done, grace)
        if self._closing:
            self._submit(_Posted(e.ShutdownRequested(next(self._ids)), op=op))
            error = await done
            raise ShutdownInProgressError(error or f"{self._name} shutdown already in progress")
        self._closing = True
        for task in list(self._preloads):
            task.cancel()
        self._submit(_Posted(e.ShutdownRequested(next(self._ids)), op=op))
        self._closer = asyncio.get_running_loop().create_task(
            self._close(done), name=f"modelswap.router[{self._name}].close"
        )
        await asyncio.shield(self._closer)

    async def _close(self, done: asyncio.Future[str | None]) -> None:
        await done
        if self._loop_task is not None:
            await asyncio.wait([self._loop_task])
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.info("%s router shut down", self._name)

    async def wait_closed(self) -> None:
        """Return once a shutdown (started by anyone) has finished its cleanup."""
        if self._closer is not None:
            await asyncio.shield(self._closer)

    def start(self) -> None:
        """Start the loop and the ticker now (otherwise the first request does)."""
        if self._loop_task is None and not self._loop_done:
            loop = asyncio.get_running_loop()
            self._loop_task = loop.create_task(self._run(), name=f"modelswap.router[{self._name}]")
            self._spawn(self._tick(), "tick")

    async def __aenter__(self) -> LocalRouter:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._closing:
            await self.wait_closed()
        else:
            await self.shutdown()

    # --- config reload ---------------------------------------------------------------------

    async def reconfigure(
        self, update: RouterUpdate, on_applied: Callable[[], None] | None = None
    ) -> None:
        """Apply a config reload as one event of the loop; return once it is in force.

        Everything switches in one step of the loop, with no await in between:
        the process table (added models get their process, changed and removed
        ones a pending successor), the scheduler's rules, and — through
        ``on_applied``, called in that same step — whatever the caller switches
        with it (the server's config). Requests posted before are handled under
        the old rules, those posted after under the new ones. Unchanged
        processes are not touched. Raises ``RouterShuttingDownError`` once
        shutdown has begun.
        """
        if self._closing:
            raise RouterShuttingDownError(f"{self._name} is shutting down")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit(_Reload(update, done, on_applied))
        await done

    def _reload(self, item: _Reload) -> None:
        """Switch processes, rules and (``on_applied``) the caller's state in one step."""
        try:
            if self._scheduler.statistics().shutting_down:
                raise RouterShuttingDownError(f"{self._name} is shutting down")
            update = item.update
            replace = self._processes.reconfigure(update.specs)
            if update.health_check_timeout > 0:
                self._health_check_timeout = update.health_check_timeout
            if item.on_applied is not None:
                item.on_applied()
            self._handle(_Posted(update.event(replace, self._clock())))
        except Exception as exc:
            if not item.done.done():
                item.done.set_exception(exc)
            if not isinstance(exc, ModelswapError):
                raise
        else:
            if not item.done.done():
                item.done.set_result(None)

    # --- observation hooks (tests, metrics) -----------------------------------------------

    def on_process_change(self, listener: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``listener`` on every state change of every process, current and future.

        Unlike ``ManagedProcess.on_state_change``, it follows a model across a
        config reload that replaces its process. Returns the unsubscribe function.
        """
        return self._observers.on_process_change(listener)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every handled event and process state change."""
        return self._observers.subscribe(listener)

    def subscribe_facts(self, listener: FactListener) -> Callable[[], None]:
        """Call ``listener`` with every :mod:`~modelswap.router.facts` fact, as it happens.

        Called synchronously from the loop: it must not block or call back into
        the router. Returns the unsubscribe function.
        """
        return self._observers.subscribe_facts(listener)

    async def wait_for(self, predicate: Callable[[RouterStatistics], bool]) -> RouterStatistics:
        """Wait until ``predicate(statistics())`` holds; re-checked on every change."""
        return await self._observers.wait_for(self.statistics, predicate)

    async def wait_idle(self) -> None:
        """Return once every event posted before this call has been handled."""
        if self._loop_task is None or self._loop_done:
            return
        done = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Barrier(done))
        await done

    # --- the loop ---------------------------------------------------------------------------

    def _post(self, event: e.Event) -> None:
        self._submit(_Posted(event))

    def _submit(self, item: _Item) -> None:
        if self._loop_done:
            self._dispatch(item)  # the owner has gone: apply late reports right here
            return
        self.start()
        self._inbox.put_nowait(item)

    async def _run(self) -> None:
        try:
            while not self._exit_loop:
                self._dispatch(await self._inbox.get())
        finally:
            self._loop_done = True
            while not self._inbox.empty():
                self._dispatch(self._inbox.get_nowait())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            self._post(e.Tick(self._clock()))

    def _dispatch(self, item: _Item) -> None:
        if isinstance(item, _Barrier):
            if not item.done.done():
                item.done.set_result(None)
            return
        try:
            if isinstance(item, _Reload):
                self._reload(item)
            else:
                self._handle(item)
        except Exception:  # a bug; the loop must survive it or every model wedges
            what = item.update if isinstance(item, _Reload) else item.event
            log.exception("%s router: failed to handle %r", self._name, what)
        self._observers.changed()

    def _handle(self, first: _Posted) -> None:
        """Handle one event and every follow-up it causes, before the next item."""
        pending: deque[_Posted] = deque([first])
        while pending:
            posted = pending.popleft()
            event = self._register(posted)
            self._granting = (
                self._observers.swap_done(event) if isinstance(event, e.SwapDone) else None
            )
            decisions = self._scheduler.handle(event, self._processes.states())
            for decision in decisions:
                self._apply(decision, pending)
            self._granting = None
            self._forget(event)
        self._tickets.refresh_positions(
            lambda: [rid for rid, _ in self._scheduler.statistics().queue]
        )

    def _register(self, posted: _Posted) -> e.Event:
        event = posted.event
        if posted.op is not None and isinstance(event, e.UnloadRequested | e.ShutdownRequested):
            self._ops[event.op_id] = posted.op
            if isinstance(event, e.ShutdownRequested) and self._shutdown_op is None:
                self._shutdown_op = event.op_id
        if isinstance(event, e.ModelRetired):
            self._processes.install_successor(event.model)
        if isinstance(event, e.RequestArrived) and posted.ticket is not None:
            event = self._tickets.register(event, posted.ticket)
        return event

    def _swap_reason(self, swap: d.StartSwap) -> str:
        """Why ``swap`` evicts: ``maxWait`` past the starvation bound, ``memory`` when the
        target needed room, else the policy."""
        max_wait = self._scheduler.max_wait
        if max_wait > 0:
            now = self._clock()
            for info in self._scheduler.statistics().swaps:
                if info.swap_id != swap.swap_id:
                    continue
                for rid in info.waiters:
                    arrived = self._tickets.arrived(rid)
                    if arrived is not None and now - arrived > max_wait:
                        return "maxWait"
        return "memory" if swap.memory else self._name

    def _forget(self, event: e.Event) -> None:
        """Drop tickets and swap workers whose story this event ended."""
        self._tickets.forget(event)
        if isinstance(event, e.SwapDone):
            self._swap_tasks.pop(event.swap_id, None)

    def _apply(self, decision: d.Decision, pending: deque[_Posted]) -> None:
        """Apply one decision; never awaits (decisions.py's table)."""
        match decision:
            case d.Admit(request_id=rid):
                self._tickets.admit(rid)
            case d.Reject(request_id=rid, status=status, message=message):
                self._tickets.reject(rid, status, message, decision.retry_after)
            case d.GrantServe(request_id=rid, model=model, fifo_priority=priority):
                grant = ServeGrant(model, priority, self._processes[model])
                if not self._tickets.grant(rid, grant, self._granting):
                    pending.append(_Posted(e.GrantUndelivered(rid, self._clock())))
            case d.GrantError(request_id=rid, status=status, message=message):
                self._tickets.grant_error(rid, status, message)
            case d.StartSwap():
                if decision.log_line:
                    log.log(_LOG_LEVELS[decision.log_level], "%s", decision.log_line)
                started = SwapStarted(
                    decision.swap_id,
                    decision.model,
                    decision.evict,
                    self._swap_reason(decision),
                    self._clock(),
                )
                times = self._observers.swap_started(started)
                target = self._processes[decision.model]
                evictees = [self._processes[m] for m in decision.evict]
                self._swap_tasks[decision.swap_id] = self._spawn(
                    self._workers.swap(decision, times, target, evictees),
                    f"swap[{decision.model}#{decision.swap_id}]",
                )
            case d.CancelSwap(swap_id=swap_id):
                self._observers.swap_cancelled(swap_id, self._clock)
                task = self._swap_tasks.pop(swap_id, None)
                if task is not None:
                    task.cancel()
            case d.StopModels():
                op = self._ops.get(decision.op_id)
                grace = op.grace if op is not None else self._health_check_timeout
                processes = [p for m in decision.models if (p := self._processes.get(m))]
                self._spawn(
                    self._workers.stop_models(decision, grace, processes), f"{decision.reason}"
                )
            case d.Positions(positions=positions):
                self._tickets.set_positions(positions)
            case d.OpDone(op_id=op_id, error=error):
                op = self._ops.pop(op_id, None)
                if op is not None and not op.done.done():
                    op.done.set_result(error)
                if op_id == self._shutdown_op and error is None:
                    self._exit_loop = True
            case d.Diagnostic(message=message):
                log.error("%s", message)
            case d.RetireModel(model=model):
                log.info("%s router: %s drained, stopping its old definition", self._name, model)
                self._spawn(self._workers.retire(self._processes[model]), f"retire[{model}]")

    def _on_process_change(self, change: StateChange) -> None:
        """A process stopped (crash, TTL, any stop): let queued requests look again (§9 #8)."""
        self._observers.process_changed(change)
        if change.new is ProcessState.STOPPED:
            self._post(e.Tick(self._clock()))
        else:
            self._observers.changed()

    # --- tasks the loop launches -------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(
            coro, name=f"modelswap.router[{self._name}].{what}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


if TYPE_CHECKING:  # the server codes against api.py; prove we implement it

    def _conforms(
        router: LocalRouter, ticket: LocalTicket, upstream: GrantedUpstream
    ) -> tuple[ModelRouter, Ticket, Upstream]:
        return router, ticket, upstream
