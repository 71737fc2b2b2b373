"""The scheduler's side of a config reload: ``Reconfigured`` in, ``RetireModel`` out.

Pure and synchronous (design rule 1): the view is a dict the test edits, the
reload is one event, and every assertion is about decisions and statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelswap.core import decisions as d
from modelswap.core import events as e
from modelswap.core.memory import MemoryPolicy, MemorySpec
from tests.unit.scheduler_harness import FakePolicy, Harness, kinds, mutual

GiB = 1 << 30


def reload(h: Harness, models: Iterable[str], **changes: Any) -> list[d.Decision]:
    changes.setdefault("policy", FakePolicy())
    return h(e.Reconfigured(frozenset(models), now=h.now, **changes))


def retired(h: Harness, model: str) -> list[d.Decision]:
    h.view[model] = "stopped"
    return h(e.ModelRetired(model, h.now))


def retires(decisions: Iterable[d.Decision]) -> list[str]:
    return [x.model for x in decisions if isinstance(x, d.RetireModel)]


def test_unchanged_model_keeps_serving_through_a_reload() -> None:
    h = Harness(["a", "b"], view={"a": "ready"})
    h.req(1, "a")
    assert h.served("a") == [1]
    assert reload(h, ["a", "b"]) == []
    h.req(2, "a")
    assert h.served("a") == [1, 2]  # fast path, same process: nothing retired
    assert h.stats.retiring == ()


def test_changed_model_retires_only_after_its_requests_finish() -> None:
    h = Harness(["a"], view={"a": "ready"})
    h.req(1, "a")
    assert retires(reload(h, ["a"], replace=frozenset({"a"}))) == []  # 1 still serving
    assert h.stats.retiring == ("a",)
    h.req(2, "a")  # arrives after the reload: waits for the new definition
    assert h.served("a") == [1] and h.queue() == [2]
    assert retires(h.serve_done(1)) == ["a"]
    assert h.queue() == [2]  # not granted on the old process, not started while it stops
    out = retired(h, "a")
    assert kinds(out)[0] == "StartSwap" and h.started(1).model == "a"
    assert h.queue() == [] and h.stats.retiring == ()


def test_idle_changed_model_retires_at_once() -> None:
    h = Harness(["a"], view={"a": "ready"})
    assert retires(reload(h, ["a"], replace=frozenset({"a"}))) == ["a"]
    assert retires(h.req(1, "a")) == []  # sent once only
    assert h.queue() == [1]


def test_swap_in_progress_for_a_changed_model_finishes_then_retires() -> None:
    h = Harness(["a"])
    h.req(1, "a")
    assert h.swaps_started() == [("a", ())]
    assert retires(reload(h, ["a"], replace=frozenset({"a"}))) == []
    out = h.swap_done(1)  # the waiter was admitted before the reload: served on old
    assert h.served("a") == [1] and retires(out) == []
    assert retires(h.serve_done(1)) == ["a"]


def test_removed_model_new_requests_404_queued_ones_fail_serving_ones_finish() -> None:
    h = Harness(["a", "b"], mutual("a", "b"), view={"a": "ready"})
    h.req(1, "a")
    h.req(2, "b")  # queued: b must evict a, which is serving
    assert h.queue() == [2]
    out = reload(h, ["a"], policy=FakePolicy(), replace=frozenset({"b"}))
    assert [(x.request_id, x.status) for x in out if isinstance(x, d.GrantError)] == [(2, 404)]
    assert retires(out) == ["b"]  # b was idle (it never started)
    out = h.req(3, "b")
    assert [(x.request_id, x.status) for x in out if isinstance(x, d.Reject)] == [(3, 404)]
    assert h.served("a") == [1]
    retired(h, "b")
    h.serve_done(1)
    assert h.stats.in_flight == {} and h.stats.reservations == {}


def test_removed_model_that_is_serving_retires_after_its_request() -> None:
    h = Harness(["a", "b"], view={"a": "ready", "b": "ready"})
    h.req(1, "b")
    assert retires(reload(h, ["a"], replace=frozenset({"b"}))) == []
    assert retires(h.serve_done(1)) == ["b"]
    assert h.stats.retiring == ("b",)
    retired(h, "b")
    assert h.stats.retiring == ()


def test_added_model_is_routable_at_once() -> None:
    h = Harness(["a"])
    assert h.req(1, "z")[0] == d.Reject(1, 404, "no local server found for requested model")
    reload(h, ["a", "z"])
    h.req(2, "z")
    assert h.swaps_started() == [("z", ())]


def test_queue_order_survives_a_reload_that_changes_priorities() -> None:
    h = Harness(["a", "b", "c"], mutual("a", "b", "c"), view={"a": "ready"})
    h.req(1, "a")
    h.req(2, "b")
    h.req(3, "c")
    assert h.queue() == [2, 3]
    reload(h, ["a", "b", "c"], policy=mutual("a", "b", "c"), priority={"c": 5})
    assert h.queue() == [2, 3]  # queued before the reload: order kept
    h.req(4, "c")  # queued after: the new priority applies
    assert h.queue() == [4, 2, 3]


def test_new_limits_apply_to_the_next_admission() -> None:
    h = Harness(["a"], view={"a": "ready"}, limits={"a": 1})
    h.req(1, "a")
    assert kinds(h.req(2, "a")) == ["Reject"]
    reload(h, ["a"], limits={"a": 2})
    assert kinds(h.req(3, "a")) == ["Admit", "GrantServe"]


def test_new_policy_decides_the_next_swap() -> None:
    h = Harness(["a", "b"], FakePolicy(), view={"a": "ready"})
    reload(h, ["a", "b"], policy=mutual("a", "b"))
    h.req(1, "b")
    assert h.swaps_started() == [("b", ("a",))]


def test_no_swap_evicts_a_retiring_model() -> None:
    h = Harness(["a", "b"], mutual("a", "b"), view={"a": "ready"})
    h.req(1, "a")
    reload(h, ["a", "b"], policy=mutual("a", "b"), replace=frozenset({"a"}))
    h.req(2, "b")
    assert h.swaps_started() == [] and h.queue() == [2]
    assert retires(h.serve_done(1)) == ["a"]
    assert h.swaps_started() == []  # a is stopping by itself: b waits for that
    retired(h, "a")
    assert h.swaps_started() == [("b", ())]


def test_reload_during_shutdown_changes_nothing() -> None:
    h = Harness(["a"], view={"a": "ready"})
    h(e.ShutdownRequested(1))
    assert reload(h, ["a", "b"], replace=frozenset({"a"})) == []
    assert h.stats.retiring == ()


# --- the memory policy is part of the rules a reload changes ------------------------------


def memory(budget: int, **sizes: int) -> MemoryPolicy:
    """A ``vram`` budget of ``budget`` GiB; models ``a=10`` declare that many GiB."""
    return MemoryPolicy(
        MemorySpec(
            budget={"vram": budget * GiB},
            declared={m: {"vram": n * GiB} for m, n in sizes.items()},
        )
    )


def test_a_reconfigured_with_a_new_memory_policy_applies_it() -> None:
    h = Harness("abc", memory=memory(16, a=10, b=10, c=10))
    h.req(1, "a", now=1.0)
    h.swap_done(1)
    h.serve_done(1)
    reload(h, "abc", memory=memory(32, a=10, b=10, c=10))
    assert h.s.memory is not None and h.s.memory.spec.budget == {"vram": 32 * GiB}
    h.req(2, "b", now=2.0)  # 16 GiB would have evicted a; 32 GiB holds both
    assert h.swaps_started()[-1] == ("b", ())
    h.swap_done(2)
    h.serve_done(2)
    reload(h, "abc", memory=memory(24, a=10, b=10, c=10))
    h.req(3, "c", now=3.0)  # 30 > 24: the least recently used (a) goes
    assert h.swaps_started()[-1] == ("c", ("a",)) and h.started(3).memory
    reload(h, "abc")  # memory routing turned off: only the structural policy decides
    assert h.s.memory is None


def test_measured_footprints_survive_a_reload_removed_models_are_forgotten() -> None:
    h = Harness("ab", memory=memory(32, a=10, b=10), view={"a": "ready", "b": "ready"})
    h(e.FootprintMeasured("a", {"vram": 14 * GiB}, now=1.0))
    h(e.FootprintMeasured("b", {"vram": 12 * GiB}, now=1.0))
    reload(h, "ab", memory=memory(32, a=8, b=10))  # a's declaration shrank: measured stays
    assert h.stats.footprints["a"]["vram"] == 14 * GiB
    reload(h, "a", memory=memory(32, a=8), replace=frozenset({"b"}))
    assert h.stats.footprints["b"]["vram"] == 12 * GiB  # still running: still counted
    retired(h, "b")
    assert "b" not in h.stats.footprints and h.stats.footprints["a"]["vram"] == 14 * GiB


def test_a_removed_models_old_process_counts_until_it_has_stopped() -> None:
    h = Harness("ab", memory=memory(16, a=10, b=10), view={"a": "ready"})
    h.req(1, "a", now=1.0)
    assert h.served("a") == [1]
    reload(h, "b", memory=memory(16, b=10), replace=frozenset({"a"}))
    h.req(2, "b", now=2.0)  # a still holds its 10 GiB while it finishes request 1
    assert h.swaps_started() == [] and h.queue() == [2]
    assert retires(h.serve_done(1)) == ["a"]
    assert h.swaps_started() == []  # a stops by itself; b waits for that, not evicting it
    retired(h, "a")
    assert h.swaps_started() == [("b", ())] and h.queue() == []


def test_a_replaced_model_counts_its_old_declaration_while_it_drains() -> None:
    h = Harness("ab", memory=memory(24, a=20, b=10), view={"a": "ready"})
    h.req(1, "a", now=1.0)
    # The new definition declares less, but the old process was started under 20 GiB.
    reload(h, "ab", memory=memory(24, a=10, b=10), replace=frozenset({"a"}))
    assert h.stats.footprints["a"]["vram"] == 20 * GiB
    h.req(2, "b", now=2.0)  # 20 + 10 > 24: b waits for the old a to stop
    assert h.swaps_started() == [] and h.queue() == [2]
    h.serve_done(1)
    retired(h, "a")
    assert h.swaps_started() == [("b", ())]
    assert h.stats.footprints["a"]["vram"] == 10 * GiB  # the new declaration from now on


def test_a_late_measurement_of_a_removed_model_is_dropped() -> None:
    h = Harness("ab", memory=memory(32, a=10, b=10), view={"b": "ready"})
    reload(h, "a", memory=memory(32, a=10), replace=frozenset({"b"}))
    retired(h, "b")
    h(e.FootprintMeasured("b", {"vram": 12 * GiB}, now=1.0))  # read before b stopped
    assert "b" not in h.stats.footprints
