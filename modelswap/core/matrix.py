"""The matrix eviction policy: which running models must stop so a target can run.

A matrix config names *sets*, each a DSL expression (see :mod:`.matrix_dsl`)
describing combinations of models that may run together. :func:`compile_matrix`
validates the config once, at load time, into a frozen :class:`CompiledMatrix`;
the router then asks :meth:`CompiledMatrix.solve` "what if" questions on every
arrival and every drain, so solving must be cheap and must never multiply out
AND over OR (router spec §4.3).

How solving stays cheap: only models that matter for the query (the target
and the running models, "relevant" below) are tracked, as bits of an int. Each
expression node yields a *frontier*: the distinct projections ("masks") of its
combinations onto the relevant models, with every mask that is a subset of
another dropped, because a superset always costs strictly less (every relevant
model except the target is running and costs at least 1). Subtrees that mention
no relevant model collapse to one empty mask without being visited.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, Union

from modelswap.core.matrix_dsl import And, Expr, Ident, MatrixError, Or, Ref, parse, references

__all__ = ["CompiledMatrix", "MatrixChoice", "MatrixError", "compile_matrix"]

_VAR_KEY = re.compile(r"[a-zA-Z0-9.-]{1,32}")
DEFAULT_EVICT_COST = 1

# A combination, kept unflattened while solving: a model ID, or a tuple of parts
# whose union is the combination. Building it is O(1) per AND pair; only the
# chosen one is ever flattened (for the log line).
Witness: TypeAlias = Union[str, tuple["Witness", ...]]  # noqa: UP007 - recursive alias


# --- the answer --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatrixChoice:
    """The solver's answer for one target, plus what the swap-start log needs.

    ``set_name``/``dsl`` are ``None`` when no set was consulted: the target was
    already running (no evictions), or it is in no set (evict everything).
    ``target_set`` is the chosen combination, sorted: the models that *may* run
    alongside the target, of which only the target will be started.
    """

    set_name: str | None
    dsl: str | None
    evict: tuple[str, ...]
    cost: int
    target_set: tuple[str, ...]
    nothing_running: bool = False

    @property
    def log_level(self) -> Literal["info", "debug"]:
        """Evictions and cold starts are worth an info line; the rest is debug (§4.3.11)."""
        return "info" if self.evict or self.nothing_running else "debug"

    def log_line(self, target: str) -> str:
        """The §4.3.11 text; the caller logs it at :attr:`log_level`."""
        if self.evict:
            return (
                f"matrix: model={target} set={self.set_name or '(none)'} "
                f'dsl="{self.dsl or ""}" evict={_names(self.evict)} '
                f"target={_names(self.target_set)} cost={self.cost}"
            )
        if self.nothing_running:
            return f"matrix: model={target} starting (no models running)"
        if self.set_name is None:
            return f"matrix: model={target} already running"
        return (
            f"matrix: model={target} fits running models in set={self.set_name} "
            f'dsl="{self.dsl}" target={_names(self.target_set)}'
        )


def _names(models: Iterable[str]) -> str:
    return "[" + ", ".join(models) + "]"


# --- compiled program --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    model: str


@dataclass(frozen=True, slots=True)
class _Use:
    """A ``+ref``: reuse the referenced set's frontier."""

    set_name: str


@dataclass(frozen=True, slots=True)
class _Combine:
    """AND (``is_and``) or OR over items, with what the solver needs to skip it.

    ``mentions`` is every model reachable below (through references too);
    ``first`` is the first combination in expansion order, which is exactly the
    witness the frontier algorithm would keep if no mentioned model is relevant.
    """

    is_and: bool
    items: tuple[_Node, ...]
    mentions: frozenset[str]
    first: Witness


_Node: TypeAlias = Union[_Leaf, _Use, _Combine]  # noqa: UP007 - forward references


@dataclass(frozen=True, slots=True)
class _Set:
    """One compiled set. Identity (eq/hash) is its name, text and resolved tree;
    the rest is derived, and the witnesses can nest as deep as reference chains."""

    name: str
    dsl: str
    tree: Expr  # resolved: leaves are model IDs
    root: _Node = field(compare=False)
    mentions: frozenset[str] = field(compare=False)
    first: Witness = field(compare=False)
    refs: tuple[str, ...] = field(compare=False)  # direct references, first mention first


_Entry: TypeAlias = tuple[int, Witness]


