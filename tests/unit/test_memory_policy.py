"""The memory policy (core/memory.py) and its place in the scheduler: pure, no sockets."""

from __future__ import annotations

import pytest

from modelswap.core import events as e
from modelswap.core.decisions import Admit, GrantServe, Positions, StartSwap
from modelswap.core.groups import GroupPolicy, GroupSpec
from modelswap.core.memory import MemoryPolicy, MemorySpec, MemoryState, format_bytes
from tests.unit.scheduler_harness import FakePolicy, Harness

GiB = 1 << 30


def policy(
    budget: dict[str, int], cost: dict[str, float] | None = None, **sizes: int
) -> MemoryPolicy:
    """Models ``a=10`` declare that many GiB of vram."""
    return MemoryPolicy(
        MemorySpec(
            budget={k: v * GiB for k, v in budget.items()},
            declared={m: {"vram": n * GiB} for m, n in sizes.items()},
            evict_cost=cost or {},
        )
    )


def state(now: float = 100.0, serving: str = "", **last_used: float) -> MemoryState:
    return MemoryState(now, frozenset(serving), last_used, {})


# --- fits --------------------------------------------------------------------------------


def test_fits_counts_every_budgeted_resource() -> None:
    p = policy({"vram": 24}, a=10, b=10, c=10)
    assert p.fits(["a", "b"], {})
    assert not p.fits(["a", "b", "c"], {})
    assert p.fits([], {})


def test_target_that_fits_beside_running_models_evicts_nothing() -> None:
    p = policy({"vram": 24}, a=10, b=10, c=4)
    assert p.eviction_for("c", ("a", "b"), state()) == ()


def test_running_target_evicts_nothing_even_over_budget() -> None:
    p = policy({"vram": 10}, a=10, b=10)
    assert p.eviction_for("a", ("a", "b"), state()) == ()


def test_no_budget_means_no_memory_evictions() -> None:
    p = policy({}, a=100, b=100)
    assert p.eviction_for("b", ("a",), state()) == ()


def test_undeclared_resource_is_unlimited_and_undeclared_model_is_free() -> None:
    p = MemoryPolicy(MemorySpec(budget={"vram": 10}, declared={"a": {"ram": 99, "vram": 10}}))
    assert p.eviction_for("b", ("a",), state()) == ()  # b declares nothing: 0 bytes
    assert p.fits(["a", "b"], {})


# --- LRU order, evict cost ----------------------------------------------------------------


def test_least_recently_used_goes_first() -> None:
    p = policy({"vram": 24}, a=10, b=10, c=10)
    assert p.eviction_for("c", ("a", "b"), state(a=90.0, b=50.0)) == ("b",)
    assert p.eviction_for("c", ("a", "b"), state(a=50.0, b=90.0)) == ("a",)


def test_never_used_model_counts_as_idle_longest() -> None:
    p = policy({"vram": 24}, a=10, b=10, c=10)
    assert p.eviction_for("c", ("a", "b"), state(a=99.0)) == ("b",)


def test_evict_cost_keeps_an_expensive_model_longer() -> None:
    # b idle 50 s, a idle 10 s: plain LRU evicts b; b's cost 10 makes a (10 s / 1) go first.
    p = policy({"vram": 24}, cost={"b": 10.0}, a=10, b=10, c=10)
    assert p.eviction_for("c", ("a", "b"), state(a=90.0, b=50.0)) == ("a",)


def test_evicts_as_many_as_needed_and_puts_back_the_unneeded() -> None:
    # LRU order: small (oldest) then big. Evicting big alone is enough: small is put back.
    p = policy({"vram": 24}, small=4, big=12, keep=8, t=12)
    st = state(small=10.0, big=20.0, keep=90.0)
    assert p.eviction_for("t", ("big", "keep", "small"), st) == ("big",)
    both = policy({"vram": 24}, small=4, big=12, keep=8, t=16)
    assert both.eviction_for("t", ("big", "keep", "small"), st) == ("big", "small")


def test_already_evicted_models_are_not_counted() -> None:
    p = policy({"vram": 24}, a=10, b=10, c=10)
    assert p.eviction_for("c", ("a", "b"), state(a=1.0, b=2.0), already=("b",)) == ()


def test_target_too_big_even_alone_evicts_everything() -> None:
    p = MemoryPolicy(MemorySpec(budget={"vram": 10}, declared={"a": {"vram": 5}}))
    measured = {"t": {"vram": 11}}
    assert p.overflow("t", measured) == ["vram"]
    st = MemoryState(0.0, frozenset(), {}, measured)
    assert p.eviction_for("t", ("a",), st) == ("a",)


# --- never evict serving -------------------------------------------------------------------


def test_idle_models_go_before_serving_ones_whatever_their_age() -> None:
    p = policy({"vram": 24}, a=10, b=10, c=10)
    st = state(serving="a", a=1.0, b=99.0)  # a is older but serving
    assert p.eviction_for("c", ("a", "b"), st) == ("b",)


def test_only_serving_models_left_means_the_scheduler_waits() -> None:
    h = Harness("abc", FakePolicy(), memory=policy({"vram": 24}, a=12, b=12, c=12))
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=1.0)
    h.req(2, "b", now=2.0)
    h.swap_done(2, now=3.0)
    assert h.served() == [1, 2]
    # a and b both serving: c must evict one of them, so it waits (queued).
    assert h.req(3, "c", now=4.0) == [Admit(3), Positions({3: 1})]
    # b finishes first: the idle one is evicted, a keeps serving.
    assert h.serve_done(2, now=5.0) == [
        StartSwap(3, "c", ("b",), _line("b", "c", 12), "info", True)
    ]


