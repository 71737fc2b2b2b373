"""FifoScheduler: router spec §8.2 scenarios, §8.1 at scheduler level, §9 fixes.

Pure and synchronous: events in, decisions out, a dict for the process view.
Swap IDs are handed out by the scheduler from 1 upwards, so tests can name them.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelswap.core import events as e
from modelswap.core.decisions import (
    Admit,
    CancelSwap,
    GrantError,
    GrantServe,
    OpDone,
    Positions,
    Reject,
    StartSwap,
    StopModels,
)
from modelswap.core.ledger import Ledger
from modelswap.core.scheduler import FifoScheduler, SwapInfo
from tests.unit.scheduler_harness import FakePolicy, Harness, kinds, mutual

NOT_FOUND = Reject(0, 404, "no local server found for requested model")
TOO_MANY = "Too many requests"


def serve(rid: int, model: str, priority: str = "0") -> GrantServe:
    return GrantServe(rid, model, priority)


# --- §8.2 scheduler scenarios ----------------------------------------------------------


def test_s82_29_already_cancelled_request_is_not_admitted() -> None:
    h = Harness("a", view={"a": "ready"})
    assert h(e.RequestArrived(1, "a", 0.0, client_gone=True)) == []
    assert h.stats.reservations == {}
    assert h.stats.in_flight == {}


def test_s82_30_internal_request_is_admitted_like_any_other() -> None:
    # No admit slot in our design: Admit is always emitted and a preload simply
    # ignores it; the grant follows as for an HTTP request.
    h = Harness("a", view={"a": "ready"})
    assert h.req(1, "a") == [Admit(1), serve(1, "a")]


def test_s82_31_releasing_without_reservation_is_clamped_and_reported() -> None:
    # llama-swap panics; we clamp and return a Diagnostic (router spec §9 #24).
    s = FifoScheduler(["a"], FakePolicy())
    out = s.handle(e.ServeDone(99), {"a": "ready"})
    assert kinds(out) == ["Diagnostic"]
    assert s.statistics().in_flight == {} and s.statistics().reservations == {}
    ledger = Ledger()
    assert ledger.release("a") is not None and ledger.reservations == {}
    assert ledger.stop_serving("a") is not None and ledger.in_flight_counts == {}


def test_s82_31_duplicate_serve_done_is_reported_not_double_counted() -> None:
    s = FifoScheduler(["a"], FakePolicy())
    view = {"a": "ready"}
    s.handle(e.RequestArrived(1, "a", 0.0), view)
    s.handle(e.RequestArrived(2, "a", 0.0), view)
    assert s.handle(e.ServeDone(1), view) == []
    assert kinds(s.handle(e.ServeDone(1), view)) == ["Diagnostic"]
    assert s.statistics().in_flight == {"a": 1}
    assert s.statistics().reservations == {"a": 1}


def test_s82_32_fast_path() -> None:
    h = Harness("a", view={"a": "ready"})
    assert h.req(1, "a") == [Admit(1), serve(1, "a")]
    assert h.swaps_started() == []
    assert h.stats.in_flight == {"a": 1}


def test_s82_33_priority_metadata() -> None:
    h = Harness("a", view={"a": "ready"}, priority={"a": 7})
    assert h.req(1, "a") == [Admit(1), serve(1, "a", "7")]


def test_s82_34_unknown_model_is_rejected_at_admission() -> None:
    h = Harness("a")
    assert h.req(1, "ghost") == [Reject(1, 404, NOT_FOUND.message)]
    assert h.swaps_started() == [] and h.errored() == []
    assert h.stats.reservations == {}


def test_s82_35_start_then_serve() -> None:
    h = Harness("a")
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ())]
    assert h.served() == []
    assert h.swap_done(1) == [serve(1, "a")]


def test_s82_36_join() -> None:
    h = Harness("a")
    h.req(1, "a")
    assert h.req(2, "a") == [Admit(2)]
    assert h.req(3, "a") == [Admit(3)]
    assert h.stats.swaps == (SwapInfo(1, "a", (), (1, 2, 3)),)
    assert h.swap_done(1) == [serve(1, "a"), serve(2, "a"), serve(3, "a")]
    assert len(h.swaps_started()) == 1


def test_s82_37_swap_error_fails_all_waiters() -> None:
    h = Harness("a")
    h.req(1, "a")
    h.req(2, "a")
    assert h.swap_done(1, "boom") == [GrantError(1, 500, "boom"), GrantError(2, 500, "boom")]
    assert h.served() == []
    assert h.stats.reservations == {}


def test_s82_38_eviction_collision_needs_swap_done_and_idle_evictee() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    assert h.req(2, "b") == [Admit(2), Positions({2: 1})]
    assert h.swap_done(1) == [serve(1, "a")]
    assert h.stats.in_flight == {"a": 1}
    assert h.serve_done(1) == [StartSwap(2, "b", ("a",))]


def test_s82_39_disjoint_swaps_run_in_parallel() -> None:
    h = Harness("ab")
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ())]
    assert h.req(2, "b") == [Admit(2), StartSwap(2, "b", ())]


def test_s82_40_overlapping_eviction_sets_do_not_run_in_parallel() -> None:
    h = Harness("abx", FakePolicy({"a": {"x"}, "b": {"x"}}), view={"x": "ready"})
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ("x",))]
    assert h.req(2, "b") == [Admit(2), Positions({2: 1})]
    assert h.swap_done(1) == [serve(1, "a"), StartSwap(2, "b", ())]


def test_s82_41_multiple_promotion() -> None:
    # The spec's fake swapper answers "b and c" for a whatever is running.
    h = Harness("abc", FixedPolicy({"a": ("b", "c")}))
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ("b", "c"))]
    h.req(2, "b")
    h.req(3, "c")
    assert h.queue() == [2, 3]
    assert h.swap_done(1) == [serve(1, "a"), StartSwap(2, "b", ()), StartSwap(3, "c", ())]
    assert h.served("a") == [1]


class FixedPolicy(FakePolicy):
    """Evicts a fixed list whether or not it runs (the Go test's fake swapper)."""

    def __init__(self, evicts: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.fixed = evicts

    def eviction_for(self, target: str, running: object) -> tuple[str, ...]:
        return self.fixed.get(target, ())


def test_s82_42_collation() -> None:
    h = Harness("abc", mutual("a", "b", "c"))
    for rid, model in enumerate("abcabc", start=1):
        h.req(rid, model)
    assert h.swaps_started() == [("a", ())]
    assert h.queue() == [2, 3, 5, 6]
    assert h.swap_done(1) == [serve(1, "a"), serve(4, "a")]
    h.serve_done(1)
    assert h.serve_done(4) == [StartSwap(2, "b", ("a",)), Positions({3: 1, 6: 2})]
    assert h.stats.swaps == (SwapInfo(2, "b", ("a",), (2, 5)),)
    assert h.swap_done(2) == [serve(2, "b"), serve(5, "b")]
    h.serve_done(2)
    assert h.serve_done(5) == [StartSwap(3, "c", ("b",))]
    assert h.swap_done(3) == [serve(3, "c"), serve(6, "c")]
    assert h.swaps_started() == [("a", ()), ("b", ("a",)), ("c", ("b",))]
    assert [len(h.served(m)) for m in "abc"] == [2, 2, 2]


def test_s82_43_no_swap_while_serving() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}), view={"a": "ready"})
    h.req(1, "a")
    h.req(2, "a")
    assert h.stats.in_flight == {"a": 2}
    assert h.req(3, "b") == [Admit(3), Positions({3: 1})]
    assert h.serve_done(1) == []
    assert h.serve_done(2) == [StartSwap(1, "b", ("a",))]


