"""ManagedProcess: one model's upstream, started on demand and stopped for good.

Concurrency design — one owner, operations in order (design.md rules 2, 3):

* Every lifecycle request (``ensure_ready``, ``run``, ``stop``, ``shutdown``,
  and the internal "child exited" / "TTL due" notices) is an *operation*
  appended to a queue. One controller task, started lazily and awaited by
  :meth:`ManagedProcess.shutdown`, takes them one at a time and is the only
  writer of the state. Callers never look at the state to decide anything;
  they post and await a future. So "is it stopped? then start it" is decided
  where the state cannot change underneath (issue #946, router.md §9.23).
* A start is the only long operation that must stay interruptible. While it
  runs, the controller waits on three things at once — the health poll, the
  child's exit and the next operation — and reacts: a health 200 makes it
  ready, an exit fails it fast, a stop/teardown aborts it, another
  ``ensure_ready`` joins it. A stop is applied inline; operations arriving
  meanwhile wait their turn, so an ``ensure_ready`` during a stop starts the
  model again once the stop is complete.
* Callers wait on futures, never on the controller. Cancelling a caller
  cancels only its own future; the start or stop it asked for goes on (so a
  client disconnect never cancels a load, router.md §2.2). The controller owns
  the only other tasks (health poll, TTL monitor) and ends them itself.

Reading (:attr:`state`, :meth:`statistics`, ``repr``) is a synchronous snapshot
for ``/running`` and logs. :meth:`track_request` is the one synchronous gate
the forwarder uses: it checks READY and counts the request in one step, and
the controller re-checks the TTL rule in its own step before it unloads, so
the TTL stop and new requests cannot interleave (§9.7).

The controller's helpers live next door: :mod:`.starting` (spawn, then race
health, exit and operations), :mod:`.ttl` (request accounting and the TTL
monitor), :mod:`.stopping` (the kill procedure), :mod:`.operations` (the queue's
vocabulary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp

from modelswap.errors import (
    ModelswapError,
    ProcessStoppedError,
    ServiceUnavailableError,
    ShuttingDownError,
    StartAbortedError,
    UpstreamExitedError,
    UpstreamStartError,
)
from modelswap.observability.log_fanout import LogFanout, LogSink
from modelswap.process import operations as ops
from modelswap.process.child import Child
from modelswap.process.command import stop_command_argv
from modelswap.process.portcheck import ensure_port_free
from modelswap.process.spec import Launch, ProcessSpec, prepare_launch
from modelswap.process.starting import race_start, spawn_child
from modelswap.process.state import ProcessState, ProcessStatistics, StateChange, check_transition
from modelswap.process.stopping import terminate
from modelswap.process.ttl import TTL_TICK, TtlTimer

log = logging.getLogger("modelswap.process")

S = ProcessState

FAILED_START_GRACE = 5.0  # router.md §2.5: cleanup after a start that failed by itself
TEARDOWN_GRACE = 1.0  # router.md §2.9
PIPE_BACKSTOP = 10.0  # router.md §2.5 step 4

StateListener = Callable[[StateChange], None]


class ManagedProcess:
    """One model's upstream process: started on demand, health-checked, stopped cleanly.

    Construct it anywhere (no event loop needed); call :meth:`shutdown` (or use
    ``async with``) to end it, which kills any child it still has.
    """

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        base_env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ttl_tick: float = TTL_TICK,
        pipe_backstop: float = PIPE_BACKSTOP,
        logs: LogFanout | None = None,
        upstream_sink: LogSink | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.spec = spec
        self._base_env: Mapping[str, str] = os.environ if base_env is None else base_env
        self._pipe_backstop = pipe_backstop
        self._owns_logs = logs is None
        self.logs = logs if logs is not None else LogFanout(spec.model_id, sink=upstream_sink)
        self._http = http  # shared pool for health probes; None: one pool per start

        self._state = S.STOPPED
        self._listeners: list[StateListener] = []
        self._queue: deque[ops.Op] = deque()
        self._wakeup = asyncio.Event()
        self._controller: asyncio.Task[None] | None = None

        # Owned by the controller:
        self._child: Child | None = None
        self._launch: Launch | None = None
        self._joiners: list[ops.Ensure] = []
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._run_exits: list[asyncio.Future[None]] = []
        # Request accounting (written synchronously by track_request) and the TTL monitor:
        self._ttl = TtlTimer(
            spec.ttl, lambda child: self._post(ops.TtlDue(child)), clock=clock, tick=ttl_tick
        )
        self._starts = 0
        self._readies = 0
        self._crashes = 0

    # --- reading ----------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def state(self) -> ProcessState:
        """A snapshot; never decide to start or stop from it (use ensure_ready/stop)."""
        return self._state

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.alive else None

    @property
    def in_flight(self) -> int:
        return self._ttl.in_flight

    @property
    def last_use(self) -> float | None:
        return self._ttl.last_use

    @property
    def ttl(self) -> float:
        """The TTL in force: the config's ``ttl``, or this run's :meth:`keep_alive`."""
        return self._ttl.ttl

    def statistics(self) -> ProcessStatistics:
        return ProcessStatistics(
            model_id=self.model_id,
            state=self._state,
            pid=self.pid,
            port=self.spec.port,
            in_flight=self._ttl.in_flight,
            last_use=self._ttl.last_use,
            starts=self._starts,
            restarts=max(0, self._readies - 1),
            crashes=self._crashes,
        )

    def __repr__(self) -> str:
        st = self.statistics()
        return (
            f"<ManagedProcess {st.model_id!r} {st.state.name} pid={st.pid} "
            f"port={st.port} inflight={st.in_flight}>"
        )

    def on_state_change(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener`` synchronously on every real state change; returns an unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # --- forwarding handle ---------------------------------------------------------

    def base_url(self) -> str:
        """The upstream's base URL; 503 ``[<id>] process is not ready`` unless READY."""
        if self._state is not S.READY:
            raise ServiceUnavailableError(f"[{self.model_id}] process is not ready")
        return self.spec.proxy.strip()

    @property
    def upstream_url(self) -> str:
        return self.base_url()

    @contextlib.asynccontextmanager
    async def track_request(self) -> AsyncIterator[str]:
        """Count one forwarded request for TTL; yields the base URL.

        Enter and check happen in one synchronous step, so a request is either
        refused (503) or counted before any TTL decision can see the process
        idle. A streamed response counts until the context exits.
        """
        url = self.base_url()
        with self._ttl.request():
            yield url

    # --- operations -------------------------------------------------------------------

    async def ensure_ready(self) -> None:
        """Return once READY, starting (or joining a start) as needed.

        Raises the start error, ``aborted`` (StartAbortedError) if a stop
        interrupted the start, or ``[<id>] shutdown`` after teardown. Cancelling
        the caller does not cancel the start.
        """
        done = self._new_future()
        self._post(ops.Ensure(done))
        await done

    async def run(self) -> None:
        """Start from STOPPED and return once the child is gone (tests; spec §2.2).

        Returns None after a stop (TTL included); raises the start error,
        ``aborted``, ``[<id>] upstream exited unexpectedly`` or ``[<id>] shutdown``.
        """
        ready, gone = self._new_future(), self._new_future()
        self._post(ops.Ensure(ready, run_exit=gone))
        try:
            await ready
        except BaseException:
            gone.cancel()  # nobody will wait for it: no "exception never retrieved"
            raise
        await gone

    async def wait_ready(self) -> None:
        """Wait for the next event that settles readiness; never starts anything."""
        if self._state is S.READY:
            return
        if self._state is S.SHUTDOWN:
            raise self._shutdown_error()
        waiter = self._new_future()
        self._ready_waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._ready_waiters.remove(waiter)

    async def stop(self, timeout: float) -> None:
        """Return once STOPPED; ``timeout`` is the grace before SIGKILL.

        A no-op when already stopped; aborts a start in progress. Raises
        ``[<id>] shutdown`` only after teardown. Cancelling the caller does not
        cancel the stop.
        """
        done = self._new_future()
        self._post(ops.Stop(timeout, done))
        await done

    def keep_alive(self, ttl: float | None) -> None:
        """Use ``ttl`` (seconds) as this run's TTL; 0 = unload as soon as idle, inf = never.

        Ollama's ``keep_alive``. Applied by the controller, and only if READY:
        the override ends with the run (a later start uses the config's
        ``ttl`` again). The TTL rule itself still decides, so a request in
        flight keeps the model. ``None`` restores the config's ``ttl``.
        """
        self._post(ops.KeepAlive(ttl))

    async def shutdown(self) -> None:
        """Teardown: state SHUTDOWN at once, child killed (1 s grace), all later ops fail."""
        done = self._new_future()
        self._post(ops.Shutdown(done))
        controller = self._controller
        with contextlib.suppress(ModelswapError):
            await asyncio.shield(done)
        if controller is not None:
            await asyncio.wait([controller])  # never raises; the controller logs its own failure

    async def __aenter__(self) -> ManagedProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # --- plumbing -----------------------------------------------------------------------

    def _new_future(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    def _shutdown_error(self) -> ShuttingDownError:
        return ShuttingDownError(f"[{self.model_id}] shutdown")

    def _post(self, op: ops.Op) -> None:
        if self._state is S.SHUTDOWN and (self._controller is None or self._controller.done()):
            self._reject(op)  # terminal: nobody will ever apply it
            return
        self._queue.append(op)
        self._wakeup.set()
        if self._controller is None:
            self._controller = asyncio.get_running_loop().create_task(
                self._control(), name=f"modelswap.process[{self.model_id}]"
            )

    def _reject(self, op: ops.Op) -> None:
        if isinstance(op, ops.Shutdown):
            ops.settle(op.done)
        elif isinstance(op, ops.Ensure | ops.Stop):
            ops.settle(op.done, self._shutdown_error())

    def _set_state(self, new: ProcessState) -> None:
        old = self._state
        if not check_transition(old, new):
            return
        self._state = new
        if old is S.READY:
            self._ttl.end_run()  # keep_alive lasts one run
        change = StateChange(self.model_id, old, new)
        log.debug("<%s> %s -> %s", self.model_id, old, new)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("<%s> state listener failed", self.model_id)

    def _settle_waiters(self, error: BaseException | None) -> None:
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            ops.settle(waiter, error)

    def _end_runs(self, error: BaseException | None) -> None:
        runs, self._run_exits = self._run_exits, []
        for run in runs:
            ops.settle(run, error)

    async def _next_op(self) -> ops.Op:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    # --- the controller -------------------------------------------------------------------

    async def _control(self) -> None:
        try:
            while True:
                op = await self._next_op()
                if isinstance(op, ops.Ensure):
                    await self._ensure(op)
                elif isinstance(op, ops.Stop):
                    await self._stop_ready(op.timeout)
                    ops.settle(op.done)
                elif isinstance(op, ops.TtlDue):
                    await self._ttl_due(op.child)
                elif isinstance(op, ops.ChildExited):
                    await self._child_exited(op.child)
                elif isinstance(op, ops.KeepAlive):
                    await self._keep_alive(op.ttl)
                else:
                    await self._teardown()
                    ops.settle(op.done)
                    return
        except Exception:
            log.exception("<%s> process controller failed; tearing down", self.model_id)
            self._state = S.SHUTDOWN  # last resort: skip the table, nothing may run anymore
            raise
        except BaseException:  # cancelled (the loop is going away): same end, quietly
            self._state = S.SHUTDOWN
            raise
        finally:
            self._emergency_cleanup()

    def _emergency_cleanup(self) -> None:
        """Synchronous end of everything still owned (also after cancellation)."""
        self._ttl.cancel()
        if self._child is not None and self._child.alive:
            self._child.kill_now()
        error = self._shutdown_error()
        self._settle_waiters(error)
        self._end_runs(error)
        for joiner in self._joiners:
            ops.settle(joiner.done, error)
        self._joiners.clear()
        while self._queue:
            self._reject(self._queue.popleft())
        if self._owns_logs:
            self.logs.close()

    async def _ensure(self, op: ops.Ensure) -> None:
        if self._state is S.READY:
            if op.run_exit is None:
                ops.settle(op.done)
            else:
                ops.settle(op.done, self._wrong_state_for_run())
            return
        # Requests queued right behind this one asked for the same thing at the
        # same time: they share this start as co-requesters.
        requesters = [op]
        while self._queue and isinstance(self._queue[0], ops.Ensure):
            nxt = self._queue.popleft()
            assert isinstance(nxt, ops.Ensure)
            requesters.append(nxt)
        await self._start(requesters)

    def _wrong_state_for_run(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"[{self.model_id}] could not be started in {self._state} state"
        )

    async def _start(self, requesters: list[ops.Ensure]) -> None:
        """STOPPED → STARTING → READY (or back to STOPPED / on to SHUTDOWN)."""
        self._set_state(S.STARTING)
        self._starts += 1
        try:
            self._launch = prepare_launch(self.spec, self._base_env)
            await ensure_port_free(self._launch.argv, self.spec.proxy)
            self._child = await spawn_child(
                self._launch,
                on_output=self.logs.write,
                on_exit=lambda child: self._post(ops.ChildExited(child)),
            )
        except UpstreamStartError as error:
            log.error("<%s> start failed: %s", self.model_id, error)
            self._set_state(S.STOPPED)
            self._finish_start(requesters, error)
            return
        outcome = await race_start(
            self._child,
            self._launch.health_url,
            timeout=self.spec.health_check_timeout,
            http=self._http,
            take_interrupt=self._take_interrupt,
            wakeup=self._wakeup,
            name=self.model_id,
        )
        if isinstance(outcome, ops.Interrupt):
            await self._abort_start(requesters, outcome)
        elif isinstance(outcome, UpstreamStartError):
            log.error("<%s> start failed: %s", self.model_id, outcome)
            await self._release_child(FAILED_START_GRACE)
            self._set_state(S.STOPPED)
            self._finish_start(requesters, outcome)
        else:
            self._became_ready(requesters)

    def _take_interrupt(self) -> ops.Interrupt | None:
        """Apply what arrived during a start: a stop/teardown is returned, others deferred.

        ``ensure_ready`` joins the start; ``run`` is refused (not STOPPED);
        stale exit/TTL notices are dropped (the start watches the exit itself).
        """
        while self._queue:
            op = self._queue.popleft()
            if isinstance(op, ops.Interrupt):
                return op
            if isinstance(op, ops.Ensure):
                if op.run_exit is not None:
                    ops.settle(op.done, self._wrong_state_for_run())
                else:
                    self._joiners.append(op)
        return None

    def _became_ready(self, requesters: list[ops.Ensure]) -> None:
        self._set_state(S.READY)
        self._readies += 1
        self._ttl.touch()  # §9.7: idle time counts from readiness
        for op in [*requesters, *self._joiners]:
            if op.run_exit is not None:
                self._run_exits.append(op.run_exit)
            ops.settle(op.done)
        self._joiners.clear()
        self._settle_waiters(None)
        self._ttl.arm(self._child)
        log.info("<%s> ready (pid %s)", self.model_id, self.pid)

    def _finish_start(self, requesters: list[ops.Ensure], error: UpstreamStartError) -> None:
        """A start failed by itself: requesters get the error, joiners try again."""
        for op in requesters:
            ops.settle(op.done, error)
        self._settle_waiters(error)
        retry = [op for op in self._joiners if not op.done.done()]
        self._joiners.clear()
        # Joiners saw "starting" and were promised a fresh look afterwards
        # (router.md §2.2): put them back at the head of the queue, in order.
        self._queue.extendleft(reversed(retry))

    async def _abort_start(self, requesters: list[ops.Ensure], cause: ops.Interrupt) -> None:
        """A stop or teardown arrived during the start (router.md §2.6, §2.9)."""
        if isinstance(cause, ops.Shutdown):
            # Fix §9.20: the abort uses the interrupting operation's grace.
            self._set_state(S.SHUTDOWN)
            await self._release_child(TEARDOWN_GRACE)
            error: BaseException = self._shutdown_error()
        else:
            await self._release_child(cause.timeout)
            self._set_state(S.STOPPED)
            error = StartAbortedError("aborted")
        log.info("<%s> start aborted", self.model_id)
        for op in [*requesters, *self._joiners]:
            ops.settle(op.done, error)
        self._joiners.clear()
        self._settle_waiters(error)
        if isinstance(cause, ops.Stop):
            ops.settle(cause.done)
        else:
            self._queue.appendleft(cause)  # let the main loop finish the teardown

    async def _release_child(self, grace: float) -> None:
        """Run the kill procedure on the current child (if any) and forget it."""
        child = self._child
        if child is None:
            return
        launch = self._launch
        stop_argv = stop_command_argv(self.spec.cmd_stop, child.pid) if child.alive else None
        await terminate(
            child,
            grace=grace,
            stop_argv=stop_argv,
            env=launch.env if launch is not None else self._base_env,
            pipe_backstop=self._pipe_backstop,
            name=self.model_id,
        )
        self._child = None

    async def _stop_ready(self, timeout: float) -> None:
        if self._state is not S.READY:
            return  # STOPPED: a no-op that emits nothing and releases nobody
        self._set_state(S.STOPPING)
        await self._ttl.disarm()
        await self._release_child(timeout)
        self._set_state(S.STOPPED)
        self._settle_waiters(ProcessStoppedError(f"[{self.model_id}] stopped"))
        self._end_runs(None)

    async def _child_exited(self, child: Child) -> None:
        if child is not self._child or self._state is not S.READY:
            return  # stale: a stop or failed start already dealt with this child
        self._crashes += 1
        log.warning(
            "<%s> upstream process exited unexpectedly (exit code %s)",
            self.model_id,
            child.returncode,
        )
        self._set_state(S.STOPPED)
        await self._ttl.disarm()
        await self._release_child(FAILED_START_GRACE)  # sweeps the group, drains pipes
        error = UpstreamExitedError(f"[{self.model_id}] upstream exited unexpectedly")
        self._settle_waiters(error)
        self._end_runs(error)

    async def _teardown(self) -> None:
        self._set_state(S.SHUTDOWN)
        await self._ttl.disarm()
        await self._release_child(TEARDOWN_GRACE)
        error = self._shutdown_error()
        self._settle_waiters(error)
        self._end_runs(error)

    # --- TTL ------------------------------------------------------------------------------

    async def _keep_alive(self, ttl: float | None) -> None:
        if self._state is not S.READY:
            return  # nothing loaded to keep (the stop or crash cleared any override)
        self._ttl.set_override(ttl)
        await self._ttl.disarm()
        self._ttl.arm(self._child)

    async def _ttl_due(self, child: Child) -> None:
        if child is not self._child or self._state is not S.READY:
            return
        await self._ttl.disarm()  # it posted this and is ending anyway
        if not self._ttl.expired():
            self._ttl.arm(self._child)  # a request arrived after the monitor looked: keep serving
            return
        log.info("<%s> Unloading model, TTL of %ss reached", self.model_id, f"{self.ttl:g}")
        await self._stop_ready(self.spec.unload_timeout)