@dataclass(frozen=True)
class CompiledMatrix:
    """A validated matrix: sets compiled to trees over real model IDs.

    Build it with :func:`compile_matrix`. Equality compares the compiled content,
    so two loads of the same config compare equal.
    """

    set_names: tuple[str, ...]
    evaluation_order: tuple[str, ...]
    models: frozenset[str]
    _sets: tuple[_Set, ...] = field(repr=False)
    _costs: tuple[tuple[str, int], ...] = field(repr=False)
    _by_name: dict[str, _Set] = field(init=False, repr=False, compare=False, hash=False)
    _cost_of: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self._sets})
        object.__setattr__(self, "_cost_of", dict(self._costs))

    @property
    def evict_costs(self) -> Mapping[str, int]:
        """Configured costs resolved to model IDs; unlisted models cost 1."""
        return dict(self._cost_of)

    def evict_cost(self, model: str) -> int:
        """What stopping ``model`` costs when comparing sets; 1 unless configured."""
        return self._cost_of.get(model, DEFAULT_EVICT_COST)

    def dsl(self, set_name: str) -> str:
        """The set's expression as written in the config."""
        return self._by_name[set_name].dsl

    def solve(self, target: str, running: Sequence[str]) -> MatrixChoice:
        """Which of ``running`` must stop so ``target`` may run (router spec §4.3.5).

        Deterministic and side-effect free: the scheduler asks this for every
        queued request on every drain. ``evict`` keeps the order of ``running``.
        """
        running = tuple(dict.fromkeys(running))
        if target in running:
            # §4.3.5 step 1: a running target never evicts, even alongside
            # models it is incompatible with.
            return MatrixChoice(None, None, (), 0, (target,))
        candidates = [s for s in self._in_order() if target in s.mentions]
        if not candidates:
            return self._alone(target, running)
        bits = {target: 1} | {m: 1 << (i + 1) for i, m in enumerate(running)}
        frontiers = self._frontiers(bits, candidates)
        best: tuple[int, _Set, _Entry] | None = None
        for cand in candidates:
            for entry in frontiers[cand.name]:
                if entry[0] & 1:
                    cost = self._mask_cost(entry[0], running)
                    if best is None or cost < best[0]:  # strictly: ties keep the first
                        best = (cost, cand, entry)
        assert best is not None  # a mentioned model appears in some combination
        cost, chosen, (mask, witness) = best
        evict = tuple(m for i, m in enumerate(running) if not mask >> (i + 1) & 1)
        return MatrixChoice(
            chosen.name,
            chosen.dsl,
            evict,
            cost,
            tuple(sorted(_flatten(witness))),
            nothing_running=not running,
        )

    def can_coexist(self, models: Collection[str]) -> bool:
        """Whether one combination of one set contains all of ``models`` (§4.3.10).

        Used to validate spillover selectors. A model in no set coexists with
        nothing, not even alone; an empty collection trivially coexists.
        """
        wanted = tuple(dict.fromkeys(models))
        if not wanted:
            return True
        if not self.models.issuperset(wanted):
            return False
        candidates = [s for s in self._in_order() if s.mentions.issuperset(wanted)]
        bits = {m: 1 << i for i, m in enumerate(wanted)}
        full = (1 << len(wanted)) - 1
        frontiers = self._frontiers(bits, candidates)
        return any(mask == full for s in candidates for mask, _ in frontiers[s.name])

    def combinations(
        self, set_name: str, relevant: Collection[str] | None = None
    ) -> tuple[tuple[str, ...], ...]:
        """The set's frontier: its combinations projected onto ``relevant``.

        Dominated projections are dropped and the order is the solver's order.
        With ``relevant=None`` every model counts, so this is the set's full
        expansion (minus combinations contained in others): for inspection and
        tests, since it can be exponentially large.
        """
        chosen = self._by_name[set_name]
        names = tuple(dict.fromkeys(chosen.mentions if relevant is None else relevant))
        bits = {m: 1 << i for i, m in enumerate(names)}
        frontier = self._frontiers(bits, [chosen])[set_name]
        return tuple(tuple(sorted(m for m in names if mask & bits[m])) for mask, _ in frontier)

    # --- internals ---

    def _in_order(self) -> Iterator[_Set]:
        return (self._by_name[name] for name in self.evaluation_order)

    def _alone(self, target: str, running: tuple[str, ...]) -> MatrixChoice:
        """§4.3.7: a model in no set runs only on its own."""
        cost = sum(self.evict_cost(m) for m in running)
        return MatrixChoice(None, None, running, cost, (target,), nothing_running=not running)

    def _mask_cost(self, mask: int, running: tuple[str, ...]) -> int:
        return sum(self.evict_cost(m) for i, m in enumerate(running) if not mask >> (i + 1) & 1)

    def _frontiers(
        self, bits: Mapping[str, int], wanted: Sequence[_Set]
    ) -> dict[str, list[_Entry]]:
        """Frontiers of ``wanted`` sets and of everything they reference.

        Computed in evaluation order, so a referenced set is always ready before
        a set that uses it and no recursion follows reference chains.
        """
        needed = self._closure(wanted)
        walker = _FrontierWalker(bits)
        for name in self.evaluation_order:
            if name in needed:
                walker.done[name] = walker.frontier(self._by_name[name].root)
        return walker.done

    def _closure(self, wanted: Sequence[_Set]) -> set[str]:
        """The wanted sets plus every set they reference, directly or not."""
        needed = {s.name for s in wanted}
        stack = list(needed)
        while stack:
            for ref in self._by_name[stack.pop()].refs:
                if ref not in needed:
                    needed.add(ref)
                    stack.append(ref)
        return needed


