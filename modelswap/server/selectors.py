"""Selectors (server spec §8): a virtual model name that picks one of its targets per request.

Three strategies, chosen per selector in the config:

* **pin** — always the first target;
* **warm** — the first target whose model is ``ready``, else the first that
  is ``starting``, else the first target (a cold start);
* **spillover** — spread in-flight requests: each target may hold
  ``settings.spillover`` reservations before the next (cold) target is used.

The choice is a plain synchronous function of the config, a ``state_of``
view of local model states (the router's advisory snapshot) and this
object's reservation counters, so it is atomic on the event loop without a
lock and tested without a server. A spillover choice holds a reservation
until its :class:`Choice` is released (when the request finishes, or at once
for an ignored websocket or a failed rewrite).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from modelswap.config import Config
from modelswap.errors import ServiceUnavailableError

StateOf = Callable[[str], str]
"""Local real model ID → stopped / starting / ready / stopping / shutdown."""

_GONE = frozenset({"stopping", "shutdown"})
_UP = frozenset({"ready", "starting"})


class SelectorError(ServiceUnavailableError):
    """No target can be chosen (503)."""


@dataclass(slots=True)
class Choice:
    """A chosen target; :meth:`release` gives back its reservation (idempotent)."""

    selector_id: str
    target: str
    """The target as configured (a model, alias, peer model or variant name)."""
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


@dataclass(frozen=True, slots=True)
class _Candidate:
    target: str
    key: str
    """The reservation key: the local real model ID or the peer FQN."""
    local_id: str | None


class Selectors:
    """Selector resolution for one config, with the spillover reservations it holds."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._reservations: dict[str, Counter[str]] = {}
        self._round_robin: Counter[str] = Counter()

    def __repr__(self) -> str:
        held = {sid: sum(c.values()) for sid, c in self._reservations.items() if sum(c.values())}
        return f"<Selectors {len(self._config.selectors)} reserved={held}>"

    def reconfigure(self, config: Config) -> None:
        """A config reload: choose by the new selectors; held reservations stay counted."""
        self._config = config

    def is_selector(self, name: str) -> bool:
        return name in self._config.selectors

    def reservations(self, selector_id: str) -> dict[str, int]:
        """Current spillover reservations per target key (non-zero only)."""
        return {k: n for k, n in self._reservations.get(selector_id, Counter()).items() if n}

    def choose(self, selector_id: str, state_of: StateOf) -> Choice:
        """Pick a target for one request (503 :class:`SelectorError` if none is possible)."""
        selector = self._config.selectors[selector_id]
        targets = [self._candidate(t) for t in selector.targets]
        if not targets:
            raise SelectorError(f'selector "{selector_id}" has no targets')
        if selector.strategy == "pin":
            return Choice(selector_id, targets[0].target)
        if selector.strategy == "warm":
            return Choice(selector_id, self._warm(targets, state_of).target)
        if selector.strategy == "spillover":
            return self._spillover(selector_id, targets, selector.settings.spillover, state_of)
        raise SelectorError(f'selector "{selector_id}" has unknown strategy {selector.strategy!r}')

    def _candidate(self, target: str) -> _Candidate:
        resolved = self._config.resolve_base_model(target)
        if resolved is None:
            return _Candidate(target, target, None)
        return _Candidate(target, resolved.key, resolved.model_id)

    @staticmethod
    def _warm(targets: list[_Candidate], state_of: StateOf) -> _Candidate:
        for wanted in ("ready", "starting"):
            for candidate in targets:
                if candidate.local_id is not None and state_of(candidate.local_id) == wanted:
                    return candidate
        return targets[0]

    def _spillover(
        self, selector_id: str, targets: list[_Candidate], limit: int, state_of: StateOf
    ) -> Choice:
        counts = self._reservations.setdefault(selector_id, Counter())
        active: list[_Candidate] = []
        cold: list[_Candidate] = []
        for candidate in targets:
            held = counts[candidate.key] > 0
            if candidate.local_id is not None:
                state = state_of(candidate.local_id)
                if state in _GONE:
                    continue
                (active if state in _UP or held else cold).append(candidate)
            else:
                (active if held else cold).append(candidate)
        if not active:
            if not cold:
                raise SelectorError(f'selector "{selector_id}" has no available spillover targets')
            chosen = cold[0]
        else:
            least = min(counts[c.key] for c in active)
            if least >= limit and cold:
                chosen = cold[0]
            else:
                tied = [c for c in active if counts[c.key] == least]
                chosen = tied[0]
                if len(tied) > 1:
                    chosen = tied[self._round_robin[selector_id] % len(tied)]
                    self._round_robin[selector_id] += 1
        counts[chosen.key] += 1

        def release() -> None:
            if counts[chosen.key] > 0:
                counts[chosen.key] -= 1

        return Choice(selector_id, chosen.target, release)
