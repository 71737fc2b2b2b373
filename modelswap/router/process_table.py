"""The router's processes by model ID, and what replaces each one after a config reload.

Owned by the router's loop (design rule 2): only the loop calls the mutating
methods, synchronously, so a reload switches the table in one step. A reload
never touches a process whose definition (:class:`ProcessSpec`) is the same —
same object, same pid, same TTL clock. A model whose definition changed, or
that was removed, keeps its current process until the scheduler says it has
drained (``RetireModel``); the new definition waits here as its *successor*
(``None``: the model is gone) and is put in place by :meth:`install_successor`
once the old process has stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from modelswap.process import ManagedProcess, ProcessSpec, ProcessState, StateChange

__all__ = ["ProcessFactory", "ProcessTable"]

ProcessFactory = Callable[[ProcessSpec], ManagedProcess]
"""Builds the process of a model added or changed by a reload (the composition root's)."""

_Listener = Callable[[StateChange], None]


class ProcessTable:
    """``{model: ManagedProcess}`` plus pending successors (see module docstring)."""

    def __init__(
        self,
        processes: Mapping[str, ManagedProcess],
        factory: ProcessFactory,
        listener: _Listener,
    ) -> None:
        self._factory = factory
        self._listener = listener
        self._current: dict[str, ManagedProcess] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._successors: dict[str, ManagedProcess | None] = {}
        for model, process in processes.items():
            self._put(model, process)

    def __repr__(self) -> str:
        return f"<ProcessTable {sorted(self._current)} successors={sorted(self._successors)}>"

    # --- reading ---------------------------------------------------------------------

    @property
    def current(self) -> Mapping[str, ManagedProcess]:
        """The processes requests are served by now (read-only view)."""
        return self._current

    def get(self, model: str) -> ManagedProcess | None:
        return self._current.get(model)

    def __getitem__(self, model: str) -> ManagedProcess:
        return self._current[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def state_of(self, model: str) -> str:
        """``model``'s state now (``stopped`` for a model without a process)."""
        process = self._current.get(model)
        return process.state.value if process is not None else ProcessState.STOPPED.value

    def states(self) -> dict[str, str]:
        """``{model: state}`` of every current process: the scheduler's view."""
        return {m: process.state.value for m, process in self._current.items()}

    def running(self) -> dict[str, str]:
        """``{model: state}`` of the processes not stopped or shut down, sorted by model."""
        return {
            model: process.state.value
            for model, process in sorted(self._current.items())
            if process.state not in (ProcessState.STOPPED, ProcessState.SHUTDOWN)
        }

    def every_process(self) -> list[ManagedProcess]:
        """Current processes and successors not yet in place (both need a shutdown)."""
        waiting = [p for p in self._successors.values() if p is not None]
        return [*self._current.values(), *waiting]

    # --- mutating (the router's loop only) -------------------------------------------

    def reconfigure(self, specs: Mapping[str, ProcessSpec]) -> frozenset[str]:
        """Take the reload's definitions; return the models whose process must retire.

        Added models get their process at once. Changed and removed ones get a
        successor (or None) and are returned; a model already retiring takes
        the newest definition as its successor and is returned again.
        """
        replace: set[str] = set()
        for model in sorted(set(self._current) | set(specs)):
            spec = specs.get(model)
            process = self._current.get(model)
            if model in self._successors:
                pending = self._successors[model]
                if spec is None:
                    self._successors[model] = None
                elif pending is None or pending.spec != spec:
                    self._successors[model] = self._factory(spec)
                replace.add(model)
            elif process is None:
                if spec is not None:
                    self._put(model, self._factory(spec))
            elif spec is None:
                self._successors[model] = None
                replace.add(model)
            elif process.spec != spec:
                self._successors[model] = self._factory(spec)
                replace.add(model)
        return frozenset(replace)

    def install_successor(self, model: str) -> ManagedProcess | None:
        """The old process of ``model`` has stopped: put its successor in place.

        Returns the retired process (the caller has already shut it down), or
        None if ``model`` had no pending successor.
        """
        if model not in self._successors:
            return None
        successor = self._successors.pop(model)
        retired = self._current.pop(model, None)
        unsubscribe = self._unsubscribe.pop(model, None)
        if unsubscribe is not None:
            unsubscribe()
        if successor is not None:
            self._put(model, successor)
        return retired

    def _put(self, model: str, process: ManagedProcess) -> None:
        self._current[model] = process
        self._unsubscribe[model] = process.on_state_change(self._listener)
