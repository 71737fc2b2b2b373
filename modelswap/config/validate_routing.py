"""Steps 12–13 of §2.3: one routing engine, one scheduler, names checked.

Both config forms — canonical ``routing.router`` and the legacy top-level
``groups``/``matrix`` — are reduced to a single :class:`Routing`. Three
deliberate differences from llama-swap, all fixes for its documented weak
spots (router spec §9 #15–17):

* a group member must be a model ID. llama-swap fails later, at router build,
  for unknown names, and accepts an alias but then runs a second, unreachable
  process under the alias name; we reject both here and, for an alias, name
  the model ID to write instead;
* a user group called ``(default)`` is ignored with a warning (llama-swap
  silently replaces it), so its members simply fall into the synthesised
  ``(default)`` group;
* fifo priorities given by alias are applied to the real model ID (llama-swap
  accepts them but they never take effect). A key that is the model ID itself
  wins over an alias of the same model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from modelswap.config.names import NameIndex
from modelswap.config.schema import (
    DEFAULT_GROUP,
    ConfigDocument,
    GroupConfig,
    MatrixSection,
    ModelConfig,
    Routing,
)
from modelswap.config.validate_base import KeyPath, Reporter
from modelswap.core.matrix import MatrixError, compile_matrix

MIXED_FORMS = (
    "config uses both the legacy top-level 'matrix'/'groups' keys and the new "
    "'routing.router' block; please migrate the top-level keys into 'routing.router' "
    "and remove them"
)
ROUTERS = ("group", "matrix")
SCHEDULERS = ("fifo",)


def normalise_routing(
    doc: ConfigDocument, models: Mapping[str, ModelConfig], report: Reporter
) -> Routing:
    """Step 12: pick the active engine and validate only that one."""
    router = doc.routing.router
    legacy = bool(doc.groups) or doc.matrix is not None
    canonical = (
        bool(router.use) or router.settings.matrix is not None or bool(router.settings.groups)
    )
    if legacy and canonical:
        report.fail(MIXED_FORMS, "routing", "router")
    if legacy:
        if doc.groups and doc.matrix is not None:
            report.fail("config cannot use both 'groups' and 'matrix'", "matrix")
        if doc.matrix is not None:
            return _compile(doc.matrix, models, report, ("matrix",))
        return _groups(doc.groups, models, report, ("groups",))
    use = router.use or "group"
    if use not in ROUTERS:
        report.fail(
            f'routing.router.use: unknown router "{use}" (valid: group, matrix)',
            "routing",
            "router",
            "use",
        )
    if use == "matrix":
        if router.settings.matrix is None:
            report.fail(
                "routing.router.use is 'matrix' but routing.router.settings.matrix is not set",
                "routing",
                "router",
                "use",
            )
        return _compile(
            router.settings.matrix, models, report, ("routing", "router", "settings", "matrix")
        )
    return _groups(
        router.settings.groups, models, report, ("routing", "router", "settings", "groups")
    )


def _compile(
    matrix: MatrixSection, models: Mapping[str, ModelConfig], report: Reporter, where: KeyPath
) -> Routing:
    try:
        compiled = compile_matrix(matrix.vars, matrix.evict_costs, matrix.sets, list(models))
    except MatrixError as exc:
        report.fail(str(exc), *where)
    return Routing(router_use="matrix", groups={}, matrix=compiled)


def _groups(
    groups: Mapping[str, GroupConfig],
    models: Mapping[str, ModelConfig],
    report: Reporter,
    where: KeyPath,
) -> Routing:
    if DEFAULT_GROUP in groups:
        report.warn(
            f'group "{DEFAULT_GROUP}" is reserved for models no group lists; this '
            "definition is ignored and its members join the synthesised default group",
            *where,
            DEFAULT_GROUP,
        )
    user = {group_id: group for group_id, group in groups.items() if group_id != DEFAULT_GROUP}
    member_of: dict[str, str] = {}
    for group_id in sorted(user):
        seen: set[str] = set()
        for index, member in enumerate(user[group_id].members):
            at = (*where, group_id, "members", index)
            if member in seen:
                report.fail(f"duplicate model member {member} found in group: {group_id}", *at)
            seen.add(member)
            if member in member_of:
                report.fail(
                    f"model member {member} is used in multiple groups: "
                    f"{member_of[member]} and {group_id}",
                    *at,
                )
            member_of[member] = group_id
    _check_members_are_ids(user, models, report, where)
    default = GroupConfig(members=tuple(sorted(m for m in models if m not in member_of)))
    return Routing(router_use="group", groups={**user, DEFAULT_GROUP: default})


def _check_members_are_ids(
    groups: Mapping[str, GroupConfig],
    models: Mapping[str, ModelConfig],
    report: Reporter,
    where: KeyPath,
) -> None:
    owner = {alias: model_id for model_id, model in models.items() for alias in model.aliases}
    for group_id in sorted(groups):
        for index, member in enumerate(groups[group_id].members):
            if member in models:
                continue
            message = f'group {group_id}: member "{member}" is not a model ID'
            if member in owner:
                message += (
                    f' (it is an alias of "{owner[member]}"; groups list model IDs, '
                    f'write "{owner[member]}")'
                )
            else:
                message += f' (no model config for "{member}")'
            report.fail(message, *where, group_id, "members", index)


def normalise_scheduler(
    doc: ConfigDocument, routing: Routing, names: NameIndex, report: Reporter
) -> Routing:
    """Step 13: fifo only; priority keys resolve; maxWait/minResidency defaults."""
    scheduler = doc.routing.scheduler
    use = scheduler.use or "fifo"
    if use not in SCHEDULERS:
        report.fail(
            f'routing.scheduler.use: unknown scheduler "{use}" (valid: fifo)',
            "routing",
            "scheduler",
            "use",
        )
    fifo = scheduler.settings.fifo
    priority: dict[str, int] = {}
    by_id: set[str] = set()
    for key, value in fifo.priority.items():
        model_id = names.resolve_model_id(key)
        if model_id is None:
            report.fail(
                f'routing.scheduler.settings.fifo.priority references unknown model "{key}"',
                "routing",
                "scheduler",
                "settings",
                "fifo",
                "priority",
                key,
            )
        if key == model_id:
            by_id.add(model_id)
        elif model_id in by_id:
            continue
        priority[model_id] = value
    min_residency = fifo.max_wait / 3 if fifo.min_residency is None else fifo.min_residency
    return routing.model_copy(
        update={
            "scheduler_use": "fifo",
            "priority": priority,
            "max_wait": fifo.max_wait,
            "min_residency": min_residency,
        }
    )


def coexistence_error(selector_id: str, routing: Routing, local: Collection[str]) -> str | None:
    """§11.4: can all ``local`` spillover targets run at the same time?

    One target always can; so can none. In group mode they must share one
    group with ``swap: false``; in matrix mode one expanded set must hold all.
    """
    targets = list(dict.fromkeys(local))
    if len(targets) < 2:
        return None
    if routing.matrix is not None:
        if routing.matrix.can_coexist(targets):
            return None
        return (
            f"selectors.{selector_id}.targets must all appear together in one expanded matrix set"
        )
    if routing.memory:
        # Memory routing: models outside user groups share the machine by the budget
        # (the (default) group is not applied), so they can run together if they fit.
        targets = [t for t in targets if routing.group_of(t) != DEFAULT_GROUP]
        if len(targets) < 2:
            return None
    group_ids: set[str] = set()
    for target in targets:
        group_id = routing.group_of(target)
        if group_id is None:
            return f'selectors.{selector_id} target "{target}" is not in a routing group'
        group_ids.add(group_id)
    if len(group_ids) > 1:
        return f"selectors.{selector_id} spillover targets must share one routing group"
    if routing.groups[group_ids.pop()].swap:
        return f"selectors.{selector_id} spillover targets must share a group with swap: false"
    return None
