"""FifoScheduler invariants under random event sequences (hypothesis state machine).

A fake runtime applies every decision to a simulated process view and keeps its
own books (who is pending, who is serving, which swaps and stops are
outstanding); random rules post arrivals, cancels, swap completions (success,
failure, stale, any order), serve dones, undelivered grants, unloads, stop
completions, outside stops/crashes, ticks, config reloads (``Reconfigured``,
``ModelRetired``) and shutdown. After every step the
scheduler's statistics must agree with those books and the invariants of design
rule 4 hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.core.groups import GroupPolicy, GroupSpec
from modelswap.core.matrix import compile_matrix
from modelswap.core.matrix_policy import MatrixPolicy
from modelswap.core.memory import MemoryPolicy, MemorySpec
from modelswap.core.scheduler import FifoScheduler
from tests.unit.scheduler_harness import FakePolicy

MODELS = ("a", "b", "c", "d")
MEMORY = MemoryPolicy(
    MemorySpec(budget={"vram": 20}, declared={m: {"vram": 8} for m in MODELS}, evict_cost={"a": 3})
)
"""Two of the four fit at once (a third, or a measured-bigger one, must evict)."""
TIGHT = MemoryPolicy(MemorySpec(budget={"vram": 10}, declared={m: {"vram": 8} for m in MODELS}))
"""One at a time: what a reload that shrinks the budget switches to."""


def _policies() -> st.SearchStrategy[object]:
    relation = st.fixed_dictionaries(
        {m: st.sets(st.sampled_from([x for x in MODELS if x != m])) for m in MODELS}
    ).map(FakePolicy)
    groups = st.just(
        GroupPolicy(
            {
                "g1": GroupSpec(swap=True, exclusive=True, members=("a", "b")),
                "g2": GroupSpec(swap=False, exclusive=False, members=("c",)),
                "p": GroupSpec(swap=True, exclusive=False, persistent=True, members=("d",)),
            }
        )
    )
    matrix = st.just(
        MatrixPolicy(compile_matrix({}, {"c": 3}, {"ab": "a & (b | c)", "cd": "c & d"}, MODELS))
    )
    return st.one_of(relation, groups, matrix)


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.view: dict[str, str] = dict.fromkeys(MODELS, "stopped")
        self.now = 0.0
        self.next_id = 1
        self.model_of: dict[int, str] = {}
        self.answers: Counter[int] = Counter()  # Admit/Reject per request
        self.pending: set[int] = set()  # admitted, no grant, not cancelled
        self.serving: set[int] = set()  # serve granted, no done reported yet
        self.finished: Counter[int] = Counter()  # grants + cancels per request
        self.swaps: dict[int, d.StartSwap] = {}  # started, not yet reported
        self.cancelled_swaps: set[int] = set()
        self.stops: dict[int, d.StopModels] = {}  # emitted, StopsDone not posted
        self.unloading: dict[int, tuple[str, ...]] = {}
        self.ops_done: Counter[int] = Counter()
        self.ops: set[int] = set()  # unload and shutdown op IDs posted
        self.admitted: set[int] = set()
        self.gone: set[int] = set()  # arrived with client_gone
        self.shut_down = False
        self.retiring: set[str] = set()  # RetireModel emitted, ModelRetired not posted

    @initialize(
        policy=_policies(),
        limits=st.fixed_dictionaries({m: st.integers(0, 4) for m in MODELS}),
        priority=st.fixed_dictionaries({m: st.integers(-1, 2) for m in MODELS}),
        max_wait=st.sampled_from([0.0, 5.0]),
        min_residency=st.sampled_from([0.0, 3.0]),
        memory=st.sampled_from([None, MEMORY]),
    )
    def setup(
        self,
        policy: FakePolicy,
        limits: dict[str, int],
        priority: dict[str, int],
        max_wait: float,
        min_residency: float,
        memory: MemoryPolicy | None,
    ) -> None:
        self.s = FifoScheduler(
            MODELS,
            policy,
            limits=limits,
            priority=priority,
            max_wait=max_wait,
            min_residency=min_residency,
            memory=memory,
        )
        self.settings = {"max_wait": max_wait, "min_residency": min_residency}

    # --- the fake runtime ------------------------------------------------------------

    def post(self, event: e.Event) -> list[d.Decision]:
        out = self.s.handle(event, dict(self.view))
        for decision in out:
            self.apply(decision)
        return out

    def apply(self, x: d.Decision) -> None:
        assert not isinstance(x, d.Diagnostic), x
        match x:
            case d.Admit(rid) | d.Reject(rid):
                self.answers[rid] += 1
                assert self.answers[rid] == 1, f"request {rid} answered twice"
                if isinstance(x, d.Admit):
                    self.pending.add(rid)
                    self.admitted.add(rid)
            case d.GrantServe(rid, model):
                assert model == self.model_of[rid]
                live = [s for i, s in self.swaps.items() if i not in self.cancelled_swaps]
                assert not any(model in s.evict for s in live), f"serving an evictee: {x}"
                assert not any(model in ms for ms in self.unloading.values()), x
                assert model not in self.retiring, f"served by a retiring process: {x}"
                self.resolve(rid)
                self.serving.add(rid)
            case d.GrantError(rid):
                self.resolve(rid)
            case d.StartSwap(swap_id, model, evict):
                busy = {self.model_of[r] for r in self.serving}
                assert not busy.intersection(evict), f"evicting a busy model: {x}"
                assert model not in evict
                frozen = {m for ms in self.unloading.values() for m in ms}
                assert model not in frozen and not frozen.intersection(evict), x
                assert model not in self.retiring and not self.retiring.intersection(evict), x
                assert swap_id not in self.swaps and swap_id not in self.cancelled_swaps
                self.swaps[swap_id] = x
                # Evictees keep their (stale) state until the swap reports: the
                # view is advice and the scheduler must not depend on it.
                if self.view[model] == "stopped":
                    self.view[model] = "starting"
            case d.CancelSwap(swap_id):
                assert swap_id in self.swaps
                self.cancelled_swaps.add(swap_id)
                for m in self.swaps[swap_id].evict:
                    self.view[m] = "stopped"
            case d.StopModels(op_id, models, reason):
                assert op_id not in self.stops
                self.stops[op_id] = x
                if reason == "unload":
                    self.unloading[op_id] = models
            case d.OpDone(op_id):
                self.ops_done[op_id] += 1
                assert self.ops_done[op_id] == 1
                self.unloading.pop(op_id, None)
            case d.Positions(positions):
                assert all(rid in self.pending for rid in positions)
            case d.RetireModel(model):
                assert model not in self.retiring, f"retired twice: {x}"
                assert model not in {self.model_of[r] for r in self.serving}, x
                live = [s for i, s in self.swaps.items() if i not in self.cancelled_swaps]
                assert not any(model == s.model or model in s.evict for s in live), x
                self.retiring.add(model)

    def resolve(self, rid: int) -> None:
        assert rid in self.pending, f"request {rid} resolved but not pending"
        self.pending.discard(rid)
        self.finished[rid] += 1
        assert self.finished[rid] == 1

    # --- rules ----------------------------------------------------------------------------

    @rule(model=st.sampled_from([*MODELS, "ghost"]), dt=st.sampled_from([0.0, 0.5, 4.0]))
    def arrive(self, model: str, dt: float) -> None:
        self.now += dt
        rid = self.next_id
        self.next_id += 1
        self.model_of[rid] = model
        self.post(e.RequestArrived(rid, model, self.now))
        assert self.answers[rid] == 1

    @rule(model=st.sampled_from(MODELS))
    def arrive_gone(self, model: str) -> None:
        rid = self.next_id
        self.next_id += 1
        self.model_of[rid] = model
        self.gone.add(rid)
        out = self.post(e.RequestArrived(rid, model, self.now, client_gone=True))
        assert not any(isinstance(x, d.Admit) for x in out)

    @precondition(lambda self: self.next_id > 1)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        rid = data.draw(st.integers(1, self.next_id - 1))
        was_pending = rid in self.pending
        out = self.post(e.Cancelled(rid))
        assert not any(getattr(x, "request_id", None) == rid for x in out)
        if was_pending:
            self.pending.discard(rid)
            self.finished[rid] += 1

    @precondition(lambda self: bool(self.swaps))
    @rule(data=st.data(), ok=st.booleans(), dt=st.sampled_from([0.0, 1.0, 6.0]))
    def finish_swap(self, data: st.DataObject, ok: bool, dt: float) -> None:
        swap_id = data.draw(st.sampled_from(sorted(self.swaps)))
        swap = self.swaps.pop(swap_id)
        stale = swap_id in self.cancelled_swaps
        self.now += dt
        if not stale and not self.shut_down:
            for m in swap.evict:
                self.view[m] = "stopped"
            self.view[swap.model] = "ready" if ok else "stopped"
        out = self.post(e.SwapDone(swap_id, None if ok else "boom", self.now))
        if stale:
            assert out == [], "a cancelled swap's report resolved something"

    @precondition(lambda self: bool(self.serving))
    @rule(data=st.data(), undelivered=st.booleans())
    def serve_done(self, data: st.DataObject, undelivered: bool) -> None:
        rid = data.draw(st.sampled_from(sorted(self.serving)))
        self.serving.discard(rid)
        self.post(e.GrantUndelivered(rid) if undelivered else e.ServeDone(rid, self.now))

    @rule(models=st.none() | st.lists(st.sampled_from([*MODELS, "ghost"]), max_size=3))
    def unload(self, models: list[str] | None) -> None:
        op_id = self.next_id
        self.next_id += 1
        self.ops.add(op_id)
        self.post(e.UnloadRequested(op_id, None if models is None else tuple(models)))

    @precondition(lambda self: bool(self.stops))
    @rule(data=st.data())
    def stops_done(self, data: st.DataObject) -> None:
        op_id = data.draw(st.sampled_from(sorted(self.stops)))
        stop = self.stops.pop(op_id)
        final = "shutdown" if stop.reason == "shutdown" else "stopped"
        for m in stop.models:
            if self.view[m] != "shutdown":
                self.view[m] = final
        self.post(e.StopsDone(op_id, self.now))

    @rule(model=st.sampled_from(MODELS), crash=st.booleans())
    def outside_stop(self, model: str, crash: bool) -> None:
        """TTL (only when idle) or a crash: the view changes, no event is posted."""
        idle = model not in {self.model_of[r] for r in self.serving}
        if self.view[model] == "ready" and (crash or idle):
            self.view[model] = "stopped"

    @rule(model=st.sampled_from(MODELS), vram=st.sampled_from([0, 8, 12, 30]))
    def measured(self, model: str, vram: int) -> None:
        """A footprint report (memory policy input; without one it is only remembered)."""
        self.post(e.FootprintMeasured(model, {"vram": vram}, None))

    @rule(dt=st.sampled_from([1.0, 10.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.post(e.Tick(self.now))

    @rule(
        policy=_policies(),
        kept=st.sets(st.sampled_from(MODELS)),
        replaced=st.sets(st.sampled_from(MODELS)),
        priority=st.fixed_dictionaries({m: st.integers(-1, 2) for m in MODELS}),
        limit=st.integers(0, 4),
        memory=st.sampled_from([None, MEMORY, TIGHT]),
    )
    def reload(
        self,
        policy: FakePolicy,
        kept: set[str],
        replaced: set[str],
        priority: dict[str, int],
        limit: int,
        memory: MemoryPolicy | None,
    ) -> None:
        """A config reload: some models removed, some replaced, new rules for all
        (a new memory budget too)."""
        removed = set(self.s.models) - kept
        event = e.Reconfigured(
            frozenset(kept),
            policy,
            self.now,
            limits=dict.fromkeys(kept, limit),
            priority={m: p for m, p in priority.items() if m in kept},
            replace=frozenset(removed | (replaced & kept & set(self.s.models))),
            memory=memory,
            **self.settings,
        )
        queued_removed = {rid for rid, model in self.s.statistics().queue if model not in kept}
        out = self.post(event)
        failed = {x.request_id for x in out if isinstance(x, d.GrantError)}
        assert failed == queued_removed or self.shut_down

    @precondition(lambda self: bool(self.retiring))
    @rule(data=st.data())
    def retired(self, data: st.DataObject) -> None:
        model = data.draw(st.sampled_from(sorted(self.retiring)))
        self.retiring.discard(model)
        if self.view[model] != "shutdown":
            self.view[model] = "stopped"
        self.post(e.ModelRetired(model, self.now))

    @rule()
    def shutdown(self) -> None:
        op_id = self.next_id
        self.next_id += 1
        self.ops.add(op_id)
        out = self.post(e.ShutdownRequested(op_id))
        if self.shut_down:
            assert out == [d.OpDone(op_id, "group shutdown already in progress")]
        self.shut_down = True
        assert not self.pending

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def books_agree(self) -> None:
        if not hasattr(self, "s"):
            return
        st_ = self.s.statistics()
        serving = Counter(self.model_of[r] for r in self.serving)
        held = serving + Counter(self.model_of[r] for r in self.pending)
        assert dict(st_.in_flight) == dict(serving)
        assert dict(st_.reservations) == dict(held)
        assert all(n > 0 for n in st_.in_flight.values())
        queued = {rid for rid, _ in st_.queue}
        waiting = {w for s in st_.swaps for w in s.waiters}
        assert queued | waiting == self.pending and not queued & waiting

    @invariant()
    def swaps_are_sound(self) -> None:
        if not hasattr(self, "s"):
            return
        swaps = self.s.statistics().swaps
        targets = [s.model for s in swaps]
        assert len(targets) == len(set(targets)), "two active swaps for one model"
        for i, one in enumerate(swaps):
            for other in swaps[i + 1 :]:
                assert not _collide(one.model, one.evict, other.model, other.evict)

    @invariant()
    def nothing_is_stuck(self) -> None:
        """If nothing is active, nothing can be blocked: the last drain emptied the queue."""
        if not hasattr(self, "s"):
            return
        st_ = self.s.statistics()
        if st_.shutting_down:
            assert st_.queue == () and st_.swaps == ()
        elif not st_.swaps and not st_.unloading and not st_.in_flight:
            # Every model a reload replaced has been told to retire by now.
            assert set(st_.retiring) == self.retiring, (st_, self.retiring)
            if not st_.retiring:
                assert st_.queue == (), st_

    def teardown(self) -> None:
        if not hasattr(self, "s"):
            return
        # Shut down and let everything report back: every request ends exactly once.
        if not self.shut_down:
            self.shutdown()
        for rid in sorted(self.serving):
            self.post(e.ServeDone(rid))
        for op_id in sorted(self.stops):
            self.post(e.StopsDone(op_id))
        assert not self.pending
        assert all(self.finished[rid] == 1 for rid in self.admitted)
        assert all(self.answers[rid] == 1 for rid in self.model_of if rid not in self.gone)
        assert all(self.ops_done[op] == 1 for op in self.ops)
        st_ = self.s.statistics()
        assert st_.in_flight == {} and st_.reservations == {} and st_.unloading == ()


def _collide(t1: str, e1: Sequence[str], t2: str, e2: Sequence[str]) -> bool:
    return t1 in e2 or t2 in e1 or bool(set(e1) & set(e2))


SchedulerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestScheduler = SchedulerMachine.TestCase
