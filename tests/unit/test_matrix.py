"""Matrix eviction policy: compile/validate, solve, coexistence (router spec §4.3, §8.4, §8.5;
config spec §11.3, §11.4, §20 #77 #78 #85). Pure and synchronous."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelswap.core.matrix import CompiledMatrix, MatrixChoice, MatrixError, compile_matrix
from modelswap.core.matrix_dsl import And, Expr, Ident, Or, Ref, to_dsl

MODELS = [
    *("gemma", "qwen", "mistral", "voxtral", "reranker", "sd", "llama-70B", "llama70B"),
    *("outside", "a", "b", "c", "d", "e", "x", "y", "target"),
]


def build(
    sets: Mapping[str, str],
    vars: Mapping[str, str] | None = None,
    costs: Mapping[str, int] | None = None,
    models: Sequence[str] = MODELS,
) -> CompiledMatrix:
    return compile_matrix(vars or {}, costs or {}, sets, models)


def compile_error(
    sets: Mapping[str, str],
    vars: Mapping[str, str] | None = None,
    costs: Mapping[str, int] | None = None,
) -> str:
    with pytest.raises(MatrixError) as caught:
        build(sets, vars, costs)
    return str(caught.value)


# --- §4.3.9 worked examples ----------------------------------------------------------

WORKED = build(
    vars={"g": "gemma", "q": "qwen", "m": "mistral", "v": "voxtral", "e": "reranker"},
    costs={"voxtral": 50, "llama-70B": 30},
    sets={
        "standard": "(g | qwen | m) & v",
        "with_rerank": "(g | q) & v & e",
        "creative": "(g | q) & sd",
        "full": "llama-70B",
    },
)


@pytest.mark.parametrize(
    ("running", "target", "set_name", "evict", "cost"),
    [
        ([], "gemma", "standard", [], 0),
        (["voxtral"], "gemma", "standard", [], 0),
        (["gemma", "voxtral"], "llama-70B", "full", ["gemma", "voxtral"], 51),
        (["gemma", "voxtral"], "sd", "creative", ["voxtral"], 50),
        (["qwen", "sd"], "voxtral", "standard", ["sd"], 1),
        (["gemma", "voxtral"], "reranker", "with_rerank", [], 0),
        (["mistral", "voxtral"], "reranker", "with_rerank", ["mistral"], 1),
        (["llama-70B"], "gemma", "standard", ["llama-70B"], 30),
        (["gemma"], "outside", None, ["gemma"], 1),
        (["outside", "voxtral"], "gemma", "standard", ["outside"], 1),
        (["gemma", "reranker", "voxtral"], "qwen", "with_rerank", ["gemma"], 1),
        (["gemma", "voxtral"], "gemma", None, [], 0),
    ],
)
def test_worked_examples(
    running: list[str], target: str, set_name: str | None, evict: list[str], cost: int
) -> None:
    choice = WORKED.solve(target, running)
    assert (choice.set_name, list(choice.evict), choice.cost) == (set_name, evict, cost)


def test_worked_example_target_sets() -> None:
    assert WORKED.solve("sd", ["gemma", "voxtral"]).target_set == ("gemma", "sd")
    assert WORKED.solve("outside", ["gemma"]).target_set == ("outside",)
    assert WORKED.solve("reranker", ["mistral", "voxtral"]).target_set == (
        "gemma",
        "reranker",
        "voxtral",
    )


def test_models_lists_every_model_mentioned_but_not_models_in_no_set() -> None:
    assert WORKED.models == {
        "gemma", "qwen", "mistral", "voxtral", "reranker", "sd", "llama-70B"
    }  # fmt: skip
    assert WORKED.set_names == ("standard", "with_rerank", "creative", "full")
    assert WORKED.dsl("creative") == "(g | q) & sd"


# --- §8.4 matrix router and solver ---------------------------------------------------


def test_s8_66_conflicting_models_are_evicted() -> None:
    m = build({"s_a": "a", "s_b": "b"})
    assert m.solve("b", ["a"]).evict == ("a",)


def test_s8_67_coexisting_model_is_not_evicted() -> None:
    assert build({"s_ab": "a & b"}).solve("b", ["a"]).evict == ()


def test_s8_68_coexisting_models_load_in_parallel() -> None:
    m = build({"s_ab": "a & b"})
    assert m.solve("a", []).evict == ()
    assert m.solve("b", ["a"]).evict == ()  # a still starting counts as running


def test_s8_69_incompatible_models_must_swap() -> None:
    m = build({"s_a": "a", "s_b": "b"})
    assert m.solve("a", []).evict == ()
    assert m.solve("b", ["a"]).evict == ("a",)


def test_s8_70_tie_goes_to_definition_order() -> None:
    assert build({"first": "a & b", "second": "a & c"}).solve("a", []).set_name == "first"


@pytest.mark.parametrize(
    ("costs", "set_name", "evict"),
    [({"b": 10, "c": 1}, "a_with_b", ("c",)), ({}, "a_with_c", ("b",))],
)
def test_s8_71_evict_costs_steer_the_choice(
    costs: dict[str, int], set_name: str, evict: tuple[str, ...]
) -> None:
    m = build({"a_with_c": "a & c", "a_with_b": "a & b"}, costs=costs)
    choice = m.solve("a", ["b", "c"])
    assert (choice.set_name, choice.evict) == (set_name, evict)


S72_VARS = {"g": "gemma", "q": "qwen", "m": "mistral", "v": "voxtral", "L": "llama70B"}
S72_SETS = {"standard": "(g | q | m) & v", "full": "L"}


def test_s8_72_basic_validation_plus_solve() -> None:
    m = build(S72_SETS, vars=S72_VARS, costs={"L": 30, "v": 50})
    assert m.solve("gemma", ["voxtral"]) == MatrixChoice(
        "standard", "(g | q | m) & v", (), 0, ("gemma", "voxtral")
    )
    assert m.solve("llama70B", ["voxtral"]) == MatrixChoice(
        "full", "L", ("voxtral",), 50, ("llama70B",)
    )


REF_CHAIN = {
    "llms": "g | q | m",
    "with_tts": "+llms & v",
    "mega": "+with_tts & e",
}
REF_VARS = {"g": "gemma", "q": "qwen", "m": "mistral", "v": "voxtral", "e": "reranker"}


def test_s8_73_reference_chain() -> None:
    choice = build(REF_CHAIN, vars=REF_VARS).solve("reranker", ["gemma", "voxtral"])
    assert (choice.set_name, choice.target_set, choice.evict) == (
        "mega",
        ("gemma", "reranker", "voxtral"),
        (),
    )


def test_s8_74_direct_model_names_work_without_vars() -> None:
    assert build({"s": "gemma & voxtral"}).solve("gemma", ["voxtral"]).target_set == (
        "gemma",
        "voxtral",
    )


def test_s8_75_vars_and_model_names_can_be_mixed() -> None:
    m = build({"base": "g | qwen", "combo": "+base & voxtral"}, vars={"g": "gemma"})
    choice = m.solve("qwen", ["voxtral"])
    assert (choice.set_name, choice.target_set) == ("combo", ("qwen", "voxtral"))


def test_s8_76_duplicates_collapse_after_resolution() -> None:
    m = build({"s": "g & gemma"}, vars={"g": "gemma"})
    assert m.solve("gemma", []).target_set == ("gemma",)
    assert m.combinations("s") == (("gemma",),)


def test_s8_77_a_var_shadows_a_model_name() -> None:
    m = build({"s": "qwen"}, vars={"qwen": "gemma"})
    assert m.solve("gemma", []).target_set == ("gemma",)
    assert m.models == {"gemma"}


@pytest.mark.parametrize("key", ["a" * 32, "model-var", "model.var", "A1", "7", "-", "."])
def test_s8_78_valid_var_keys(key: str) -> None:
    assert build({"s": key}, vars={key: "gemma"}).models == {"gemma"}


@pytest.mark.parametrize("key", ["a" * 33, "a_b", "", "a b", "ü", "abc\n"])
def test_s8_78_invalid_var_keys(key: str) -> None:
    message = compile_error({"s": "gemma"}, vars={key: "gemma"})
    assert message == (
        f'matrix: var key "{key}" must contain only alphanumeric, '
        "'-' or '.' characters and be 1-32 characters long"
    )


def test_s8_79_var_pointing_to_unknown_model() -> None:
    message = compile_error({"s": "g"}, vars={"g": "nope"})
    assert message == 'matrix: var key "g" references unknown model "nope"'


@pytest.mark.parametrize("cost", [0, -1, True, 1.5])
def test_s8_80_evict_cost_must_be_a_positive_integer(cost: int) -> None:
    message = compile_error({"s": "g"}, vars={"g": "gemma"}, costs={"g": cost})
    assert message == f'matrix: evict_cost for "g" must be a positive integer, got {cost}'


def test_s8_80_evict_cost_keys() -> None:
    message = compile_error({"s": "gemma"}, costs={"nope": 3})
    assert message == 'matrix: evict_costs: unknown var or model "nope"'
    assert build({"s": "gemma"}, costs={"gemma": 3}).evict_cost("gemma") == 3


def test_s8_81_cycle() -> None:
    message = compile_error({"a": "+b", "b": "+a"})
    assert message == 'matrix: circular reference detected involving set "a"'


def test_s8_82_undefined_reference() -> None:
    message = compile_error({"s": "gemma | +nonexistent"})
    assert message == 'matrix: set "s" references undefined set "nonexistent"'


def test_s8_83_no_sets() -> None:
    assert compile_error({}) == "matrix: matrix must define at least one set"


def test_s8_84_unknown_identifier() -> None:
    message = compile_error({"s": "g & nonexistent"}, vars={"g": "gemma"})
    assert message == 'matrix: set "s": unknown var or model "nonexistent"'


def test_s8_85_resolved_costs() -> None:
    m = build(
        {"s": "L | g | mistral"},
        vars={"L": "llama70B", "g": "gemma"},
        costs={"L": 30, "g": 5, "mistral": 10},
    )
    assert m.evict_costs == {"llama70B": 30, "gemma": 5, "mistral": 10}
    assert [m.evict_cost(x) for x in ("llama70B", "gemma", "mistral", "qwen")] == [30, 5, 10, 1]


def test_s8_87_matrix_only_compiles_a_program() -> None:
    m = build({"s": "g | q"}, vars={"g": "gemma", "q": "qwen"})
    assert isinstance(m, CompiledMatrix)
    assert m.combinations("s") == (("gemma",), ("qwen",))


# --- §8.5 DSL and solver -------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsl", "expected"),
    [
        ("a", [["a"]]),
        ("a & b", [["a", "b"]]),
        ("a | b | c", [["a"], ["b"], ["c"]]),
        ("(a | b) & (c | d)", [["a", "c"], ["a", "d"], ["b", "c"], ["b", "d"]]),
        ("a | b & c", [["a"], ["b", "c"]]),
        ("a & a", [["a"]]),
    ],
)
def test_s8_89_expansions(dsl: str, expected: list[list[str]]) -> None:
    combos = build({"s": dsl}).combinations("s")
    assert [list(c) for c in combos] == expected


def test_s8_90_reference_expansion_order() -> None:
    m = build(REF_CHAIN, vars=REF_VARS)
    assert m.combinations("mega") == (
        ("gemma", "reranker", "voxtral"),
        ("qwen", "reranker", "voxtral"),
        ("mistral", "reranker", "voxtral"),
    )


def test_s8_91_overlapping_references() -> None:
    m = build({"base": "a & b", "extended": "target & +base & b"})
    choice = m.solve("target", ["a", "b"])
    assert (choice.set_name, choice.evict, choice.target_set) == (
        "extended",
        (),
        ("a", "b", "target"),
    )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"s": ""}, 'matrix: set "s": empty DSL expression'),
        (
            {"s": "(a"},
            "matrix: set \"s\": parse: missing closing parenthesis for '(' at position 0",
        ),
        ({"s": "a)"}, 'matrix: set "s": parse: unexpected token ")" at position 1'),
        ({"s": "()"}, 'matrix: set "s": parse: unexpected token ")" at position 1'),
        ({"s": "missing"}, 'matrix: set "s": unknown var or model "missing"'),
        ({"s": "+missing"}, 'matrix: set "s" references undefined set "missing"'),
        ({"a": "+b", "b": "+a"}, 'matrix: circular reference detected involving set "a"'),
        ({"s": "a @ b"}, "matrix: set \"s\": tokenize: unexpected character '@' at position 2"),
        ({"s": "a & +"}, "matrix: set \"s\": tokenize: expected set name after '+' at position 5"),
    ],
)
def test_s8_92_compile_errors(sets: dict[str, str], message: str) -> None:
    assert compile_error(sets) == message


def _dimensions(count: int, width: int) -> tuple[list[str], str]:
    groups = [[f"m{g}_{i}" for i in range(width)] for g in range(count)]
    dsl = " & ".join("(" + " | ".join(group) + ")" for group in groups)
    return [m for group in groups for m in group], dsl


def test_s8_93_no_expansion_limit() -> None:
    models, dims = _dimensions(6, 10)
    m = build({"large": f"target & {dims}"}, models=[*models, "target", "outside"])
    running = sorted([f"m{g}_{(g * 3) % 10}" for g in range(6)] + ["outside"])
    choice = m.solve("target", running)
    assert (choice.set_name, choice.evict) == ("large", ("outside",))
    assert len(choice.target_set) == 7


def test_no_expansion_even_when_expansion_is_astronomical() -> None:
    """20 dimensions x 10 choices = 10**20 combinations: only expansion-free solving ends."""
    models, dims = _dimensions(20, 10)
    m = build({"huge": f"target & {dims}"}, models=[*models, "target"])
    running = [f"m{g}_9" for g in range(20)]
    assert m.solve("target", running).evict == ()
    assert m.can_coexist(["target", "m0_3", "m19_7"])


def test_s8_94_more_than_64_relevant_models() -> None:
    many = [f"n{i:02d}" for i in range(70)]
    m = build({"big": " & ".join(["target", *many])}, models=[*many, "target", "outside"])
    choice = m.solve("target", sorted([*many, "outside"]))
    assert choice.evict == ("outside",)
    assert len(choice.target_set) == 71


def test_s8_95_dominated_projection() -> None:
    m = build({"preferred": "target & (a | (a & b))"})
    choice = m.solve("target", ["a", "b"])
    assert (choice.evict, choice.target_set) == ((), ("a", "b", "target"))


def test_s8_96_target_in_no_set() -> None:
    m = build({"s": "a & b"}, models=[*MODELS, "missing"])
    assert m.solve("missing", ["a", "b"]) == MatrixChoice(None, None, ("a", "b"), 2, ("missing",))


@pytest.mark.parametrize(
    ("running", "set_name", "evict"),
    [([], "sub", ()), (["y"], "other", ()), (["x", "y"], "main", ("y",))],
)
def test_s8_97_evaluation_order_with_forward_reference(
    running: list[str], set_name: str, evict: tuple[str, ...]
) -> None:
    m = build({"main": "+sub & x", "sub": "a | b", "other": "a & y"})
    assert m.evaluation_order == ("sub", "main", "other")
    choice = m.solve("a", running)
    assert (choice.set_name, choice.evict) == (set_name, evict)


def test_s8_98_target_already_running() -> None:
    choice = WORKED.solve("gemma", ["gemma", "voxtral"])
    assert choice == MatrixChoice(None, None, (), 0, ("gemma",))
    # Holds even when the running neighbours are incompatible with the target.
    assert WORKED.solve("llama-70B", ["gemma", "llama-70B"]).evict == ()


# --- config §20 #77 #78 #85 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "vars", "costs", "phrase"),
    [
        ({"s": "gemma"}, {"a_b": "gemma"}, {}, "1-32 characters"),
        ({"s": "gemma"}, {"a" * 33: "gemma"}, {}, "1-32 characters"),
        ({"s": "gemma"}, {"": "gemma"}, {}, "1-32 characters"),
        ({"s": "g"}, {"g": "nope"}, {}, "unknown model"),
        ({"s": "gemma"}, {}, {"gemma": 0}, "positive integer"),
        ({"s": "gemma"}, {}, {"gemma": -1}, "positive integer"),
        ({"s": "gemma"}, {}, {"nope": 1}, "unknown var or model"),
        ({"a": "+b", "b": "+a"}, {}, {}, "circular reference"),
        ({"s": "+nonexistent"}, {}, {}, "references undefined set"),
        ({}, {}, {}, "at least one set"),
        ({"s": "g & nonexistent"}, {"g": "gemma"}, {}, "unknown var or model"),
    ],
)
def test_s20_77_matrix_validation(
    sets: dict[str, str], vars: dict[str, str], costs: dict[str, int], phrase: str
) -> None:
    message = compile_error(sets, vars, costs)
    assert message.startswith("matrix: ")
    assert phrase in message


def test_s20_77_direct_model_name_cost_key_is_allowed() -> None:
    assert build({"s": "gemma"}, costs={"gemma": 7}).evict_cost("gemma") == 7


def test_s20_78_matrix_solve() -> None:
    m = build(S72_SETS, vars=S72_VARS, costs={"L": 30, "v": 50})
    std = m.solve("gemma", ["voxtral"])
    assert (std.set_name, std.evict) == ("standard", ())
    full = m.solve("llama70B", ["voxtral"])
    assert (full.set_name, full.evict) == ("full", ("voxtral",))
    assert build({"s": "g & gemma"}, vars={"g": "gemma"}).combinations("s") == (("gemma",),)
    assert build({"s": "qwen"}, vars={"qwen": "gemma"}).combinations("s") == (("gemma",),)


def test_s20_85_spillover_coexistence() -> None:
    assert build({"s": "A & B"}, models=["A", "B"]).can_coexist(["A", "B"])
    assert not build({"s": "A | B"}, models=["A", "B"]).can_coexist(["A", "B"])
    models, dims = _dimensions(4, 11)
    m = build({"grid": dims, "pair": "m0_0 & m3_10"}, models=models)
    assert m.can_coexist(["m0_5", "m1_7", "m2_10", "m3_0"])  # via the 11**4 grid
    assert not m.can_coexist(["m0_5", "m0_6"])  # two choices of one dimension


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ([], True),
        (["a"], True),
        (["a", "a"], True),
        (["a", "c"], True),
        (["a", "b"], False),
        (["b", "c", "d"], True),
        (["outside"], False),  # in no set: runs only alone, coexists with nothing
        (["a", "outside"], False),
    ],
)
def test_can_coexist(models: list[str], expected: bool) -> None:
    m = build({"one": "a & c", "two": "+three & d", "three": "b & c"})
    assert m.can_coexist(models) is expected


# --- details the spec leaves to us -----------------------------------------------------


def test_self_reference_and_longer_cycles() -> None:
    assert compile_error({"a": "+a"}) == 'matrix: circular reference detected involving set "a"'
    message = compile_error({"a": "x", "b": "+c", "c": "+d & x", "d": "y | +b"})
    assert message == 'matrix: circular reference detected involving set "b"'


def test_conflicting_costs_for_one_model_are_rejected() -> None:
    message = compile_error({"s": "g"}, vars={"g": "gemma"}, costs={"g": 5, "gemma": 7})
    assert message == (
        'matrix: evict_costs: "g" and "gemma" both set the cost of model "gemma" (5 vs 7)'
    )
    agreeing = build({"s": "g"}, vars={"g": "gemma"}, costs={"g": 5, "gemma": 5})
    assert agreeing.evict_cost("gemma") == 5


def test_cost_key_resolves_var_first() -> None:
    m = build({"s": "qwen | gemma"}, vars={"qwen": "gemma"}, costs={"qwen": 9})
    assert m.evict_costs == {"gemma": 9}


def test_first_error_in_definition_order_wins() -> None:
    message = compile_error({"one": "a & nope", "two": "(", "three": "+none"})
    assert message == 'matrix: set "one": unknown var or model "nope"'


def test_long_reference_chain_does_not_recurse() -> None:
    sets = {f"s{i}": f"+s{i + 1} | a" for i in range(3000)} | {"s3000": "target"}
    m = build(sets)
    assert m.evaluation_order[0] == "s3000"
    assert m.solve("target", ["a"]).set_name == "s3000"  # evict a: ties keep the first set
    assert m.can_coexist(["target"])


def test_running_duplicates_and_unknown_models_are_tolerated() -> None:
    m = build({"s": "a & b"})
    assert m.solve("a", ["b", "zzz", "b"]).evict == ("zzz",)


def test_compiled_matrices_compare_by_content() -> None:
    first = build({"s": "g | b"}, vars={"g": "a"}, costs={"g": 3})
    again = build({"s": "g | b"}, vars={"g": "a"}, costs={"g": 3})
    assert first == again
    assert hash(first) == hash(again)
    assert first != build({"s": "g | b"}, vars={"g": "a"}, costs={"g": 4})


@pytest.mark.parametrize(
    ("running", "target", "level", "line"),
    [
        (
            ["gemma", "voxtral"],
            "sd",
            "info",
            'matrix: model=sd set=creative dsl="(g | q) & sd" evict=[voxtral] '
            "target=[gemma, sd] cost=50",
        ),
        ([], "gemma", "info", "matrix: model=gemma starting (no models running)"),
        (
            ["voxtral"],
            "gemma",
            "debug",
            'matrix: model=gemma fits running models in set=standard dsl="(g | qwen | m) & v" '
            "target=[gemma, voxtral]",
        ),
        (["gemma"], "gemma", "debug", "matrix: model=gemma already running"),
        (
            ["gemma"],
            "outside",
            "info",
            'matrix: model=outside set=(none) dsl="" evict=[gemma] target=[outside] cost=1',
        ),
        ([], "outside", "info", "matrix: model=outside starting (no models running)"),
    ],
)
def test_log_line(running: list[str], target: str, level: str, line: str) -> None:
    choice = WORKED.solve(target, running)
    assert (choice.log_level, choice.log_line(target)) == (level, line)


# --- property: the frontier solver agrees with full expansion -------------------------

POOL = ["a", "b", "c", "d", "e"]
SET_NAMES = ["s0", "s1", "s2", "s3"]


def _trees(refs: list[str]) -> st.SearchStrategy[Expr]:
    leaf_choices: list[st.SearchStrategy[Expr]] = [st.sampled_from(POOL).map(Ident)]
    if refs:
        leaf_choices.append(st.sampled_from(refs).map(Ref))
    return st.recursive(
        st.one_of(leaf_choices),
        lambda kids: st.one_of(
            st.lists(kids, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(kids, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        ),
        max_leaves=6,
    )


@st.composite
def matrices(draw: st.DrawFn) -> tuple[dict[str, Expr], dict[str, int]]:
    """Sets in definition order; references only go to lower-*rank* sets, so there are
    no cycles but forward references (to sets defined later) do occur."""
    names = SET_NAMES[: draw(st.integers(1, len(SET_NAMES)))]
    rank = draw(st.permutations(names))
    trees = {}
    for name in names:
        trees[name] = draw(_trees(list(rank[: rank.index(name)])))
    costs = draw(st.dictionaries(st.sampled_from([*POOL, "z"]), st.integers(1, 4), max_size=3))
    return trees, costs


def _expand(expr: Expr, done: Mapping[str, list[frozenset[str]]]) -> list[frozenset[str]]:
    if isinstance(expr, Ident):
        return [frozenset({expr.name})]
    if isinstance(expr, Ref):
        return done[expr.name]
    parts = [_expand(item, done) for item in expr.items]
    if isinstance(expr, Or):
        return [combo for part in parts for combo in part]
    return [frozenset().union(*pick) for pick in itertools.product(*parts)]


def _brute_order(trees: Mapping[str, Expr]) -> list[str]:
    order: list[str] = []

    def place(name: str) -> None:
        if name in order:
            return
        for ref in dict.fromkeys(n.name for n in _refs(trees[name])):
            place(ref)
        order.append(name)

    for name in trees:
        place(name)
    return order


def _refs(expr: Expr) -> list[Ref]:
    if isinstance(expr, Ref):
        return [expr]
    if isinstance(expr, Ident):
        return []
    return [r for item in expr.items for r in _refs(item)]


def _brute(trees: Mapping[str, Expr]) -> tuple[list[str], dict[str, list[frozenset[str]]]]:
    order = _brute_order(trees)
    done: dict[str, list[frozenset[str]]] = {}
    for name in order:
        done[name] = _expand(trees[name], done)
    return order, done


def _compile(trees: Mapping[str, Expr], costs: Mapping[str, int]) -> CompiledMatrix:
    return compile_matrix({}, costs, {n: to_dsl(t) for n, t in trees.items()}, [*POOL, "z"])


@settings(max_examples=300, deadline=None)
@given(
    matrices(),
    st.lists(st.sampled_from([*POOL, "z"]), unique=True, max_size=5),
    st.sampled_from([*POOL, "z"]),
)
def test_solve_agrees_with_full_expansion(
    matrix: tuple[dict[str, Expr], dict[str, int]], running: list[str], target: str
) -> None:
    trees, costs = matrix
    compiled = _compile(trees, costs)
    order, expansions = _brute(trees)
    assert compiled.evaluation_order == tuple(order)
    choice = compiled.solve(target, running)

    def cost_outside(combo: frozenset[str]) -> int:
        return sum(costs.get(m, 1) for m in running if m not in combo)

    if target in running:
        assert choice == MatrixChoice(None, None, (), 0, (target,))
        return
    per_set = {
        name: min(cost_outside(c) for c in expansions[name] if target in c)
        for name in order
        if any(target in c for c in expansions[name])
    }
    if not per_set:
        assert (choice.set_name, choice.evict) == (None, tuple(running))
        assert choice.cost == cost_outside(frozenset())
        return
    best = min(per_set.values())
    assert choice.cost == best
    assert choice.set_name == next(name for name in order if per_set.get(name) == best)
    witness = frozenset(choice.target_set)
    assert target in witness
    assert witness in expansions[choice.set_name]
    assert choice.evict == tuple(m for m in running if m not in witness)
    assert cost_outside(witness) == best
    # Within the set: the first minimal mask in expansion order.
    relevant = {target, *running}
    first_best = next(
        c & relevant for c in expansions[choice.set_name] if target in c and cost_outside(c) == best
    )
    assert witness & relevant == first_best


@settings(max_examples=200, deadline=None)
@given(matrices(), st.lists(st.sampled_from([*POOL, "z"]), max_size=4))
def test_can_coexist_agrees_with_full_expansion(
    matrix: tuple[dict[str, Expr], dict[str, int]], models: list[str]
) -> None:
    trees, costs = matrix
    _, expansions = _brute(trees)
    wanted = frozenset(models)
    expected = any(wanted <= combo for combos in expansions.values() for combo in combos)
    assert _compile(trees, costs).can_coexist(models) is expected
