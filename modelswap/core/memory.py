"""Memory-aware eviction: evict idle models, least recently used first, until the target fits.

llama-swap can only keep models apart by hand-written groups or a matrix, which
must be redone whenever a model or a context size changes (its issues #158,
#319, #1004). Here each model declares what it needs (``resources:``, a map of
resource name → bytes, e.g. ``vram``, ``ram``, ``vram:1``), the host declares
what it has (``routing.resources``), and this module answers "what must stop
so that ``target`` fits?".

Pure: budgets, declared sizes and evict costs come from the config (built once
into :class:`MemorySpec`); what changes while running — who is serving, when
each model was last used, what each model was *measured* to use — comes in as
a :class:`MemoryState` snapshot from the scheduler. No clock, no I/O.

The rule, and why:

1. A model's footprint is, per resource, the larger of what it declared and
   what it was measured to use (a model that declared too little must not
   push the machine over; one that declared too much keeps its declaration,
   because a measurement taken while idle under-reads a KV cache that grows).
2. A running target evicts nothing: its memory is already allocated.
3. Otherwise candidates are the other running models, **idle ones first**
   (never stop a serving model while an idle one would do: the scheduler
   waits for a serving evictee, as it does for groups), then by how long they
   have been idle divided by their evict cost (least recently used first; a
   model that is expensive to reload is kept longer), then by name.
4. Candidates are evicted in that order until the target fits; then, in
   reverse order, any evictee whose memory turned out not to be needed is put
   back (one large eviction can make earlier small ones unnecessary).
5. If the target cannot fit even with every candidate gone (it was measured
   larger than the budget), everything is evicted: it runs alone, which is
   the best the machine can do. The config check rejects a model whose
   *declared* size can never fit.

A structural policy (groups, matrix) may already evict some models; the
scheduler passes those as ``already`` so they are not counted, and a start
then satisfies both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["MemoryPolicy", "MemorySpec", "MemoryState", "Sizes", "format_bytes"]

Sizes = Mapping[str, int]
"""Resource name → bytes."""


@dataclass(frozen=True, slots=True)
class MemorySpec:
    """What the config says: budgets, declared footprints and evict costs.

    ``budget`` holds only constrained resources; a resource a model declares
    but no budget names is not limited. ``declared`` is per model, already
    expanded to per-device keys (``vram:0``) by the config layer.
    """

    budget: Sizes = field(default_factory=dict)
    declared: Mapping[str, Sizes] = field(default_factory=dict)
    evict_cost: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MemoryState:
    """What the scheduler knows now: a snapshot, valid for one decision."""

    now: float = 0.0
    serving: frozenset[str] = frozenset()
    last_used: Mapping[str, float] = field(default_factory=dict)
    measured: Mapping[str, Sizes] = field(default_factory=dict)


class MemoryPolicy:
    """The memory half of an eviction decision (see the module docstring for the rule)."""

    def __init__(self, spec: MemorySpec) -> None:
        for model, cost in spec.evict_cost.items():
            if cost <= 0:
                raise ValueError(f"evict cost of {model!r} must be > 0")
        self.spec = spec

    def footprint(self, model: str, measured: Mapping[str, Sizes]) -> dict[str, int]:
        """Per resource: max(declared, measured) bytes; every budgeted resource is present."""
        declared = self.spec.declared.get(model, {})
        seen = measured.get(model, {})
        names = sorted(set(self.spec.budget) | set(declared) | set(seen))
        return {name: max(declared.get(name, 0), seen.get(name, 0)) for name in names}

    def fits(self, models: Iterable[str], measured: Mapping[str, Sizes]) -> bool:
        """Whether ``models`` together stay within every budget."""
        used = dict.fromkeys(self.spec.budget, 0)
        for model in dict.fromkeys(models):
            for name, size in self.footprint(model, measured).items():
                if name in used:
                    used[name] += size
        return all(used[name] <= limit for name, limit in self.spec.budget.items())

    def overflow(self, model: str, measured: Mapping[str, Sizes]) -> list[str]:
        """Resources on which ``model`` alone exceeds the budget (empty: it can fit)."""
        budget = self.spec.budget
        return [
            name
            for name, size in self.footprint(model, measured).items()
            if name in budget and size > budget[name]
        ]

    def eviction_for(
        self,
        target: str,
        running: Sequence[str],
        state: MemoryState,
        already: Iterable[str] = (),
    ) -> tuple[str, ...]:
        """The running models to stop (beyond ``already``) so ``target`` fits; ``running`` order."""
        if not self.spec.budget or target in running:
            return ()
        gone = set(already)
        staying = [m for m in dict.fromkeys(running) if m != target and m not in gone]
        measured = state.measured
        if self.fits([target, *staying], measured):
            return ()
        order = sorted(staying, key=lambda m: self._rank(m, state))
        evicted: list[str] = []
        for model in order:
            evicted.append(model)
            staying.remove(model)
            if self.fits([target, *staying], measured):
                break
        for model in reversed(evicted[:-1]):
            if self.fits([target, *staying, model], measured):
                staying.append(model)
                evicted.remove(model)
        chosen = set(evicted)
        return tuple(m for m in running if m in chosen)

    def _rank(self, model: str, state: MemoryState) -> tuple[bool, float, str]:
        """Sort key: idle before serving, then longest idle per unit of evict cost."""
        idle = max(0.0, state.now - state.last_used.get(model, float("-inf")))
        cost = self.spec.evict_cost.get(model, 1.0)
        return (model in state.serving, -(idle + 1.0) / cost, model)

    def describe(
        self, target: str, evict: Sequence[str], measured: Mapping[str, Sizes]
    ) -> str | None:
        """A log line for a swap this policy shaped (None when it evicted nothing)."""
        if not evict:
            return None
        need = ", ".join(
            f"{name} {format_bytes(size)}"
            for name, size in self.footprint(target, measured).items()
            if size
        )
        return f"memory: evicting {', '.join(evict)} so {target} fits ({need or 'no size known'})"

    def __repr__(self) -> str:
        budget = {name: format_bytes(size) for name, size in self.spec.budget.items()}
        return f"<MemoryPolicy budget={budget} models={len(self.spec.declared)}>"


_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def format_bytes(size: int) -> str:
    """``10.5GiB``, ``512MiB``, ``12B``: short and exact enough for logs and the UI."""
    for unit, scale in _UNITS:
        if size >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value % 1 else f"{int(value)}{unit}"
    return f"{size}B"
