"""Group eviction policy: router spec §4.2 worked examples and §8.3 scenarios.

§8.3 scenarios run through the real FifoScheduler with a GroupPolicy, at the
scheduler level (the end-to-end versions need processes and belong to the
router runtime's tests).
"""

from __future__ import annotations

import pytest

from modelswap.core.decisions import Admit, GrantServe, Positions, StartSwap
from modelswap.core.groups import GroupError, GroupPolicy, GroupSpec
from modelswap.core.policy import EvictionPolicy
from tests.unit.scheduler_harness import Harness

WORKED = GroupPolicy(
    {
        "G1": GroupSpec(swap=True, exclusive=True, members=("a", "b")),
        "G2": GroupSpec(swap=False, exclusive=False, members=("c", "d")),
        "P": GroupSpec(swap=False, exclusive=False, persistent=True, members=("e",)),
        "(default)": GroupSpec(members=("f",)),
    }
)


@pytest.mark.parametrize(
    ("running", "target", "evict"),
    [
        ([], "a", []),  # nothing running
        (["a"], "b", ["a"]),  # same group, swap
        (["a", "c", "e"], "b", ["a", "c"]),  # c: exclusive target, G2 not persistent
        (["a"], "c", []),  # G2 is non-exclusive: one-way, a stays
        (["a", "c"], "a", ["c"]),  # ready target of an exclusive group stops c
        (["c"], "d", []),  # G2 swap=false
        (["a", "e"], "f", ["a"]),  # (default) is exclusive; e is persistent
        (["e"], "c", []),  # non-exclusive target
        (["c", "d", "f"], "e", []),  # P non-exclusive, no siblings running
    ],
)
def test_worked_examples(running: list[str], target: str, evict: list[str]) -> None:
    assert WORKED.eviction_for(target, running) == tuple(evict)


def test_worked_example_no_groups_configured_means_one_model_at_a_time() -> None:
    policy = GroupPolicy({"(default)": GroupSpec(members=("x", "y"))})
    assert policy.eviction_for("y", ["x"]) == ("x",)


def test_result_keeps_running_order_and_never_contains_the_target() -> None:
    assert WORKED.eviction_for("b", ["f", "d", "b", "a", "c", "a"]) == ("f", "d", "a", "c")


def test_defensive_rules_for_models_in_no_group() -> None:
    assert WORKED.eviction_for("stray", ["a", "c"]) == ()  # target in no group
    assert WORKED.eviction_for("a", ["stray", "e"]) == ("stray",)  # exclusive target
    assert WORKED.eviction_for("c", ["stray"]) == ()  # non-exclusive target


def test_persistent_exclusive_group_can_evict_others() -> None:
    policy = GroupPolicy(
        {
            "P": GroupSpec(swap=True, exclusive=True, persistent=True, members=("p", "q")),
            "O": GroupSpec(members=("o",)),
        }
    )
    assert policy.eviction_for("p", ["o", "q"]) == ("o", "q")  # swap applies within P
    assert policy.eviction_for("o", ["p"]) == ()


def test_policy_contract() -> None:
    assert isinstance(WORKED, EvictionPolicy)
    assert WORKED.describe_swap("a", ["b"]) is None  # the group router logs nothing
    assert WORKED.members == ("a", "b", "c", "d", "e", "f")
    assert WORKED.group_of("e") == "P" and WORKED.group_of("zzz") is None
    assert "G1" in repr(WORKED)


def test_s83_58_duplicate_membership_fails_the_build() -> None:
    with pytest.raises(GroupError, match='model "a" is in multiple groups'):
        GroupPolicy({"g1": GroupSpec(members=("a",)), "g2": GroupSpec(members=("b", "a"))})


def test_member_without_model_config_fails_the_build() -> None:
    with pytest.raises(GroupError, match='no model config for "ghost"'):
        GroupPolicy({"g": GroupSpec(members=("a", "ghost"))}, models=["a"])


def scheduler(groups: dict[str, GroupSpec], **view: str) -> Harness:
    policy = GroupPolicy(groups)
    return Harness(policy.members, policy, view=view)


def test_s83_59_same_group_swap() -> None:
    h = scheduler({"g": GroupSpec(members=("a", "b"))}, a="ready")
    assert h.req(1, "b") == [Admit(1), StartSwap(1, "b", ("a",))]
    assert h.swap_done(1) == [GrantServe(1, "b")]


def test_s83_60_swap_false_keeps_siblings() -> None:
    h = scheduler({"g": GroupSpec(swap=False, exclusive=False, members=("a", "b"))}, a="ready")
    assert h.req(1, "b") == [Admit(1), StartSwap(1, "b", ())]


def test_s83_61_exclusive_across_groups() -> None:
    h = scheduler({"g1": GroupSpec(members=("a",)), "g2": GroupSpec(members=("b",))}, a="ready")
    assert h.req(1, "b") == [Admit(1), StartSwap(1, "b", ("a",))]


def test_s83_62_non_exclusive_groups_load_in_parallel() -> None:
    h = scheduler(
        {
            "g1": GroupSpec(exclusive=False, members=("a",)),
            "g2": GroupSpec(exclusive=False, members=("b",)),
        }
    )
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ())]
    assert h.req(2, "b") == [Admit(2), StartSwap(2, "b", ())]


def test_s83_63_same_group_swaps_serialise_before_starting_is_visible() -> None:
    h = scheduler({"g": GroupSpec(exclusive=False, members=("a", "b"))})
    assert h.req(1, "a") == [Admit(1), StartSwap(1, "a", ())]
    assert h.req(2, "b") == [Admit(2), Positions({2: 1})]  # a is only committed, not starting
    assert h.swap_done(1) == [GrantServe(1, "a")]
    assert h.serve_done(1) == [StartSwap(2, "b", ("a",))]
    assert h.swap_done(2) == [GrantServe(2, "b")]


def test_s83_64_persistent_is_never_evicted_by_another_group() -> None:
    h = scheduler(
        {
            "persist": GroupSpec(exclusive=False, persistent=True, members=("a",)),
            "other": GroupSpec(members=("b",)),
        },
        a="ready",
    )
    assert h.req(1, "b") == [Admit(1), StartSwap(1, "b", ())]


def test_s83_65_one_way_non_exclusive_quirk() -> None:
    groups = {"g1": GroupSpec(members=("a",)), "g2": GroupSpec(exclusive=False, members=("b",))}
    h = scheduler(groups, a="ready")
    assert h.req(1, "b") == [Admit(1), StartSwap(1, "b", ())]  # a stays
    h.swap_done(1)
    h.serve_done(1)
    # ...but merely asking for the ready exclusive a stops b first.
    assert h.req(2, "a") == [Admit(2), StartSwap(2, "a", ("b",))]
