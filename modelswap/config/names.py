"""Name resolution: which model or peer model a requested name means.

The loader needs this while validating (profile pins, selector targets,
preload) and the server needs it for every request, so it lives in one small
pure index built from the model aliases and peer model lists (config spec
§10.2 and §16). Order of precedence: local model ID, local alias, peer FQN
(``<peerID>/<modelID>``, an opaque string never split on ``/``), then a bare
peer model ID listed by exactly one peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a name leads: a local model, or one model of one peer."""

    model_id: str | None = None
    peer_id: str | None = None
    peer_model: str | None = None

    @property
    def is_local(self) -> bool:
        return self.model_id is not None

    @property
    def key(self) -> str:
        """The canonical name: the local model ID, or the peer FQN."""
        if self.model_id is not None:
            return self.model_id
        return f"{self.peer_id}/{self.peer_model}"


@dataclass(frozen=True)
class NameIndex:
    """Lookup tables for local IDs, aliases and peer names; build with :meth:`build`."""

    model_ids: frozenset[str] = frozenset()
    alias_owner: Mapping[str, str] = field(default_factory=dict)
    peer_fqns: Mapping[str, ResolvedModel] = field(default_factory=dict)
    bare_peer: Mapping[str, ResolvedModel] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        aliases_by_model: Mapping[str, Iterable[str]],
        models_by_peer: Mapping[str, Iterable[str]],
    ) -> NameIndex:
        """Index models (ID → aliases) and peers (ID → model IDs).

        The first model (in sorted ID order) to claim an alias owns it; the
        loader has already rejected real duplicates. A bare peer name listed by
        two peers is ambiguous and not indexed.
        """
        owners: dict[str, str] = {}
        for model_id in sorted(aliases_by_model):
            for alias in aliases_by_model[model_id]:
                owners.setdefault(alias, model_id)
        fqns: dict[str, ResolvedModel] = {}
        bare: dict[str, list[ResolvedModel]] = {}
        for peer_id in sorted(models_by_peer):
            for model in models_by_peer[peer_id]:
                target = ResolvedModel(peer_id=peer_id, peer_model=model)
                fqns.setdefault(target.key, target)
                listed = bare.setdefault(model, [])
                if target not in listed:
                    listed.append(target)
        return cls(
            model_ids=frozenset(aliases_by_model),
            alias_owner=owners,
            peer_fqns=fqns,
            bare_peer={name: found[0] for name, found in bare.items() if len(found) == 1},
        )

    def resolve_model_id(self, name: str) -> str | None:
        """A local model ID or alias → the real model ID; anything else → None."""
        if name in self.model_ids:
            return name
        return self.alias_owner.get(name)

    def resolve_base_model(self, name: str) -> ResolvedModel | None:
        """Local ID → alias → peer FQN → unique bare peer name → None (§10.2)."""
        model_id = self.resolve_model_id(name)
        if model_id is not None:
            return ResolvedModel(model_id=model_id)
        found = self.peer_fqns.get(name)
        if found is not None:
            return found
        return self.bare_peer.get(name)