def test_s82_44_undelivered_grant_does_not_leak_in_flight() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    assert h.swap_done(1) == [serve(1, "a")]
    assert h(e.GrantUndelivered(1)) == []
    assert h.stats.in_flight == {} and h.stats.reservations == {}
    assert h.req(2, "b") == [Admit(2), StartSwap(2, "b", ("a",))]


def test_s82_45_shutdown_errors_everyone() -> None:
    h = Harness("abc", FakePolicy({"c": {"a", "b"}}))
    for rid, model in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]:
        h.req(rid, model)
    assert h.swaps_started() == [("a", ()), ("b", ())]
    down = "group is shutting down"
    assert h(e.ShutdownRequested(100)) == [
        *(GrantError(rid, 500, down) for rid in (1, 2, 3, 4, 5)),
        CancelSwap(1),
        CancelSwap(2),
        StopModels(100, ("a", "b", "c"), "shutdown"),
    ]
    assert h.stats.reservations == {} and h.stats.swaps == () and h.stats.queue == ()


def test_s82_46_unload_releases_active_waiters() -> None:
    h = Harness("a")
    h.req(1, "a")
    h.req(2, "a")
    gone = "group: model unloaded"
    assert h.unload(7, "a") == [
        GrantError(1, 500, gone),
        GrantError(2, 500, gone),
        CancelSwap(1),
        StopModels(7, ("a",), "unload"),
    ]
    assert h.stops_done(7, "a") == [OpDone(7)]
    assert h.stats.reservations == {}


