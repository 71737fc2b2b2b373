"""The final boundary of macro expansion (§6.6): no ``${name}`` may survive.

A reference still present after expansion is a typo or a macro out of scope
(a model macro used by another model, a later-declared macro). llama-swap
reports these with field-specific messages that users and tests match on, so
the message shape depends on where the string sits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from modelswap.config.locations import KeyPath, Locations, format_path

MACRO_REF = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
ENV_REF = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")

KNOWN_TOP_LEVEL = frozenset(
    {
        "healthCheckTimeout",
        "logLevel",
        "logTimeFormat",
        "logToStdout",
        "logRequests",
        "metricsMaxInMemory",
        "captureBuffer",
        "store",
        "ui",
        "performance",
        "startPort",
        "globalTTL",
        "unloadTimeout",
        "sendLoadingState",
        "includeAliasesInList",
        "apiKeys",
        "profiles",
        "selectors",
        "peers",
        "hooks",
        "routing",
        "groups",
        "matrix",
        "upstream",
    }
)
"""Top-level keys whose strings are scanned; ``macros`` and unknown keys are not."""

_NAMED_MODEL_FIELDS = frozenset(
    {
        ("cmd",),
        ("cmdStop",),
        ("proxy",),
        ("checkEndpoint",),
        ("filters", "stripParams"),
        ("name",),
        ("description",),
    }
)
"""Model fields reported as ``<id>.<field>``; the rest as ``model <id> <field>:``."""

_RUNTIME_NAMES = ("PORT", "MODEL_ID")
_WHOLE_FIELD_LABELS = ("capabilities", "metadata")


def find_refs(text: str) -> list[str]:
    """Names of all ``${name}`` references in ``text``, in order."""
    return MACRO_REF.findall(text)


def _string_leaves(node: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string value under ``node`` (mapping keys are not values)."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _string_leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_leaves(value, (*path, index))


def _check_env(text: str, path: KeyPath, locations: Locations) -> None:
    match = ENV_REF.search(text)
    if match is not None:
        message = f"{format_path(path)}: environment variable '{match.group(1)}' not set"
        raise locations.error(path, message, with_path=False)


def _check_global(value: Any, path: KeyPath, locations: Locations) -> None:
    for leaf_path, text in _string_leaves(value, path):
        _check_env(text, leaf_path, locations)
        for ref in find_refs(text):
            message = f"{format_path(leaf_path)}: unknown macro '${{{ref}}}'"
            raise locations.error(leaf_path, message, with_path=False)


def _model_message(model_id: str, relative: KeyPath, ref: str) -> str | None:
    """The §6.6 message for ``${ref}`` at ``relative`` inside a model, or None if allowed."""
    field_keys = tuple(part for part in relative if isinstance(part, str))
    field = ".".join(field_keys)
    if field_keys in _NAMED_MODEL_FIELDS:
        if ref == "PID" and field == "cmdStop":
            return None  # substituted when the stop command runs
        if ref in _RUNTIME_NAMES:
            return f"macro '${{{ref}}}' should have been substituted in {model_id}.{field}"
        return f"unknown macro '${{{ref}}}' found in {model_id}.{field}"
    label = field_keys[0] if field_keys[0] in _WHOLE_FIELD_LABELS else field
    return f"model {model_id} {label}: unknown macro '${{{ref}}}'"


def _check_model(model_id: str, model: dict[str, Any], locations: Locations) -> None:
    for key, value in model.items():
        if key == "macros":
            continue  # kept unexpanded on purpose
        for leaf_path, text in _string_leaves(value, ("models", model_id, key)):
            _check_env(text, leaf_path, locations)
            for ref in find_refs(text):
                message = _model_message(model_id, leaf_path[2:], ref)
                if message is not None:
                    raise locations.error(leaf_path, message)


def check_leftovers(tree: dict[str, Any], locations: Locations) -> None:
    """Raise ConfigError for the first ``${...}`` left in a known field."""
    for key, value in tree.items():
        if key in KNOWN_TOP_LEVEL:
            _check_global(value, (key,), locations)
    models = tree.get("models")
    if not isinstance(models, dict):
        return
    for model_id in sorted(models, key=lambda m: m.encode("utf-8")):
        model = models[model_id]
        if isinstance(model, dict):
            _check_model(model_id, model, locations)