class _FrontierWalker:
    """Computes node frontiers for one query (one assignment of bits)."""

    def __init__(self, bits: Mapping[str, int]) -> None:
        self.bits = bits
        self.done: dict[str, list[_Entry]] = {}

    def frontier(self, node: _Node) -> list[_Entry]:
        if isinstance(node, _Leaf):
            return [(self.bits.get(node.model, 0), node.model)]
        if isinstance(node, _Use):
            return self.done[node.set_name]
        if node.mentions.isdisjoint(self.bits):
            return [(0, node.first)]
        if node.is_and:
            return self._and(node.items)
        out: list[_Entry] = []
        for item in node.items:
            for mask, witness in self.frontier(item):
                _add(out, mask, witness)
        return out

    def _and(self, items: tuple[_Node, ...]) -> list[_Entry]:
        kept: list[_Entry] = [(0, ())]
        for item in items:
            child = self.frontier(item)
            grown: list[_Entry] = []
            for kept_mask, kept_witness in kept:
                for mask, witness in child:
                    _add(grown, kept_mask | mask, (kept_witness, witness))
            kept = grown
        return kept


def _add(frontier: list[_Entry], mask: int, witness: Witness) -> None:
    """Add a mask unless an equal or larger one is present; drop masks it contains."""
    for present, _ in frontier:
        if mask & present == mask:
            return
    frontier[:] = [entry for entry in frontier if entry[0] & mask != entry[0]]
    frontier.append((mask, witness))


def _flatten(witness: Witness) -> set[str]:
    models: set[str] = set()
    stack = [witness]
    while stack:
        part = stack.pop()
        if isinstance(part, str):
            models.add(part)
        else:
            stack.extend(part)
    return models


# --- compiling ---------------------------------------------------------------------


def compile_matrix(
    vars: Mapping[str, str],
    evict_costs: Mapping[str, int],
    sets: Mapping[str, str],
    model_ids: Collection[str],
) -> CompiledMatrix:
    """Validate a matrix config (router spec §4.3.8) and compile it.

    Raises :class:`MatrixError` whose message starts with ``matrix: `` and is
    meant to be shown to the user as is. Checks run in a fixed order (sets
    present, vars, costs, each set's syntax and names in definition order,
    then cycles), so the first problem reported is stable.
    """
    known = frozenset(model_ids)
    if not sets:
        raise MatrixError("matrix: matrix must define at least one set")
    var_map = _check_vars(vars, known)
    costs = _check_costs(evict_costs, var_map, known)
    trees = {name: _parse_set(name, dsl, var_map, known, sets) for name, dsl in sets.items()}
    order = _evaluation_order(trees)
    compiled: dict[str, _Set] = {}
    for name in order:
        compiled[name] = _compile_set(name, sets[name] or "", trees[name], compiled)
    return CompiledMatrix(
        set_names=tuple(sets),
        evaluation_order=order,
        models=frozenset().union(*(s.mentions for s in compiled.values())),
        _sets=tuple(compiled[name] for name in order),
        _costs=tuple(sorted(costs.items())),
    )


def _check_vars(var_map: Mapping[str, str], known: frozenset[str]) -> dict[str, str]:
    """Vars are short aliases for real model IDs only; the key rule keeps them DSL-safe."""
    for key, model in var_map.items():
        if not isinstance(key, str) or not _VAR_KEY.fullmatch(key):
            raise MatrixError(
                f'matrix: var key "{key}" must contain only alphanumeric, '
                "'-' or '.' characters and be 1-32 characters long"
            )
        if model not in known:
            raise MatrixError(f'matrix: var key "{key}" references unknown model "{model}"')
    return dict(var_map)