def test_s82_47_unload_drops_queued_requests() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    h.req(2, "b")
    assert h.unload(7, "b") == [
        GrantError(2, 500, "group: model unloaded"),
        StopModels(7, ("b",), "unload"),
    ]
    assert h.stats.swaps == (SwapInfo(1, "a", (), (1,)),)
    assert h.served() == [] and h.errored() == [2]
    assert ("b", ("a",)) not in h.swaps_started()


def test_s82_48_priority_order() -> None:
    policy = FakePolicy({m: {"z"} for m in "ABCD"})
    h = Harness("zABCD", policy, priority={"A": 10, "B": 5, "C": 5, "D": 1})
    h.req(1, "z")
    assert h.req(2, "B")[-1] == Positions({2: 1})
    assert h.req(3, "D")[-1] == Positions({3: 2})
    assert h.req(4, "C")[-1] == Positions({4: 2, 3: 3})
    assert h.req(5, "A")[-1] == Positions({5: 1, 2: 2, 4: 3, 3: 4})
    assert [m for _, m in h.stats.queue] == ["A", "B", "C", "D"]


def test_s82_49_cancel_a_queued_request() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    h.req(2, "b")
    assert h.cancel(2) == []
    assert h.queue() == []
    assert h.swap_done(1) == [serve(1, "a")]
    h.serve_done(1)
    assert h.swaps_started() == [("a", ())]


def test_s82_50_cancel_a_swap_waiter() -> None:
    h = Harness("a")
    h.req(1, "a")
    h.req(2, "a")
    assert h.cancel(1) == []
    assert h.stats.swaps == (SwapInfo(1, "a", (), (2,)),)
    assert h.swap_done(1) == [serve(2, "a")]


def test_s82_50_swap_keeps_running_when_its_only_waiter_leaves() -> None:
    h = Harness("a")
    h.req(1, "a")
    assert h.cancel(1) == []
    assert h.stats.swaps == (SwapInfo(1, "a", (), ()),)
    assert h.swap_done(1) == []
    assert h.stats.reservations == {}


def test_s82_51_cancel_after_grant_is_a_no_op() -> None:
    h = Harness("a", view={"a": "ready"})
    h.req(1, "a")
    assert h.cancel(1) == []
    assert h.served() == [1] and h.queue() == []
    assert h.stats.in_flight == {"a": 1}
    assert h.serve_done(1) == []


def test_s82_52_concurrency_limit_1() -> None:
    h = Harness("a", view={"a": "ready"}, limits={"a": 1})
    assert h.req(1, "a") == [Admit(1), serve(1, "a")]
    assert h.req(2, "a") == [Reject(2, 429, TOO_MANY, retry_after=1)]
    h.serve_done(1)
    assert h.req(3, "a") == [Admit(3), serve(3, "a")]
    assert h.errored() == []


def test_s82_53_default_limit_is_10() -> None:
    h = Harness("a", view={"a": "ready"})
    for rid in range(10):
        assert h.req(rid, "a") == [Admit(rid), serve(rid, "a")]
    assert h.req(10, "a") == [Reject(10, 429, TOO_MANY, retry_after=1)]
    assert h.errored() == []


@pytest.mark.parametrize("configured", [0, -3])
def test_s82_53_non_positive_limit_means_default(configured: int) -> None:
    h = Harness("a", limits={"a": configured})
    assert h.s.limit("a") == 10


def test_s82_54_custom_limit_2() -> None:
    h = Harness("a", view={"a": "ready"}, limits={"a": 2})
    h.req(1, "a")
    h.req(2, "a")
    assert h.req(3, "a") == [Reject(3, 429, TOO_MANY, retry_after=1)]


def test_s82_55_swap_waiters_count_toward_the_limit() -> None:
    h = Harness("a", limits={"a": 2})
    h.req(1, "a")
    h.req(2, "a")
    assert h.req(3, "a") == [Reject(3, 429, TOO_MANY, retry_after=1)]
    assert h.stats.swaps == (SwapInfo(1, "a", (), (1, 2)),)
    assert h.swap_done(1) == [serve(1, "a"), serve(2, "a")]
    assert h.errored() == []


