"""Normalise and validate a decoded document into a :class:`Config` (§2.3).

The steps run in llama-swap's order, because with "stop at the first error"
the order decides which error a broken file reports:

 1. healthCheckTimeout floor 15        10. explicit alias uniqueness
 2. performance.every                   11. per model, sorted by ID
 3. startPort                           12. routing (groups / matrix)
 4. globalTTL                           13. scheduler (fifo, priority)
 5. unloadTimeout                       14. preload cleanup
 6. ui.activity.session_id              15. apiKeys
 7. store.path                          16. peers and their namespace
 8. upstream.ignorePaths                17. selectors
 9. logToStdout                         18. profiles

Steps 12–13 live in :mod:`validate_routing`, 14–18 in :mod:`validate_names`.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from modelswap.config.names import NameIndex
from modelswap.config.resources import check_resources
from modelswap.config.schema import (
    DEFAULT_IGNORE_PATH,
    MODALITIES,
    Config,
    ConfigDocument,
    ModelConfig,
    PerformanceConfig,
    StoreConfig,
)
from modelswap.config.schema_types import go_duration_text
from modelswap.config.urlcheck import url_parse_error
from modelswap.config.validate_base import Locate, Reporter, nowhere
from modelswap.config.validate_names import (
    check_api_keys,
    check_namespace,
    check_peers,
    check_profiles,
    check_selectors,
    clean_preload,
)
from modelswap.config.validate_ollama import check_ollama
from modelswap.config.validate_routing import normalise_routing, normalise_scheduler
from modelswap.errors import ConfigProblem

MIN_HEALTH_CHECK_TIMEOUT = 15
MIN_PERFORMANCE_EVERY = 5.0
DEFAULT_UNLOAD_TIMEOUT = 10
COMFYUI_MODEL_ID = "comfyui_auto"
COMFYUI_MIN_CONCURRENCY = 50
LOG_TO_STDOUT_VALUES = ("proxy", "upstream", "both", "none")


@dataclass(frozen=True)
class Validated:
    """A validated config plus the non-fatal findings made on the way."""

    config: Config
    warnings: tuple[ConfigProblem, ...]


def validate_document(doc: ConfigDocument, locate: Locate = nowhere) -> Validated:
    """Run every §2.3 step over ``doc``; raise ConfigError at the first failure."""
    report = Reporter(locate)
    health_check_timeout = max(doc.health_check_timeout, MIN_HEALTH_CHECK_TIMEOUT)
    performance = _check_performance(doc, report)
    if doc.start_port < 1:
        report.fail("startPort must be greater than 1", "startPort")
    if doc.global_ttl < 0:
        report.fail("globalTTL must be >= 0", "globalTTL")
    if doc.unload_timeout < 0:
        report.fail("unloadTimeout must be >= 0", "unloadTimeout")
    unload_timeout = doc.unload_timeout or DEFAULT_UNLOAD_TIMEOUT
    ui = doc.ui.model_copy(
        update={
            "activity": doc.ui.activity.model_copy(
                update={"session_id": normalise_session_ids(doc.ui.activity.session_id)}
            )
        }
    )
    store = None if doc.store is None else _check_store(doc.store, report)
    upstream = doc.upstream.model_copy(
        update={"ignore_paths": _check_ignore_paths(doc.upstream.ignore_paths, report)}
    )
    ollama = check_ollama(doc.ollama, report)
    if doc.log_to_stdout not in LOG_TO_STDOUT_VALUES:
        report.fail("logToStdout must be one of: proxy, upstream, both, none", "logToStdout")

    alias_owner = _check_explicit_aliases(doc.models, report)
    models: dict[str, ModelConfig] = {}
    for model_id in sorted(doc.models):
        models[model_id] = _normalise_model(
            model_id,
            doc,
            alias_owner,
            report,
            health_check_timeout=health_check_timeout,
            unload_timeout=unload_timeout,
        )
    models = {model_id: models[model_id] for model_id in doc.models}  # keep YAML order

    routing = normalise_routing(doc, models, report)
    names = NameIndex.build(
        {model_id: model.aliases for model_id, model in models.items()},
        {peer_id: peer.models for peer_id, peer in doc.peers.items()},
    )
    routing = normalise_scheduler(doc, routing, names, report)
    budget = check_resources(models, doc.routing.resources, report)
    memory = bool(budget) or any(model.resources for model in models.values())
    routing = routing.model_copy(update={"resources": budget, "memory": memory})
    hooks = doc.hooks.model_copy(
        update={
            "on_startup": doc.hooks.on_startup.model_copy(
                update={"preload": clean_preload(doc.hooks.on_startup.preload, names)}
            )
        }
    )
    check_api_keys(doc.api_keys, report)
    peers = check_peers(doc.peers, report)
    check_namespace(doc, models, peers, report)
    check_selectors(doc, models, names, routing, report)
    check_profiles(doc, names, report)

    fields: dict[str, Any] = {name: getattr(doc, name) for name in Config.model_fields}
    fields.update(
        health_check_timeout=health_check_timeout,
        performance=performance,
        unload_timeout=unload_timeout,
        ui=ui,
        store=store,
        upstream=upstream,
        ollama=ollama,
        models=models,
        routing=routing,
        hooks=hooks,
        peers=peers,
    )
    config = Config.model_validate(fields, by_name=True, by_alias=False)
    return Validated(config, tuple(report.warnings))


def _check_performance(doc: ConfigDocument, report: Reporter) -> PerformanceConfig:
    every = doc.performance.every or MIN_PERFORMANCE_EVERY
    if every < MIN_PERFORMANCE_EVERY:
        report.fail(
            f"performance: every must be at least 5s, got {go_duration_text(every)}",
            "performance",
            "every",
        )
    return doc.performance.model_copy(update={"every": every})


def normalise_session_ids(headers: tuple[str, ...]) -> tuple[str, ...]:
    """Trim, drop blanks, drop case-insensitive duplicates keeping the first (§13)."""
    seen: set[str] = set()
    kept: list[str] = []
    for header in headers:
        name = header.strip()
        if name and name.lower() not in seen:
            seen.add(name.lower())
            kept.append(name)
    return tuple(kept)


def _check_store(store: StoreConfig, report: Reporter) -> StoreConfig:
    """§13: the activity database must be creatable or writable before we start."""
    path = store.path.strip()
    where = ("store", "path")
    if not path:
        report.fail("store.path must not be empty", *where)
    try:
        found: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        found = None
    except OSError as exc:
        report.fail(f"store.path: {exc}", *where)
    if found is not None:
        if stat.S_ISDIR(found.st_mode):
            report.fail(f"store.path: {path} is a directory, not a file", *where)
        if not os.access(path, os.W_OK):
            report.fail(f"store.path: {path} is not writable: permission denied", *where)
        return store.model_copy(update={"path": path})
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        report.fail(
            f"store.path: directory {parent} is not writable: "
            f"stat {parent}: no such file or directory",
            *where,
        )
    if not os.access(parent, os.W_OK):
        report.fail(f"store.path: directory {parent} is not writable: permission denied", *where)
    return store.model_copy(update={"path": path})


def _check_ignore_paths(patterns: tuple[str, ...], report: Reporter) -> tuple[str, ...]:
    if not patterns:
        return (DEFAULT_IGNORE_PATH,)
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            report.fail(
                f'upstream.ignorePaths: invalid regular expression "{pattern}": {exc}',
                "upstream",
                "ignorePaths",
                index,
            )
    return patterns


def _check_explicit_aliases(models: dict[str, ModelConfig], report: Reporter) -> dict[str, str]:
    owner: dict[str, str] = {}
    for model_id in sorted(models):
        for index, alias in enumerate(models[model_id].aliases):
            if alias in owner:
                report.fail(
                    f"duplicate alias {alias} found in model: {model_id}",
                    "models",
                    model_id,
                    "aliases",
                    index,
                )
            owner[alias] = model_id
    return owner


def _normalise_model(
    model_id: str,
    doc: ConfigDocument,
    alias_owner: dict[str, str],
    report: Reporter,
    *,
    health_check_timeout: int,
    unload_timeout: int,
) -> ModelConfig:
    """Step 11 for one model; ``alias_owner`` gains its setParamsByID aliases."""
    model = doc.models[model_id]
    where = ("models", model_id)
    concurrency_limit, compat = model.concurrency_limit, model.compat
    if model_id == COMFYUI_MODEL_ID:
        concurrency_limit = max(concurrency_limit, COMFYUI_MIN_CONCURRENCY)
        compat = compat.model_copy(update={"ignore_websockets": True})
    ttl = doc.global_ttl if model.ttl == -1 else model.ttl
    if ttl < 0:
        report.fail(f"model {model_id}: invalid TTL value {model.ttl}", *where, "ttl")
    if model.unload_timeout < 0:
        report.fail(
            f"model {model_id}: invalid unloadTimeout value {model.unload_timeout}",
            *where,
            "unloadTimeout",
        )
    _check_capabilities(model_id, model, report)
    aliases = _set_params_aliases(model_id, model, doc.models, alias_owner, report)
    error = url_parse_error(model.proxy)
    if error is not None:
        report.fail(f"model {model_id}: invalid proxy URL: {error}", *where, "proxy")
    send_loading_state = (
        doc.send_loading_state if model.send_loading_state is None else model.send_loading_state
    )
    return model.model_copy(
        update={
            "health_check_timeout": health_check_timeout,
            "concurrency_limit": concurrency_limit,
            "compat": compat,
            "ttl": ttl,
            "unload_timeout": model.unload_timeout or unload_timeout,
            "aliases": aliases,
            "send_loading_state": send_loading_state,
        }
    )


def _check_capabilities(model_id: str, model: ModelConfig, report: Reporter) -> None:
    caps = model.capabilities
    for key, values in (("in", caps.input_modalities), ("out", caps.output_modalities)):
        for index, modality in enumerate(values):
            if modality not in MODALITIES:
                report.fail(
                    f'model {model_id}: capabilities.{key}: invalid modality "{modality}", '
                    f"must be one of: {', '.join(MODALITIES)}",
                    "models",
                    model_id,
                    "capabilities",
                    key,
                    index,
                )
    if caps.context < 0:
        report.fail(
            f"model {model_id}: capabilities.context: must be >= 0",
            "models",
            model_id,
            "capabilities",
            "context",
        )


def _set_params_aliases(
    model_id: str,
    model: ModelConfig,
    models: dict[str, ModelConfig],
    alias_owner: dict[str, str],
    report: Reporter,
) -> tuple[str, ...]:
    """§5.4: every setParamsByID key names the model, so it becomes an alias."""
    aliases = list(model.aliases)
    where = ("models", model_id, "filters", "setParamsByID")
    for key in sorted(model.filters.set_params_by_id):
        if key == model_id:
            continue
        if key in models:
            report.fail(
                f"model {model_id} filters.setParamsByID: key '{key}' conflicts with an "
                "existing model ID",
                *where,
                key,
            )
        owner = alias_owner.get(key)
        if owner == model_id:
            continue
        if owner is not None:
            report.fail(
                f"duplicate alias '{key}' in model {model_id} filters.setParamsByID, "
                f"already used by model {owner}",
                *where,
                key,
            )
        alias_owner[key] = model_id
        aliases.append(key)
    return tuple(aliases)
