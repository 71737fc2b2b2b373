"""MatrixPolicy: the compiled solver behind the EvictionPolicy contract.

The solver itself is covered by test_matrix.py (§8.4 #70–98 at solve level);
here are §8.4 #66–69 through the real scheduler, the swap-start log, and the
§9 #9 fix (a *stopping* target is not "already running").
"""

from __future__ import annotations

from modelswap.core.decisions import Admit, GrantServe, Positions, StartSwap
from modelswap.core.matrix import compile_matrix
from modelswap.core.matrix_policy import MatrixPolicy
from modelswap.core.policy import EvictionPolicy
from tests.unit.scheduler_harness import Harness

MODELS = ("a", "b", "c", "gemma", "voxtral", "llama")


def policy(sets: dict[str, str], costs: dict[str, int] | None = None) -> MatrixPolicy:
    return MatrixPolicy(compile_matrix({}, costs or {}, sets, MODELS))


def scheduler(sets: dict[str, str], **view: str) -> Harness:
    return Harness(MODELS, policy(sets), view=view, router_name="matrix")


def test_contract() -> None:
    p = policy({"s": "a & b", "t": "c"})
    assert isinstance(p, EvictionPolicy)
    assert p.eviction_for("c", ["a", "b"]) == ("a", "b")
    assert p.eviction_for("a", ["b", "c"]) == ("c",)
    assert "MatrixPolicy" in repr(p)


def test_describe_swap_returns_the_spec_log_line() -> None:
    p = policy({"standard": "gemma & voxtral", "full": "llama"}, {"voxtral": 50})
    assert p.describe_swap("llama", ["gemma", "voxtral"]) == (
        "info",
        'matrix: model=llama set=full dsl="llama" evict=[gemma, voxtral] target=[llama] cost=51',
    )
    assert p.describe_swap("gemma", []) == (
        "info",
        "matrix: model=gemma starting (no models running)",
    )
    level, _ = p.describe_swap("gemma", ["voxtral"]) or ("", "")
    assert level == "debug"


def test_start_swap_carries_the_log_line() -> None:
    h = scheduler({"s_a": "a", "s_b": "b"}, a="ready")
    out = h.req(1, "b")
    assert out[1] == StartSwap(
        1, "b", ("a",), 'matrix: model=b set=s_b dsl="b" evict=[a] target=[b] cost=1', "info"
    )


def test_s84_66_conflicting_models_are_evicted() -> None:
    h = scheduler({"s_a": "a", "s_b": "b"}, a="ready")
    assert h.req(1, "b")[1].evict == ("a",)  # type: ignore[union-attr]
    assert h.swap_done(1) == [GrantServe(1, "b")]


def test_s84_67_coexistence() -> None:
    h = scheduler({"s_ab": "a & b"}, a="ready")
    assert h.req(1, "b")[1].evict == ()  # type: ignore[union-attr]


def test_s84_68_coexisting_models_load_in_parallel() -> None:
    h = scheduler({"s_ab": "a & b"})
    h.req(1, "a")
    h.req(2, "b")
    assert h.swaps_started() == [("a", ()), ("b", ())]


def test_s84_69_incompatible_models_queue() -> None:
    h = scheduler({"s_a": "a", "s_b": "b"})
    h.req(1, "a")
    assert h.req(2, "b") == [Admit(2), Positions({2: 1})]  # a committed, not yet starting
    assert h.swap_done(1) == [GrantServe(1, "a")]
    assert h.serve_done(1)[0].evict == ("a",)  # type: ignore[union-attr]
    assert h.swap_done(2) == [GrantServe(2, "b")]


def test_s9_09_stopping_target_is_not_already_running() -> None:
    """llama-swap: a (stopping, e.g. TTL) counts as running, so it evicts nothing and
    restarts next to the incompatible b. Here the scheduler leaves it out: b goes."""
    sets = {"s_a": "a", "s_b": "b"}
    assert policy(sets).eviction_for("a", ["a", "b"]) == ()  # the solver's shortcut
    h = scheduler(sets, a="stopping", b="ready")
    assert h.req(1, "a") == [
        Admit(1),
        StartSwap(1, "a", ("b",), 'matrix: model=a set=s_a dsl="a" evict=[b] target=[a] cost=1'),
    ]


def test_ready_target_keeps_the_shortcut() -> None:
    h = scheduler({"s_a": "a", "s_b": "b"}, a="ready", b="ready")
    assert h.req(1, "a") == [Admit(1), GrantServe(1, "a")]