def test_s82_56_queued_requests_reserve_capacity() -> None:
    h = Harness("ab", FakePolicy({"a": {"b"}}), limits={"a": 2})
    h.req(1, "b")
    h.req(2, "a")
    h.req(3, "a")
    assert h.req(4, "a") == [Reject(4, 429, TOO_MANY, retry_after=1)]
    assert h.queue() == [2, 3]
    h.swap_done(1)
    assert h.serve_done(1) == [StartSwap(2, "a", ("b",))]
    assert h.swap_done(2) == [serve(2, "a"), serve(3, "a")]


def test_s82_57_cancel_releases_the_reservation() -> None:
    h = Harness("ab", FakePolicy({"a": {"b"}}), limits={"a": 1})
    h.req(1, "b")
    h.req(2, "a")
    assert h.req(3, "a") == [Reject(3, 429, TOO_MANY, retry_after=1)]
    h.cancel(2)
    assert h.req(4, "a") == [Admit(4), Positions({4: 1})]
    assert h.queue() == [4]


def test_limit_counts_waiting_queued_and_serving_together() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}), view={"a": "ready"}, limits={"b": 3})
    h.req(1, "a")  # a serving, so b's swap must wait
    h.req(2, "b")  # queued
    h.req(3, "b")  # queued
    h.serve_done(1)  # b's swap starts with 2 and 3 waiting
    h.req(4, "b")  # joins: 3 reserved
    assert h.req(5, "b") == [Reject(5, 429, TOO_MANY, retry_after=1)]
    h.swap_done(1)  # 2, 3, 4 serving
    assert h.stats.reservations == {"b": 3}
    assert h.req(6, "b")[0] == Reject(6, 429, TOO_MANY, retry_after=1)
    h.serve_done(2)
    assert h.req(7, "b") == [Admit(7), serve(7, "b")]


# --- §8.1 router scenarios at scheduler level (llama-swap base_test.go) ------------------


def test_s81_02_unload_all() -> None:
    h = Harness("abc", view={"a": "ready", "c": "ready"})
    assert h.unload(1) == [StopModels(1, ("a", "b", "c"), "unload")]
    assert h.stops_done(1, "a", "c") == [OpDone(1)]


def test_s81_03_unload_one() -> None:
    h = Harness("ac", view={"a": "ready", "c": "ready"})
    assert h.unload(1, "a") == [StopModels(1, ("a",), "unload")]
    assert h.stops_done(1, "a") == [OpDone(1)]
    assert h.req(2, "c") == [Admit(2), serve(2, "c")]


def test_s81_09_unload_stops_in_parallel_and_skips_unknown_ids() -> None:
    h = Harness("abc", view=dict.fromkeys("abc", "ready"))
    assert h.unload(1, "a", "b", "ghost", "c", "a") == [StopModels(1, ("a", "b", "c"), "unload")]
    assert h.unload(2, "ghost") == [OpDone(2)]


def test_s81_10_unload_releases_swap_waiters() -> None:
    h = Harness("a")
    h.req(1, "a")
    assert kinds(h.unload(9, "a")) == ["GrantError", "CancelSwap", "StopModels"]
    assert h.errored() == [1]


def test_s81_11_unload_drops_queued_requests() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    h.req(2, "b")
    h.unload(9, "b")
    assert h.swap_done(1) == [serve(1, "a")]
    assert h.errored() == [2]
    h.stops_done(9)
    assert h.swaps_started() == [("a", ())]


def test_s81_12_fast_path() -> None:
    h = Harness("a", view={"a": "ready"})
    assert h.req(1, "a") == [Admit(1), serve(1, "a")]


def test_s81_13_on_demand_start() -> None:
    h = Harness("a")
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ())]
    assert h.swap_done(1) == [serve(1, "a")]


def test_s81_14_concurrent_requests_share_one_start() -> None:
    h = Harness("a")
    for rid in range(5):
        h.req(rid, "a")
    assert h.swap_done(1) == [serve(rid, "a") for rid in range(5)]
    assert len(h.swaps_started()) == 1


def test_s81_15_client_cancel_while_waiting() -> None:
    h = Harness("a")
    h.req(1, "a")
    h.req(2, "a")
    assert h.cancel(1) == []
    assert h.swap_done(1) == [serve(2, "a")]


