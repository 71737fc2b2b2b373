"""The scheduler's memory knowledge: the policy in force and what it has learned so far.

:class:`~.memory.MemoryPolicy` is rebuilt from every config (a reload may
change a budget or a model's declared size); what was *learned* while running
— measured footprints, when each model was last used — must outlive it. This
book keeps both and answers the scheduler's one question, "what else must stop
so ``target`` fits?", with the state of this moment.

Config reloads (:class:`~.events.Reconfigured`), and why the rules below:

* A model still served keeps its measurements and its last use: a reload that
  only edits a description must not make the policy forget what a 40 GiB model
  really uses.
* A model the reload *replaced or removed* keeps running on its old process
  until it has drained (``RetireModel``). That process still holds memory, so
  it still counts: by the larger of what its **old** definition declared, what
  the new one declares, and what was measured. Counting the new declaration
  alone could under-count a process started under a larger one, and an
  under-count is an out-of-memory crash while an over-count is only an early
  eviction. A removed model is counted even though the structural policy no
  longer knows it (see :meth:`MemoryBook.eviction`).
* Once the old process has stopped (``ModelRetired``), a removed model is
  forgotten; a replaced one keeps its measurement as the estimate for its
  successor until the successor is measured (a smaller later reading replaces
  it, so the estimate errs only towards evicting).

Pure: no clock, no I/O; times are inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from modelswap.core.memory import MemoryPolicy, MemoryState, Sizes

__all__ = ["MemoryBook"]


class MemoryBook:
    """The memory policy in force, measurements, last use, old processes still draining."""

    def __init__(self, policy: MemoryPolicy | None = None) -> None:
        self.policy = policy
        self._measured: dict[str, Sizes] = {}
        self._last_used: dict[str, float] = {}
        self._draining: dict[str, Sizes] = {}  # model -> what its old definition declared

    def __repr__(self) -> str:
        return (
            f"<MemoryBook policy={self.policy!r} measured={sorted(self._measured)} "
            f"draining={sorted(self._draining)}>"
        )

    # --- facts --------------------------------------------------------------------------

    def measured(self, model: str, sizes: Mapping[str, int]) -> None:
        """``model`` was measured to use ``sizes``: the latest reading replaces the last."""
        self._measured[model] = dict(sizes)

    def used(self, model: str, now: float) -> None:
        """``model`` was granted or finished a request (or became ready) at ``now``."""
        self._last_used[model] = now

    def reconfigure(self, policy: MemoryPolicy | None, replace: Collection[str]) -> None:
        """A reload: switch to ``policy``; ``replace`` models keep counting until retired."""
        old = self.policy
        for model in sorted(replace):
            if model not in self._draining:  # still the same old process: keep its sizes
                declared = old.spec.declared.get(model, {}) if old is not None else {}
                self._draining[model] = dict(declared)
        self.policy = policy

    def retired(self, model: str, served: bool) -> None:
        """The old process of ``model`` has stopped; ``served``: the model still exists."""
        self._draining.pop(model, None)
        if not served:
            self._measured.pop(model, None)
            self._last_used.pop(model, None)

    # --- questions ----------------------------------------------------------------------

    def eviction(
        self,
        target: str,
        running: Sequence[str],
        already: Sequence[str],
        serving: Collection[str],
        now: float,
        draining: Sequence[str] = (),
    ) -> tuple[str, ...]:
        """``already`` plus what memory needs on top, in ``running`` + ``draining`` order.

        ``running`` are the served models the scheduler sees running;
        ``draining`` the running old processes of removed models, which take
        memory but which the structural policy does not know. They may be
        chosen: the scheduler then waits for them to stop by themselves.
        """
        policy = self.policy
        if policy is None:
            return tuple(already)
        everyone = [*running, *(m for m in draining if m not in running)]
        state = MemoryState(
            now,
            frozenset(m for m in everyone if m in serving),
            self._last_used,
            self._counted(),
        )
        more = set(policy.eviction_for(target, everyone, state, already))
        if not more:
            return tuple(already)
        return tuple(m for m in everyone if m in more or m in already)

    def describe(self, target: str, extra: Sequence[str]) -> str | None:
        """The log line of a swap the memory policy added ``extra`` evictees to."""
        if self.policy is None:
            return None
        return self.policy.describe(target, extra, self._counted())

    def footprints(self) -> dict[str, dict[str, int]]:
        """Per model: the bytes counted for it now (measured as-is without a policy)."""
        counted = self._counted()
        if self.policy is None:
            return {m: dict(sizes) for m, sizes in sorted(counted.items())}
        known = sorted(set(self.policy.spec.declared) | set(counted))
        return {m: self.policy.footprint(m, counted) for m in known}

    def _counted(self) -> dict[str, Sizes]:
        """Measurements, raised to the old declaration for old processes still draining."""
        counted: dict[str, Sizes] = dict(self._measured)
        for model, declared in self._draining.items():
            seen = counted.get(model, {})
            names = set(declared) | set(seen)
            counted[model] = {n: max(declared.get(n, 0), seen.get(n, 0)) for n in sorted(names)}
        return counted
