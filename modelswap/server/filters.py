"""Request filters (server spec §9.2): useModelName, stripParams, setParams, setParamsByID.

Two layers, so the rules are tested without HTTP:

* :func:`filter_plan` decides *what* applies to a requested name (a local
  model's ``useModelName`` and filters; a peer's filters, never a
  ``useModelName``; nothing for unknown names);
* :func:`apply_json_filters` is a pure function on a parsed JSON object, and
  :func:`apply_filters` applies a plan to a :class:`ModelRequest` (JSON: all
  four steps; multipart: ``useModelName`` only; anything else: untouched).

Keys are gjson/sjson-style paths: ``a.b`` nests, ``\\.`` is a literal dot, a
numeric component indexes an existing array (``-1`` appends). Missing
intermediate objects are created; a scalar in the way is replaced by an
object. Edits copy only the containers on the edited path, so a large
``messages`` array is never copied. The body is re-serialised only when
something changed (compact JSON; the client's formatting is not kept). A path
into a member kept as raw text (nested past the JSON parser's depth limit, see
:mod:`modelswap.server.json_body`) cannot be edited: 400, never a silent skip.

Order (as llama-swap): useModelName → strip → setParams (sorted) →
setParamsByID[requested name] (sorted; overrides setParams).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from modelswap.config import Config
from modelswap.errors import ModelswapError
from modelswap.server.extract import BodyKind, ModelRequest
from modelswap.server.json_body import RawJSON, encode_json
from modelswap.server.multipart import FormError, replace_field

Params = tuple[tuple[str, Any], ...]


class FilterError(ModelswapError):
    """A filter could not be applied to the body (500, as llama-swap)."""

    status = 500


class RewriteError(ModelswapError):
    """A body that must be rewritten cannot be parsed (400)."""

    status = 400


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """What to do to one request's body; empty = forward it untouched."""

    use_model_name: str = ""
    strip: tuple[str, ...] = ()
    set_params: Params = ()
    set_params_by_id: Params = ()

    @property
    def is_empty(self) -> bool:
        return not (self.use_model_name or self.strip or self.set_params or self.set_params_by_id)


NO_FILTERS = FilterPlan()


def filter_plan(config: Config, requested: str) -> FilterPlan:
    """The filters for a requested name (after profile/selector rewriting).

    ``setParamsByID`` is looked up by the *requested* name (e.g. the alias
    ``variant``), not by the real model ID.
    """
    model_id = config.resolve_model_id(requested)
    if model_id is not None:
        model = config.models[model_id]
        return FilterPlan(
            model.use_model_name,
            model.filters.strip_params_list,
            model.filters.set_params_items,
            model.filters.set_params_for(requested),
        )
    resolved = config.resolve_base_model(requested)
    if resolved is not None and resolved.peer_id is not None:
        filters = config.peers[resolved.peer_id].filters
        return FilterPlan(
            "",
            filters.strip_params_list,
            filters.set_params_items,
            filters.set_params_for(requested),
        )
    return NO_FILTERS


# --- JSON paths -------------------------------------------------------------------


def split_path(path: str) -> list[str]:
    """``'a.b\\.c'`` → ``['a', 'b.c']``."""
    keys: list[str] = []
    current: list[str] = []
    escaped = False
    for char in path:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ".":
            keys.append("".join(current))
            current = []
        else:
            current.append(char)
    keys.append("".join(current))
    return keys


def _index(key: str, length: int) -> int | None:
    """An array index for ``key`` (``-1`` = append), or None when it is not one."""
    if key == "-1":
        return length
    return int(key) if key.isdigit() else None


def _raw_in_the_way(node: Any, path: str) -> None:
    if isinstance(node, RawJSON) and node.is_container:
        raise RewriteError(f"cannot edit {path} in the request: it is nested too deeply")


def _set(node: Any, keys: list[str], value: Any, path: str) -> Any:
    key, rest = keys[0], keys[1:]
    _raw_in_the_way(node, path)
    if isinstance(node, list):
        index = _index(key, len(node))
        if index is None:
            raise FilterError(f"error setting parameter {path} in request")
        copy = list(node)
        if index >= len(copy):
            copy.extend([None] * (index - len(copy) + 1))
        copy[index] = _set(copy[index], rest, value, path) if rest else value
        return copy
    copy_map = dict(node) if isinstance(node, dict) else {}
    copy_map[key] = _set(copy_map.get(key), rest, value, path) if rest else value
    return copy_map


def set_path(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``path`` set to ``value`` (see module docstring)."""
    result: dict[str, Any] = _set(document, split_path(path), value, path)
    return result


_MISSING = object()


def _delete(node: Any, keys: list[str], path: str) -> Any:
    """``node`` without the path, or ``_MISSING`` when there was nothing to delete."""
    key, rest = keys[0], keys[1:]
    _raw_in_the_way(node, path)
    if isinstance(node, dict):
        if key not in node:
            return _MISSING
        copy_map = dict(node)
        if not rest:
            del copy_map[key]
            return copy_map
        child = _delete(node[key], rest, path)
        if child is _MISSING:
            return _MISSING
        copy_map[key] = child
        return copy_map
    if isinstance(node, list):
        index = int(key) if key.isdigit() else None
        if index is None or index >= len(node):
            return _MISSING
        copy = list(node)
        if not rest:
            del copy[index]
            return copy
        child = _delete(node[index], rest, path)
        if child is _MISSING:
            return _MISSING
        copy[index] = child
        return copy
    return _MISSING


def delete_path(document: dict[str, Any], path: str) -> tuple[dict[str, Any], bool]:
    """``(copy without path, True)``, or ``(document, False)`` when the path is absent."""
    result = _delete(document, split_path(path), path)
    if result is _MISSING:
        return document, False
    assert isinstance(result, dict)
    return result, True


# --- applying a plan ----------------------------------------------------------------


def apply_json_filters(document: dict[str, Any], plan: FilterPlan) -> tuple[dict[str, Any], bool]:
    """``(filtered copy, changed)``; the input is never mutated."""
    changed = False
    if plan.use_model_name and document.get("model") != plan.use_model_name:
        document = {**document, "model": plan.use_model_name}
        changed = True
    for key in plan.strip:
        document, deleted = delete_path(document, key)
        changed = changed or deleted
    for key, value in (*plan.set_params, *plan.set_params_by_id):
        document = set_path(document, key, value)
        changed = True
    return document, changed


def apply_filters(request: ModelRequest, plan: FilterPlan) -> ModelRequest:
    """The request with its body filtered; its routing ``model`` is left unchanged."""
    if plan.is_empty:
        return request
    if request.kind is BodyKind.JSON and request.json is not None:
        document, changed = apply_json_filters(request.json, plan)
        if not changed:
            return request
        return dataclasses.replace(request, json=document, data=encode_json(document))
    if request.kind is BodyKind.MULTIPART and plan.use_model_name and request.data is not None:
        try:
            data = replace_field(request.data, request.boundary, "model", plan.use_model_name)
        except FormError as error:
            raise RewriteError(str(error)) from None
        return dataclasses.replace(request, data=data)
    return request