def test_s81_16_queued_different_model() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    h.req(2, "b")
    assert h.swaps_started() == [("a", ())]
    assert h.swap_done(1) == [serve(1, "a")]
    assert h.serve_done(1) == [StartSwap(2, "b", ("a",))]
    assert h.swap_done(2) == [serve(2, "b")]


def test_s81_17_queue_collation() -> None:
    h = Harness("abc", mutual("a", "b", "c"))
    for rid, model in enumerate("abcabc", start=1):
        h.req(rid, model)
    for swap_id, model in enumerate("abc", start=1):
        granted = h.swap_done(swap_id)
        for x in granted:
            if isinstance(x, GrantServe):
                assert x.model == model
                h.serve_done(x.request_id)
    assert [model for model, _ in h.swaps_started()] == ["a", "b", "c"]
    assert sorted(h.served()) == [1, 2, 3, 4, 5, 6]


def test_s81_18_concurrent_disjoint_swaps() -> None:
    h = Harness("ab")
    h.req(1, "a")
    h.req(2, "b")
    assert h.swaps_started() == [("a", ()), ("b", ())]
    assert h.swap_done(2) == [serve(2, "b")]
    assert h.swap_done(1) == [serve(1, "a")]


def test_s81_19_one_drain_promotes_several_requests() -> None:
    h = Harness("abc", FixedPolicy({"a": ("b", "c")}))
    h.req(1, "a")
    h.req(2, "b")
    h.req(3, "c")
    assert kinds(h.swap_done(1)) == ["GrantServe", "StartSwap", "StartSwap"]
    assert h.swap_done(2) == [serve(2, "b")]
    assert h.swap_done(3) == [serve(3, "c")]


def test_s81_20_shutdown_fails_every_waiter() -> None:
    h = Harness("abc", FakePolicy({"c": {"a", "b"}}))
    for rid, model in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")]:
        h.req(rid, model)
    h(e.ShutdownRequested(1))
    assert sorted(h.errored()) == [1, 2, 3, 4, 5]
    assert h.swap_done(1) == [] and h.swap_done(2) == []  # posted late: ignored


def test_s81_21_no_swap_while_serving() -> None:
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    h.swap_done(1)
    assert h.req(2, "b") == [Admit(2), Positions({2: 1})]
    assert h.req(3, "a") == [Admit(3), serve(3, "a")]
    assert h.serve_done(1) == []
    assert h.serve_done(3) == [StartSwap(2, "b", ("a",))]


def test_s81_22_model_not_found() -> None:
    assert Harness("a").req(1, "unknown") == [Reject(1, 404, NOT_FOUND.message)]


def test_s81_23_shutdown_stops_all_processes() -> None:
    h = Harness("ab", view={"a": "ready", "b": "ready"}, router_name="matrix")
    assert h(e.ShutdownRequested(1)) == [StopModels(1, ("a", "b"), "shutdown")]
    assert h(e.ShutdownRequested(2)) == [OpDone(2, "matrix shutdown already in progress")]
    assert h.req(3, "a") == [Reject(3, 500, "matrix is shutting down")]
    assert h.stops_done(1, "a", "b") == [OpDone(1)]
    assert h.req(4, "a") == [Reject(4, 500, "matrix is shutting down")]
    assert h.unload(5) == [OpDone(5)]


# --- §9 fixes --------------------------------------------------------------------------


def test_stale_swap_done_never_resolves_a_newer_swap() -> None:
    """§9 #3: swap #1 for a is dropped by an unload; its late report must not touch #2."""
    h = Harness("a")
    h.req(1, "a")
    h.unload(5, "a")
    h.stops_done(5, "a")
    assert h.req(2, "a") == [Admit(2), StartSwap(2, "a", ())]
    assert h(e.SwapDone(1, "aborted", 1.0)) == []
    assert h(e.SwapDone(1, None, 1.0)) == []
    assert h.stats.swaps == (SwapInfo(2, "a", (), (2,)),)
    assert h.swap_done(2) == [serve(2, "a")]
    assert h(e.SwapDone(2, None, 2.0)) == []  # reported twice: ignored


