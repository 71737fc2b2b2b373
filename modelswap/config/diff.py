"""What changed between two loaded configs: the plan of a reload, as plain data.

A reload (docs/configuration.md, "Reloading") keeps running whatever did not
change. This module decides, purely, what "did not change" means; the router
and the server act on the result. Models are compared on their *effective*
definition — after macros, ``${PORT}`` allocation and defaults — so an edit
that expands to the same values is no change at all.

A model whose definition differs is one of two kinds:

* **changed** — a value the upstream process is started with differs
  (:data:`PROCESS_FIELDS`): it must restart, after its in-flight requests;
* **updated** — only values read per request differ (name, description,
  aliases, filters, concurrency limit, declared ``resources``…): applied at
  once, the process keeps running. A model's ``resources:`` only tell the
  memory policy what to count; the process is started the same way.
  Restarting a 70B model because its description changed would be the very
  cost a diff reload exists to avoid.

Top-level settings are either *applied* atomically with the models
(:data:`APPLIED_SECTIONS`) or *restart-only* (:data:`RESTART_ONLY_SECTIONS`):
the running server keeps the old value and the reload reports a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelswap.config.schema import Config, ModelConfig

__all__ = [
    "APPLIED_SECTIONS",
    "PROCESS_FIELDS",
    "RESTART_ONLY_SECTIONS",
    "ROUTING_PARTS",
    "ConfigDiff",
    "diff_configs",
    "needs_restart",
]

PROCESS_FIELDS = (
    "cmd",
    "cmd_stop",
    "proxy",
    "env",
    "check_endpoint",
    "ttl",
    "unload_timeout",
    "health_check_timeout",
)
"""Model fields a running process was started with (everything in ``ProcessSpec``)."""

ROUTING_PARTS: Mapping[str, str] = {
    "router_use": "routing.router.use",
    "groups": "groups",
    "matrix": "matrix",
    "priority": "priority",
    "max_wait": "maxWait",
    "min_residency": "minResidency",
    "resources": "routing.resources",
}
"""Parts of the loaded ``routing`` reported separately (field → name in the summary)."""

APPLIED_SECTIONS: Mapping[str, str] = {
    "profiles": "profiles",
    "selectors": "selectors",
    "peers": "peers",
    "api_keys": "apiKeys",
    "include_aliases_in_list": "includeAliasesInList",
    "send_loading_state": "sendLoadingState",
    "upstream": "upstream",
    "global_ttl": "globalTTL",
    "unload_timeout": "unloadTimeout",
    "health_check_timeout": "healthCheckTimeout",
    "start_port": "startPort",
    "macros": "macros",
    "ui": "ui",
}
"""Top-level fields switched with the reload (field name → config key).

Routing parts are listed by :data:`ROUTING_PARTS`. What ``globalTTL``,
``unloadTimeout``, ``healthCheckTimeout``, ``startPort`` and ``macros`` feed
into the models shows up as model changes as well.
"""

RESTART_ONLY_SECTIONS: Mapping[str, str] = {
    "log_level": "logLevel",
    "log_time_format": "logTimeFormat",
    "log_to_stdout": "logToStdout",
    "log_requests": "logRequests",
    "metrics_max_in_memory": "metricsMaxInMemory",
    "capture_buffer": "captureBuffer",
    "store": "store",
    "performance": "performance",
    "hooks": "hooks",
}
"""Top-level fields read once at startup (field name → config key): warned, not applied.

``hooks.onStartup.preload`` is a startup action: a new list takes effect at
the next start, not by loading models in the middle of a reload.
"""


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """The difference between the config in force and a new one. Tuples are sorted."""

    unchanged: tuple[str, ...]
    changed: tuple[str, ...]
    """Models whose process definition differs: drain, stop, start the new one on demand."""
    updated: tuple[str, ...]
    """Models whose per-request settings differ only: applied without a restart."""
    removed: tuple[str, ...]
    added: tuple[str, ...]
    sections: tuple[str, ...]
    """Applied top-level keys that differ (config spelling: ``routing``, ``apiKeys``…)."""
    restart_only: tuple[str, ...]
    """Top-level keys that differ but need a restart (config spelling)."""

    @property
    def empty(self) -> bool:
        """True when the new config changes nothing at all."""
        return not (
            self.changed
            or self.updated
            or self.removed
            or self.added
            or self.sections
            or self.restart_only
        )

    def warnings(self, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        """One line per restart-only key (plus ``extra`` keys such as ``listen``)."""
        return tuple(
            f"{key} changed: it takes effect only after a restart"
            for key in (*self.restart_only, *extra)
        )

    def summary(self) -> dict[str, Any]:
        """The JSON summary shown by ``POST /api/config/reload`` and ``/api/events``."""
        return {
            "unchanged": list(self.unchanged),
            "changed": list(self.changed),
            "updated": list(self.updated),
            "removed": list(self.removed),
            "added": list(self.added),
            "sections": list(self.sections),
            "restartOnly": list(self.restart_only),
        }


def needs_restart(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether a model's running process was started from values that differ now."""
    return any(getattr(old, name) != getattr(new, name) for name in PROCESS_FIELDS)


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """Compare two validated configs (pure; no I/O)."""
    unchanged: list[str] = []
    changed: list[str] = []
    updated: list[str] = []
    for model_id in sorted(old.models.keys() & new.models.keys()):
        before, after = old.models[model_id], new.models[model_id]
        if before == after:
            unchanged.append(model_id)
        elif needs_restart(before, after):
            changed.append(model_id)
        else:
            updated.append(model_id)
    return ConfigDiff(
        unchanged=tuple(unchanged),
        changed=tuple(changed),
        updated=tuple(updated),
        removed=tuple(sorted(old.models.keys() - new.models.keys())),
        added=tuple(sorted(new.models.keys() - old.models.keys())),
        sections=tuple(
            sorted(
                (
                    *_differing(old.routing, new.routing, ROUTING_PARTS),
                    *_differing(old, new, APPLIED_SECTIONS),
                )
            )
        ),
        restart_only=_differing(old, new, RESTART_ONLY_SECTIONS),
    )


def _differing(old: object, new: object, fields: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(
        sorted(key for name, key in fields.items() if getattr(old, name) != getattr(new, name))
    )