def _check_costs(
    evict_costs: Mapping[str, int], var_map: Mapping[str, str], known: frozenset[str]
) -> dict[str, int]:
    """Resolve cost keys var-first to model IDs.

    Two keys that land on the same model with *different* costs are rejected:
    which one should win is undefined upstream (router spec §9 #19).
    """
    resolved: dict[str, int] = {}
    source: dict[str, str] = {}
    for key, cost in evict_costs.items():
        if isinstance(cost, bool) or not isinstance(cost, int) or cost <= 0:
            raise MatrixError(
                f'matrix: evict_cost for "{key}" must be a positive integer, got {cost!r}'
            )
        model = var_map.get(key, key)
        if model not in known:
            raise MatrixError(f'matrix: evict_costs: unknown var or model "{key}"')
        if model in resolved and resolved[model] != cost:
            raise MatrixError(
                f'matrix: evict_costs: "{source[model]}" and "{key}" both set the cost of '
                f'model "{model}" ({resolved[model]} vs {cost})'
            )
        resolved[model] = cost
        source[model] = key
    return resolved


def _parse_set(
    name: str,
    dsl: str | None,
    var_map: Mapping[str, str],
    known: frozenset[str],
    sets: Mapping[str, object],
) -> Expr:
    """Parse one set and resolve its leaves to model IDs (var first, then model)."""
    try:
        tree = parse(dsl or "")
    except MatrixError as exc:
        raise MatrixError(f'matrix: set "{name}": {exc}') from None
    return _resolve(tree, name, var_map, known, sets)


def _resolve(
    node: Expr,
    set_name: str,
    var_map: Mapping[str, str],
    known: frozenset[str],
    sets: Mapping[str, object],
) -> Expr:
    if isinstance(node, Ident):
        if node.name in var_map:
            return Ident(var_map[node.name])
        if node.name in known:
            return node
        raise MatrixError(f'matrix: set "{set_name}": unknown var or model "{node.name}"')
    if isinstance(node, Ref):
        if node.name not in sets:
            raise MatrixError(f'matrix: set "{set_name}" references undefined set "{node.name}"')
        return node
    items = tuple(_resolve(item, set_name, var_map, known, sets) for item in node.items)
    return And(items) if isinstance(node, And) else Or(items)


def _evaluation_order(trees: Mapping[str, Expr]) -> tuple[str, ...]:
    """Definition order, with each set's references (first mention first) placed before it.

    Iterative depth-first search, so long reference chains cannot overflow the
    stack; meeting a set that is still being placed means a cycle.
    """
    refs = {name: references(tree) for name, tree in trees.items()}
    placed: dict[str, None] = {}
    for root in trees:
        if root in placed:
            continue
        open_sets = {root}
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(refs[root]))]
        while stack:
            name, pending = stack[-1]
            nxt = next((r for r in pending if r not in placed), None)
            if nxt is None:
                stack.pop()
                open_sets.discard(name)
                placed[name] = None
            elif nxt in open_sets:
                raise MatrixError(f'matrix: circular reference detected involving set "{nxt}"')
            else:
                open_sets.add(nxt)
                stack.append((nxt, iter(refs[nxt])))
    return tuple(placed)


def _compile_set(name: str, dsl: str, tree: Expr, done: Mapping[str, _Set]) -> _Set:
    """Turn a resolved tree into solver nodes; referenced sets are already in ``done``."""
    root = _compile_node(tree, done)
    return _Set(name, dsl, tree, root, _mentions(root, done), _first(root, done), references(tree))


def _compile_node(node: Expr, done: Mapping[str, _Set]) -> _Node:
    if isinstance(node, Ident):
        return _Leaf(node.name)
    if isinstance(node, Ref):
        return _Use(node.name)
    items = tuple(_compile_node(item, done) for item in node.items)
    mentions = frozenset().union(*(_mentions(item, done) for item in items))
    if isinstance(node, And):
        first: Witness = tuple(_first(item, done) for item in items)
    else:
        first = _first(items[0], done)
    return _Combine(isinstance(node, And), items, mentions, first)


def _mentions(node: _Node, done: Mapping[str, _Set]) -> frozenset[str]:
    if isinstance(node, _Leaf):
        return frozenset({node.model})
    if isinstance(node, _Use):
        return done[node.set_name].mentions
    return node.mentions


def _first(node: _Node, done: Mapping[str, _Set]) -> Witness:
    if isinstance(node, _Leaf):
        return node.model
    if isinstance(node, _Use):
        return done[node.set_name].first
    return node.first