def test_unload_during_swap_cancels_the_worker_before_stopping() -> None:
    """§9 #4: the worker may still be stopping evictees; it must never load a afterwards."""
    h = Harness("ab", FakePolicy({"a": {"b"}}), view={"b": "ready"})
    h.req(1, "a")
    assert h.started(1).evict == ("b",)
    out = h.unload(3, "a")
    assert kinds(out) == ["GrantError", "CancelSwap", "StopModels"]
    assert out.index(CancelSwap(1)) < out.index(StopModels(3, ("a",), "unload"))
    # A request for a while it unloads waits for the stop, then starts afresh.
    assert h.req(2, "a") == [Admit(2), Positions({2: 1})]
    assert h.swap_done(1) == []  # the cancelled worker's report is stale
    h.view["b"] = "stopped"
    assert h.stops_done(3, "a") == [OpDone(3), StartSwap(2, "a", ())]


def test_unload_does_not_block_other_models() -> None:
    """§9 #2: while a unloads, b keeps serving and c (disjoint) starts; d (evicts a) waits."""
    policy = FakePolicy({"d": {"a"}})
    h = Harness("abcd", policy, view={"a": "ready", "b": "ready"})
    assert h.unload(1, "a") == [StopModels(1, ("a",), "unload")]
    assert h.req(2, "b") == [Admit(2), serve(2, "b")]
    assert h.req(3, "c") == [Admit(3), StartSwap(1, "c", ())]
    assert h.req(4, "d") == [Admit(4), Positions({4: 1})]
    assert h.req(5, "a") == [Admit(5), Positions({5: 2})]
    assert h.stats.unloading == ((1, ("a",)),)
    assert h.stops_done(1, "a") == [OpDone(1), StartSwap(2, "d", ()), StartSwap(3, "a", ())]


def test_unload_of_a_busy_swap_target_lets_colliding_requests_through() -> None:
    """Dropping a's swap unblocks a request that only collided with it."""
    h = Harness("abx", FakePolicy({"a": {"x"}, "b": {"x"}}), view={"x": "ready"})
    h.req(1, "a")
    h.req(2, "b")  # shares evictee x with a's swap
    assert h.unload(3, "a") == [
        GrantError(1, 500, "group: model unloaded"),
        CancelSwap(1),
        StopModels(3, ("a",), "unload"),
        StartSwap(2, "b", ("x",)),
    ]


def test_unload_can_cut_serving_requests_and_counts_stay_exact() -> None:
    h = Harness("a", view={"a": "ready"})
    h.req(1, "a")
    assert h.unload(2, "a") == [StopModels(2, ("a",), "unload")]
    assert h.stats.in_flight == {"a": 1}  # never reset by hand
    h.stops_done(2, "a")
    assert h.serve_done(1) == []
    assert h.stats.in_flight == {} and h.stats.reservations == {}


def test_overlapping_unloads_each_complete() -> None:
    h = Harness("ab", view={"a": "ready", "b": "ready"})
    h.unload(1, "a", "b")
    h.unload(2, "a")
    h.req(3, "a")
    assert h.stops_done(2) == [OpDone(2)]
    assert h.queue() == [3]  # still unloading under op 1
    assert h.stops_done(1, "a", "b") == [OpDone(1), StartSwap(1, "a", ())]


def test_unload_while_shutting_down_returns_at_once() -> None:
    h = Harness("a", view={"a": "ready"})
    h.unload(1, "a")
    h(e.ShutdownRequested(2))
    assert h.unload(3, "a") == [OpDone(3)]
    # the shutdown's stops cover the pending unload: both complete together
    assert h.stops_done(2, "a") == [OpDone(1), OpDone(2)]
    assert h.stops_done(1) == []  # the unload's own report, late: nothing left to do


def test_swap_failure_then_retry_starts_a_new_swap() -> None:
    h = Harness("a")
    h.req(1, "a")
    h.swap_done(1, "health check timed out after 2m0s")
    assert h.req(2, "a") == [Admit(2), StartSwap(2, "a", ())]


def test_target_stopping_is_not_counted_as_running() -> None:
    """§9 #9 at scheduler level: a stopping target is left out of the running set."""
    policy = FakePolicy()
    h = Harness("ab", policy, view={"a": "stopping", "b": "ready"})
    h.req(1, "a")
    assert policy.described == [("a", ("b",))]
    policy.described.clear()
    h2 = Harness("ab", policy, view={"a": "stopping", "b": "starting"})
    h2.req(1, "b")
    assert policy.described == [("b", ("a", "b"))]  # other stopping models still count


def test_running_set_includes_committed_swap_targets() -> None:
    policy = FakePolicy()
    h = Harness("abc", policy, view={"c": "ready"})
    h.req(1, "a")
    h.req(2, "b")
    assert policy.described == [("a", ("c",)), ("b", ("a", "c"))]