def _line(evict: str, target: str, gib: int) -> str:
    return f"memory: evicting {evict} so {target} fits (vram {gib}GiB)"


# --- in the scheduler ------------------------------------------------------------------------


def test_models_run_side_by_side_while_they_fit() -> None:
    h = Harness("abc", FakePolicy(), memory=policy({"vram": 24}, a=8, b=8, c=8))
    for rid, model in enumerate("abc", start=1):
        assert h.req(rid, model, now=float(rid)) == [Admit(rid), StartSwap(rid, model, ())]
        h.swap_done(rid, now=float(rid))
    assert h.served() == [1, 2, 3]


def test_lru_in_the_scheduler_follows_grants_and_serve_done() -> None:
    h = Harness("abc", FakePolicy(), memory=policy({"vram": 20}, a=10, b=10, c=10))
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)
    h.req(2, "b", now=1.0)
    h.swap_done(2, now=1.0)
    h.serve_done(2, now=2.0)
    h.serve_done(1, now=3.0)  # a used last
    assert h.req(3, "c", now=4.0)[1] == StartSwap(3, "c", ("b",), _line("b", "c", 10), "info", True)


def test_group_and_memory_must_both_be_satisfied() -> None:
    groups = GroupPolicy({"g": GroupSpec(exclusive=False, members=("a", "b"))})  # a, b swap
    h = Harness("abc", groups, memory=policy({"vram": 20}, a=10, b=4, c=10))
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)
    h.req(2, "c", now=1.0)
    h.swap_done(2, now=1.0)  # a + c = 20: fits, no group conflict
    h.serve_done(1, now=2.0)
    h.serve_done(2, now=3.0)
    # b: the group evicts a; then 4 + 10 fits, so memory adds nothing.
    assert h.req(3, "b", now=4.0)[1] == StartSwap(3, "b", ("a",))


def test_measured_footprint_larger_than_declared_is_used() -> None:
    h = Harness("abc", FakePolicy(), memory=policy({"vram": 24}, a=8, b=8, c=8))
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)
    h.req(2, "b", now=1.0)
    h.swap_done(2, now=1.0)
    h.serve_done(1, now=2.0)
    h.serve_done(2, now=3.0)
    h(e.FootprintMeasured("a", {"vram": 14 * GiB}, now=3.0))
    assert h.stats.footprints["a"]["vram"] == 14 * GiB
    # 14 + 8 + 8 > 24: c evicts the least recently used (a).
    assert h.req(3, "c", now=4.0)[1] == StartSwap(3, "c", ("a",), _line("a", "c", 8), "info", True)


def test_measured_smaller_than_declared_keeps_the_declaration() -> None:
    p = policy({"vram": 24}, a=10)
    assert p.footprint("a", {"a": {"vram": 2 * GiB, "ram": 5}}) == {"ram": 5, "vram": 10 * GiB}


def test_a_measurement_can_unblock_a_queued_request() -> None:
    h = Harness("ab", FakePolicy(), memory=policy({"vram": 24}, a=10, b=10))
    h(e.FootprintMeasured("a", {"vram": 20 * GiB}, now=0.0))
    h.req(1, "a", now=0.0)
    h.swap_done(1, now=0.0)
    assert h.req(2, "b", now=1.0) == [Admit(2), Positions({2: 1})]  # a is serving, 30 > 24
    assert h(e.FootprintMeasured("a", {"vram": 10 * GiB}, now=2.0)) == [
        StartSwap(2, "b", ())
    ]  # fits now: no memory eviction


# --- per-device budgets ----------------------------------------------------------------------


def per_device() -> MemoryPolicy:
    return MemoryPolicy(
        MemorySpec(
            budget={"vram": 48 * GiB, "vram:0": 24 * GiB, "vram:1": 24 * GiB},
            declared={
                "a0": {"vram": 16 * GiB, "vram:0": 16 * GiB},
                "b0": {"vram": 16 * GiB, "vram:0": 16 * GiB},
                "c1": {"vram": 16 * GiB, "vram:1": 16 * GiB},
            },
        )
    )


def test_models_on_different_devices_do_not_evict_each_other() -> None:
    p = per_device()
    assert p.eviction_for("c1", ("a0",), state()) == ()


def test_models_on_the_same_device_do() -> None:
    p = per_device()
    assert p.eviction_for("b0", ("a0", "c1"), state(a0=1.0, c1=0.0)) == ("a0",)


# --- misc --------------------------------------------------------------------------------


def test_bad_evict_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="evict cost"):
        MemoryPolicy(MemorySpec(evict_cost={"a": 0}))


@pytest.mark.parametrize(
    ("size", "text"),
    [(12, "12B"), (512 << 20, "512MiB"), (GiB * 21 // 2, "10.5GiB"), (2048, "2KiB")],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def test_repr_shows_the_budget() -> None:
    assert repr(policy({"vram": 24}, a=1)) == "<MemoryPolicy budget={'vram': '24GiB'} models=1>"


def test_an_exclusive_group_still_clears_models_outside_groups() -> None:
    groups = GroupPolicy({"g": GroupSpec(members=("a", "b"))})
    h = Harness("abc", groups, memory=policy({"vram": 40}, a=10, b=4, c=10))
    h.req(1, "c", now=0.0)
    h.swap_done(1, now=0.0)
    h.serve_done(1, now=1.0)
    assert h.req(2, "a", now=2.0)[1] == StartSwap(2, "a", ("c",))
    assert h.served() == [1]
    assert isinstance(h.log[-1], StartSwap) and not isinstance(h.log[-1], GrantServe)
