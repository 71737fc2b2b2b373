"""Config → LocalRouter: processes, eviction policy, scheduler limits (router spec §1).

The only place that reads routing settings out of :class:`~modelswap.config.Config`;
the runtime and the scheduler receive plain values. To add an eviction policy,
write one module implementing :class:`~modelswap.core.policy.EvictionPolicy`
and add one entry to :data:`POLICIES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from modelswap.config import Config
from modelswap.config.resources import (
    effective_resources,
    never_fits,
    never_fits_message,
    resource_budget,
)
from modelswap.config.schema import DEFAULT_GROUP
from modelswap.core.groups import GroupPolicy, GroupSpec
from modelswap.core.matrix_policy import MatrixPolicy
from modelswap.core.memory import MemoryPolicy, MemorySpec
from modelswap.core.policy import EvictionPolicy
from modelswap.core.scheduler import DEFAULT_LIMIT, FifoScheduler
from modelswap.errors import ConfigError, ConfigProblem
from modelswap.observability.log_fanout import LogSink
from modelswap.process import ManagedProcess, ProcessSpec
from modelswap.router.runtime import TICK_INTERVAL, LocalRouter
from modelswap.router.update import RouterUpdate

__all__ = [
    "POLICIES",
    "build_memory_policy",
    "build_policy",
    "build_router",
    "process_specs",
    "router_update",
]


def process_specs(config: Config) -> dict[str, ProcessSpec]:
    """One :class:`ProcessSpec` per model; values are already effective after loading.

    The loader has resolved ``ttl`` (-1 → ``globalTTL``), ``unloadTimeout``
    (0 → the global value) and copied the global ``healthCheckTimeout`` into
    every model (§1.2), so nothing here falls back to anything.
    """
    return {
        model_id: ProcessSpec(
            model_id=model_id,
            cmd=model.cmd,
            proxy=model.proxy,
            cmd_stop=model.cmd_stop,
            check_endpoint=model.check_endpoint,
            env=tuple(model.env),
            ttl=float(model.ttl),
            unload_timeout=float(model.unload_timeout),
            health_check_timeout=float(config.health_check_timeout),
        )
        for model_id, model in sorted(config.models.items())
    }


def _group_policy(config: Config) -> tuple[EvictionPolicy, frozenset[str]]:
    """Groups (§4.2): serves the members of its groups — with ``(default)``, every model."""
    groups = {
        name: GroupSpec(
            swap=group.swap,
            exclusive=group.exclusive,
            persistent=group.persistent,
            members=tuple(group.members),
        )
        for name, group in config.routing.groups.items()
    }
    if config.routing.memory:
        # Memory-aware routing: models no user group lists share the machine by
        # the budget, not one at a time (docs/configuration.md, "Memory budgets").
        groups.pop(DEFAULT_GROUP, None)
        return GroupPolicy(groups, models=config.models), frozenset(config.models)
    policy = GroupPolicy(groups, models=config.models)
    return policy, frozenset(policy.members)


def _matrix_policy(config: Config) -> tuple[EvictionPolicy, frozenset[str]]:
    """The matrix solver (§4.3): serves every configured model (§4.3.7)."""
    if config.routing.matrix is None:  # the loader rejects this; keep the type honest
        raise ValueError("routing.router.use is 'matrix' but no matrix is configured")
    return MatrixPolicy(config.routing.matrix), frozenset(config.models)


PolicyBuilder = Callable[[Config], tuple[EvictionPolicy, frozenset[str]]]

POLICIES: dict[str, PolicyBuilder] = {
    "group": _group_policy,
    "matrix": _matrix_policy,
}
"""``routing.router.use`` → how to build that policy and which models it serves.

