"""Typed decode of the expanded tree, with errors a person can act on.

Pydantic reports every type error of one decode at once, which is better than
llama-swap's first-error-only decode, so all of them are kept. Each is turned
into a :class:`ConfigProblem` that names the file, the line and the key path in
the YAML spelling — ``config.yaml:4: startPort: must be an integer, got string
"abcd"`` — never a pydantic dump.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from modelswap.config.locations import KeyPath, format_path
from modelswap.config.schema import ConfigDocument
from modelswap.config.schema_types import describe_value
from modelswap.config.validate_base import Locate, nowhere
from modelswap.errors import ConfigError, ConfigProblem

_MAPPING_ERRORS = {"dict_type", "model_type", "model_attributes_type", "mapping_type"}
_LIST_ERRORS = {"list_type", "tuple_type", "sequence_type", "set_type", "iterable_type"}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def decode_document(data: Any, locate: Locate = nowhere) -> ConfigDocument:
    """Decode a plain (macro-expanded) tree; raise ConfigError with every type error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        file, line = locate(())
        raise ConfigError(
            [
                ConfigProblem(
                    f"top-level YAML must be a mapping, got {describe_value(data)}", file, line
                )
            ]
        )
    try:
        return ConfigDocument.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        problems = [_problem(error, data, locate) for error in exc.errors()]
    problems.sort(key=lambda p: (p.file or "", p.line if p.line is not None else 1 << 30))
    raise ConfigError(problems)


def _problem(error: ErrorDetails, data: Any, locate: Locate) -> ConfigProblem:
    path = tree_path(error["loc"], data)
    file, line = locate(path)
    return ConfigProblem(_message(error), file, line, format_path(path) or None)


def tree_path(loc: tuple[int | str, ...], data: Any) -> KeyPath:
    """The part of a pydantic error location that exists in the YAML tree.

    Pydantic inserts segments of its own (validator names, ``[key]`` markers);
    walking the tree alongside keeps exactly the keys and indices a user wrote.
    """
    path: list[str | int] = []
    node = data
    for part in loc:
        in_mapping = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_mapping or in_list:
            path.append(part)
            node = node[part]
    return tuple(path)


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    got = describe_value(error.get("input"))
    if kind.startswith("yaml_") or kind == "profile_legacy":
        return error["msg"]
    if kind in _MAPPING_ERRORS:
        return f"must be a mapping, got {got}"
    if kind in _LIST_ERRORS:
        return f"must be a list, got {got}"
    if kind == "string_type":
        return f"must be a string, got {got}"
    if kind == "missing":
        return "is required"
    if kind in _BOUNDS:
        symbol, name = _BOUNDS[kind]
        bound = (error.get("ctx") or {}).get(name)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {symbol} {bound}"
    message = error["msg"].removeprefix("Value error, ")
    return message[:1].lower() + message[1:]
