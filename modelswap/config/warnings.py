"""Unknown config keys, reported as warnings with the closest known key.

llama-swap silently ignores keys it does not know, so a typo such as ``tll:``
quietly does nothing. modelswap still loads such a file (it must load any
llama-swap config unchanged) but reports each unknown key with its line and,
when one is close, the key that was probably meant::

    config.yaml:7: models.qwen.tll: unknown key (did you mean "ttl"?)

The known keys come from the schema itself (:mod:`modelswap.config.schema`),
so they cannot drift from what is decoded. Free-form maps — ``metadata``,
``macros``, ``setParams``, ``setParamsByID``, matrix ``vars``/``sets``/
``evict_costs``, priorities, pins — and the user-named ID maps (models, peers,
groups, profiles, selectors) are not checked key by key; the sections inside
ID maps are.

Decision: a top-level ``defs`` key, or any top-level key starting with
``x-``, is an anchor holder (llama-swap's documented way to share YAML anchors,
and the docker-compose convention) and is accepted without a warning.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from modelswap.config.locations import KeyPath, format_path
from modelswap.config.schema import ConfigDocument
from modelswap.config.validate_base import Locate, nowhere
from modelswap.errors import ConfigProblem

ANCHOR_HOLDERS = frozenset({"defs"})
ANCHOR_HOLDER_PREFIX = "x-"


def unknown_key_warnings(tree: Any, locate: Locate = nowhere) -> list[ConfigProblem]:
    """One warning per unknown key in ``tree`` (the expanded document), in file order."""
    found: list[ConfigProblem] = []
    for visit in walk_keys(tree):
        if visit.known or (len(visit.path) == 1 and _is_anchor_holder(visit.key)):
            continue
        file, line = locate(visit.path)
        message = "unknown key"
        hint = closest_key(visit.key, sorted(known_keys(visit.section)))
        if hint is not None:
            message += f' (did you mean "{hint}"?)'
        found.append(ConfigProblem(message, file, line, format_path(visit.path)))
    found.sort(key=lambda p: (p.file or "", p.line if p.line is not None else 1 << 30))
    return found


@dataclass(frozen=True)
class KeyVisit:
    """One mapping key met while walking a config tree against the schema."""

    section: type[BaseModel]
    key: str
    path: KeyPath
    known: bool


def walk_keys(tree: Any) -> Iterator[KeyVisit]:
    """Every key of every schema section in ``tree``, known or not, depth first."""
    return _walk(ConfigDocument, tree, ())


def _is_anchor_holder(key: str) -> bool:
    return key in ANCHOR_HOLDERS or key.startswith(ANCHOR_HOLDER_PREFIX)


def closest_key(key: str, known: list[str]) -> str | None:
    """The known key a typo most likely meant, or None if nothing is close.

    Spelling variants (``health_check_timeout``, ``TTL``) match exactly first;
    otherwise difflib's similarity decides, ignoring case.
    """
    folded = {_fold(k): k for k in known}
    if _fold(key) in folded:
        return folded[_fold(key)]
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.55)
    return lowered[close[0]] if close else None


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def known_keys(model: type[BaseModel]) -> dict[str, Any]:
    """The YAML keys of a schema section → their field annotations."""
    return {field.alias or name: field.annotation for name, field in model.model_fields.items()}


def schema_keys(model: type[BaseModel] = ConfigDocument) -> set[tuple[str, str]]:
    """Every (section class name, YAML key) the schema knows, reachable from ``model``."""
    keys: set[tuple[str, str]] = set()
    pending, seen = [model], set()
    while pending:
        section = pending.pop()
        if section in seen:
            continue
        seen.add(section)
        for key, annotation in known_keys(section).items():
            keys.add((section.__name__, key))
            pending.extend(found for found, _, _ in _sections(annotation, {"*": {}}, ()))
    return keys


def _walk(model: type[BaseModel], data: Any, path: KeyPath) -> Iterator[KeyVisit]:
    if not isinstance(data, dict):
        return
    fields = known_keys(model)
    for key, value in data.items():
        key_path = (*path, key)
        yield KeyVisit(model, str(key), key_path, key in fields)
        if key in fields:
            for section, child, child_path in _sections(fields[key], value, key_path):
                yield from _walk(section, child, child_path)


def _sections(
    annotation: Any, value: Any, path: KeyPath
) -> Iterator[tuple[type[BaseModel], Any, KeyPath]]:
    """Schema sections found under a field: the value itself, or ID-map entries."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, value, path
        return
    if get_origin(annotation) is dict and isinstance(value, dict):
        item = _unwrap(get_args(annotation)[1])
        if isinstance(item, type) and issubclass(item, BaseModel):
            for key, child in value.items():
                yield item, child, (*path, key)


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` to reach the type that matters."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