def test_ready_target_with_evictions_swaps_instead_of_fast_path() -> None:
    h = Harness("ac", FakePolicy({"a": {"c"}}), view={"a": "ready", "c": "ready"})
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ("c",))]
    assert h.swap_done(1) == [serve(1, "a")]


def test_ready_model_being_evicted_does_not_take_the_fast_path() -> None:
    h = Harness("ab", mutual("a", "b"), view={"a": "ready"})
    h.req(1, "b")
    assert h.req(2, "a") == [Admit(2), Positions({2: 1})]
    assert h.swap_done(1) == [serve(1, "b")]
    assert h.serve_done(1) == [StartSwap(2, "a", ("b",))]


def test_tick_drains_after_an_outside_state_change() -> None:
    """§9 #8: a crash is no event; the next Tick re-runs the queue against the new view."""
    h = Harness("ab", FakePolicy({"b": {"a"}}))
    h.req(1, "a")
    h.req(2, "b")
    h.swap_done(1)  # a serves request 1, so b waits for it
    assert h(e.Tick(1.0)) == []
    h.view["a"] = "stopped"  # crashed; request 1's handler has not returned yet
    assert h(e.Tick(2.0)) == [StartSwap(2, "b", ())]
    assert h.serve_done(1) == []


# --- positions ----------------------------------------------------------------------


def test_positions_follow_every_queue_change() -> None:
    h = Harness("zabc", FakePolicy({m: {"z"} for m in "abc"}))
    h.req(1, "z")
    assert h.req(2, "a")[-1] == Positions({2: 1})
    assert h.req(3, "b")[-1] == Positions({3: 2})
    assert h.req(4, "c")[-1] == Positions({4: 3})
    assert h.cancel(2) == [Positions({3: 1, 4: 2})]
    assert h.cancel(4) == []  # nobody moved
    assert h.req(5, "z") == [Admit(5)]  # joined: waiters get no position


# --- priorities ---------------------------------------------------------------------


def test_priorities_use_real_model_ids_and_reject_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        FifoScheduler(["qwen"], FakePolicy(), priority={"q-alias": 5})
    with pytest.raises(ValueError, match="unknown model"):
        FifoScheduler(["qwen"], FakePolicy(), limits={"ghost": 5})
    s = FifoScheduler(["qwen"], FakePolicy(), priority={"qwen": 5})
    assert s.priority("qwen") == 5


def test_negative_priorities_go_last() -> None:
    h = Harness("zab", FakePolicy({"a": {"z"}, "b": {"z"}}), priority={"a": -1})
    h.req(1, "z")
    h.req(2, "a")
    h.req(3, "b")
    assert [m for _, m in h.stats.queue] == ["b", "a"]


# --- starvation bound -----------------------------------------------------------------


def starving(**options: Any) -> Harness:
    """a is ready (loaded by swap 1 at t=0) and busy; b (evicts a) queued at t=1."""
    h = Harness("ab", mutual("a", "b"), None, **options)
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)
    h.req(2, "b", now=1.0)
    return h


def test_starvation_off_by_default_keeps_llama_swap_behaviour() -> None:
    h = starving()
    assert h.req(3, "a", now=1000.0) == [Admit(3), serve(3, "a")]


def test_starvation_bound_queues_new_work_for_the_model_to_evict() -> None:
    h = starving(max_wait=30.0)
    assert h.req(3, "a", now=10.0) == [Admit(3), serve(3, "a")]  # b waited 9 s
    assert h.req(4, "a", now=31.0) == [Admit(4), serve(4, "a")]  # exactly 30 s: not over
    assert h.req(5, "a", now=40.0) == [Admit(5), Positions({5: 2})]  # 39 s: queue behind b
    h.serve_done(1)
    h.serve_done(3)
    assert h.serve_done(4, now=41.0) == [StartSwap(2, "b", ("a",)), Positions({5: 1})]
    assert h.queue() == [5]
    assert h.swap_done(2, now=42.0) == [serve(2, "b")]
    assert h.serve_done(2, now=43.0) == [StartSwap(3, "a", ("b",))]


