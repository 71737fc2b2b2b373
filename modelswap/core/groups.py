"""Group eviction policy: models grouped by how they may share the machine (router spec §4.2).

Each model belongs to one group. For a target in group ``tg``, a running model
``m`` (≠ target) in group ``g(m)`` is evicted when

1. ``g(m) == tg`` and ``tg.swap`` — members of a swap group replace each other;
2. ``g(m) != tg`` and ``tg.exclusive`` and not ``g(m).persistent`` — an
   exclusive group clears every other non-persistent group.

Otherwise it stays. Only the *target's* group flags matter, which is the
llama-swap quirk we keep on purpose (§9 #22): a non-exclusive group Y loaded
after an exclusive group X leaves X running ("one-way non-exclusive"), while
loading X after Y stops Y — and asking for an already-ready X stops Y too.

Defensive rules for data the loader would never produce: a target in no group
evicts nothing; a running model in no group is evicted by any exclusive target.

Built from plain :class:`GroupSpec` data, not the pydantic config, so core stays
free of config imports; the app converts ``Routing.groups`` (which already holds
the synthesised ``(default)`` group).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from modelswap.core.decisions import LogLevel

__all__ = ["GroupError", "GroupPolicy", "GroupSpec"]


class GroupError(ValueError):
    """The groups cannot build a router; the message is meant for the user verbatim."""


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One group as plain data; defaults are llama-swap's YAML defaults."""

    swap: bool = True
    exclusive: bool = True
    persistent: bool = False
    members: tuple[str, ...] = ()


class GroupPolicy:
    """:class:`~.policy.EvictionPolicy` for group routing.

    ``models``, if given, is every configured model ID: a member outside it
    fails the build (``no model config for "X"``), as llama-swap's router build
    does. A model listed in two groups always fails.
    """

    def __init__(
        self, groups: Mapping[str, GroupSpec], models: Collection[str] | None = None
    ) -> None:
        group_of: dict[str, str] = {}
        for name, spec in groups.items():
            for member in spec.members:
                if member in group_of:
                    raise GroupError(f'model "{member}" is in multiple groups')
                if models is not None and member not in models:
                    raise GroupError(f'no model config for "{member}"')
                group_of[member] = name
        self._groups: dict[str, GroupSpec] = dict(groups)
        self._group_of = group_of

    @property
    def members(self) -> tuple[str, ...]:
        """Every model of every group, sorted: the models the group router serves."""
        return tuple(sorted(self._group_of))

    def group_of(self, model: str) -> str | None:
        """The name of ``model``'s group, or None if no group lists it."""
        return self._group_of.get(model)

    def eviction_for(self, target: str, running: Sequence[str]) -> tuple[str, ...]:
        """Running models the two rules above evict, in ``running`` order."""
        tg_name = self._group_of.get(target)
        if tg_name is None:
            return ()
        tg = self._groups[tg_name]
        evict: list[str] = []
        for model in dict.fromkeys(running):
            if model == target:
                continue
            name = self._group_of.get(model)
            if name == tg_name:
                if tg.swap:
                    evict.append(model)
            elif tg.exclusive and (name is None or not self._groups[name].persistent):
                evict.append(model)
        return tuple(evict)

    def describe_swap(self, target: str, running: Sequence[str]) -> tuple[LogLevel, str] | None:
        """The group router logs nothing when a swap starts (§4.2)."""
        return None

    def __repr__(self) -> str:
        return f"<GroupPolicy groups={sorted(self._groups)} models={len(self._group_of)}>"