A new eviction policy is one module implementing
:class:`~modelswap.core.policy.EvictionPolicy` plus one entry here (and its
name accepted by the config's ``routing.router.use`` check).
"""


def build_policy(config: Config) -> tuple[str, EvictionPolicy, frozenset[str]]:
    """``(router name, policy, served model IDs)`` for the active routing engine."""
    name = config.routing.router_use
    policy, models = POLICIES[name](config)
    return name, policy, models


def build_memory_policy(
    config: Config, models: frozenset[str], detected: Mapping[str, int] | None = None
) -> MemoryPolicy | None:
    """The memory policy when resources are configured (None: llama-swap's behaviour).

    ``detected`` is what the machine reports (NVML: ``vram`` and ``vram:N``);
    it fills budget keys the config leaves out. A model that cannot fit even
    alone in that budget is a :class:`ConfigError` naming it.
    """
    routing = config.routing
    if not routing.memory:
        return None
    budget = resource_budget(routing.resources, detected)
    declared = {
        m: effective_resources(config.models[m].resources, config.models[m].env)
        for m in sorted(models)
    }
    for model_id, sizes in declared.items():
        too_big = never_fits(sizes, budget)
        if too_big is not None:
            name, needs, has = too_big
            message = never_fits_message(model_id, name, needs, has) + " (detected via NVML)"
            raise ConfigError([ConfigProblem(message, path=f"models.{model_id}.resources")])
    matrix = routing.matrix
    costs = {m: float(matrix.evict_cost(m)) for m in models} if matrix is not None else {}
    return MemoryPolicy(MemorySpec(budget=budget, declared=declared, evict_cost=costs))


def router_update(config: Config, detected: Mapping[str, int] | None = None) -> RouterUpdate:
    """What ``config`` means for a running router: definitions and scheduling rules.

    Used at construction and by every config reload, so both read the config
    the same way. ``detected`` is the machine's memory (NVML), measured once at
    startup and reused by every reload: the default of budgets the config
    leaves out. Raises :class:`ConfigError` if a model can never fit in it, so
    a reload is refused before anything changes.
    """
    _name, policy, models = build_policy(config)
    specs = process_specs(config)
    # concurrencyLimit ≤ 0 means the built-in 10; the loader already raised
    # comfyui_auto to at least 50 (§1.2), so it needs nothing here.
    limits = {
        model_id: config.models[model_id].concurrency_limit
        for model_id in models
        if config.models[model_id].concurrency_limit > 0
    }
    routing = config.routing
    return RouterUpdate(
        specs={model_id: specs[model_id] for model_id in sorted(models)},
        policy=policy,
        limits=limits,
        priority={m: p for m, p in routing.priority.items() if m in models},
        max_wait=routing.max_wait,
        min_residency=routing.min_residency,
        health_check_timeout=float(config.health_check_timeout),
        memory=build_memory_policy(config, models, detected),
    )


def build_router(
    config: Config,
    *,
    base_env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    upstream_sink: LogSink | None = None,
    tick_interval: float = TICK_INTERVAL,
    detected_resources: Mapping[str, int] | None = None,
) -> LocalRouter:
    """Build the local router for ``config``. No side effects, no event loop needed.

    ``base_env`` is the environment children inherit (default: ours);
    ``upstream_sink`` receives every child's output (the shared "upstream" log);
    ``detected_resources`` the machine's memory (NVML), the default budget.
    """
    name = config.routing.router_use
    update = router_update(config, detected_resources)

    def make_process(spec: ProcessSpec) -> ManagedProcess:
        return ManagedProcess(spec, base_env=base_env, clock=clock, upstream_sink=upstream_sink)

    processes = {model_id: make_process(spec) for model_id, spec in update.specs.items()}
    scheduler = FifoScheduler(
        update.specs,
        update.policy,
        limits=update.limits,
        default_limit=DEFAULT_LIMIT,
        priority=update.priority,
        max_wait=update.max_wait,
        min_residency=update.min_residency,
        router_name=name,
        memory=update.memory,
    )
    return LocalRouter(
        scheduler,
        processes,
        name=name,
        health_check_timeout=update.health_check_timeout,
        clock=clock,
        tick_interval=tick_interval,
        process_factory=make_process,
    )