def test_starvation_bound_applies_on_tick_and_drain_too() -> None:
    h = starving(max_wait=30.0, priority={"a": 5})
    h.req(3, "a", now=40.0)  # higher priority: queued *ahead* of b, still blocked
    assert h.queue() == [3, 2]
    assert h(e.Tick(50.0)) == []
    assert h.serve_done(1) == [StartSwap(2, "b", ("a",))]
    assert h.queue() == [3]


def test_starvation_bound_respects_min_residency() -> None:
    h = starving(max_wait=30.0, min_residency=60.0)
    assert h.req(3, "a", now=40.0) == [Admit(3), serve(3, "a")]  # a ready 40 s < 60 s
    assert h.req(4, "a", now=61.0) == [Admit(4), Positions({4: 2})]


def test_starvation_anchor_leaving_releases_blocked_requests() -> None:
    h = starving(max_wait=30.0)
    h.req(3, "a", now=40.0)
    assert h.queue() == [2, 3]
    assert h.cancel(2) == [serve(3, "a")]
    assert h.served("a") == [1, 3]


def test_starvation_clock_starts_when_the_evictee_became_ready() -> None:
    """maxWait counts the time the anchor waited while the evictee was resident (the rule that
    costs nothing where nobody starves: a wait made of many short turns forces nothing)."""
    h = Harness("abc", FakePolicy({"b": {"a", "c"}}), max_wait=30.0)
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)  # a ready and serving
    h.req(2, "b", now=1.0)  # the anchor: evicts a and c
    assert h.req(3, "c", now=20.0) == [Admit(3), StartSwap(2, "c", ())]
    h.swap_done(2, now=21.0)  # c ready at 21
    assert h.req(4, "c", now=40.0) == [Admit(4), serve(4, "c")]  # 19 s on c: not over
    assert h.req(5, "a", now=40.0) == [Admit(5), Positions({5: 2})]  # 39 s on a: over
    assert h.req(6, "c", now=52.0) == [Admit(6), Positions({6: 3})]  # 31 s on c: over


def test_starvation_ignores_models_the_anchor_would_not_evict() -> None:
    h = Harness("abc", FakePolicy({"b": {"a"}}), view={"c": "ready"}, max_wait=1.0)
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)
    h.req(2, "b", now=0.0)
    assert h.req(3, "c", now=100.0) == [Admit(3), serve(3, "c")]


# --- statistics ------------------------------------------------------------------------


def test_statistics_snapshot() -> None:
    h = Harness("abc", FakePolicy({"c": {"a"}}), view={"a": "ready"})
    h.req(1, "a", now=3.0)
    h.req(2, "b")
    h.req(3, "c")
    h.unload(9, "b")
    st = h.stats
    assert st.queue == ((3, "c"),)
    assert st.swaps == ()
    assert st.unloading == ((9, ("b",)),)
    assert st.in_flight == {"a": 1}
    assert st.reservations == {"a": 1, "c": 1}
    assert st.shutting_down is False and st.now == 3.0
    assert "queued=1" in repr(h.s)
    assert h.s.handles("a") and not h.s.handles("ghost")
    assert h.s.models == frozenset("abc")


# --- the churn simulation (bench/churn_sim.py) stays runnable and keeps its promise --------


def test_churn_sim_bounds_the_worst_wait() -> None:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "churn_sim.py"
    spec = importlib.util.spec_from_file_location("churn_sim", path)
    assert spec is not None and spec.loader is not None
    sim = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("churn_sim", sim)  # dataclasses look their module up
    spec.loader.exec_module(sim)
    trace = sim.make_trace(seed=1, duration=3600.0, rate=1.0, hot_share=0.95, mean_service=3.0)
    off = sim.simulate(trace, 1.0, 0.0, 0.0, "off")
    bounded = sim.simulate(trace, 1.0, 30.0, 0.0, "bounded")
    assert max(bounded.waits) < max(off.waits)
    assert max(bounded.waits) < 30.0 + 60.0  # the bound, plus draining and loading
    assert sim.simulate_naive(trace, 1.0).swaps > bounded.swaps >= off.swaps
    # Upstreams with 8 slots (the rest of a model's requests wait inside it): the
    # bound holds as without slots, and a wait counts until the request is served.
    off8 = sim.simulate(trace, 1.0, 0.0, 0.0, "off", slots=8)
    bounded8 = sim.simulate(trace, 1.0, 30.0, 10.0, "bounded", slots=8)
    assert max(bounded8.cold_waits) < min(max(off8.cold_waits), 30.0 + 25.0 + 10.0)
    assert bounded8.swaps <= off8.swaps * 1.15
