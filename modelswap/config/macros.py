"""Macro expansion over the plain config tree (§2.2 phases 2–4, §6, §8.1).

The engine is pure: a parsed tree and its Locations go in, a new expanded tree
comes out, or a ConfigError naming the file and line. It knows nothing about
the typed schema; it only needs to know which keys hold macros, which hold
commands, and where models live.

Substitution follows llama-swap exactly because users depend on its quirks:
macros are applied one at a time from the last declared to the first, so a
macro may only reference macros declared before it, and a string that is
exactly ``${name}`` takes the macro's typed value instead of its text.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from modelswap.config.leftovers import check_leftovers, find_refs
from modelswap.config.locations import KeyPath, Locations

MacroList = list[tuple[str, Any]]
"""Ordered (name, value) pairs; order decides what may reference what."""

DEFAULT_START_PORT = 5800
DEFAULT_PROXY = "http://localhost:${PORT}"
RESERVED_NAMES = ("PID", "PORT", "MODEL_ID")
MAX_NAME_LENGTH = 63
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_COMMAND_KEYS = ("cmd", "cmdStop")


# --- text form of values ----------------------------------------------------------------


def format_go_value(value: Any) -> str:
    """Text of a macro value as Go's ``%v`` prints it (what llama-swap inserts).

    Differs from ``str()`` for bools (``true``) and floats (``16384``,
    ``1e+06``): users see these strings in commands, so they must match.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _format_go_float(value)
    return str(value)


def _format_go_float(value: float) -> str:
    """Go's ``%v`` for float64: shortest round-trip digits, ``%e`` form when the
    decimal exponent is below -4 or at least 6."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign_bit, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - finite values only here
        return repr(value)
    sign = "-" if sign_bit else ""
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) - 1 + exponent  # decimal exponent of the first digit
    if point < -4 or point >= 6:
        mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if point < 0 else '+'}{abs(point):02d}"
    if point < 0:
        return f"{sign}0.{'0' * (-point - 1)}{digits}"
    whole = digits[: point + 1].ljust(point + 1, "0")
    fraction = digits[point + 1 :]
    return f"{sign}{whole}.{fraction}" if fraction else f"{sign}{whole}"


# --- declarations (§6.1) ----------------------------------------------------------------


def _go_type_name(value: Any) -> str:
    """How Go's ``%T`` names a decoded YAML value, for the invalid-type message."""
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def declaration_problem(name: str, value: Any) -> str | None:
    """The first thing wrong with one macro entry (length, charset, type, reserved)."""
    if len(name.encode("utf-8")) > MAX_NAME_LENGTH:
        return f"macro name '{name}' exceeds maximum length of {MAX_NAME_LENGTH} characters"
    if not _NAME_RE.match(name):
        return (
            f"macro name '{name}' contains invalid characters, must match pattern ^[a-zA-Z0-9_-]+$"
        )
    if value is None or not isinstance(value, str | int | float | bool):
        return (
            f"macro '{name}' has invalid type {_go_type_name(value)}, "
            "must be a scalar type (string, int, float, or bool)"
        )
    if isinstance(value, str) and f"${{{name}}}" in value:
        return f"macro '{name}' contains self-reference"
    if name in RESERVED_NAMES:
        return f"macro name '{name}' is reserved"
    return None


def _declared(block: Any, path: KeyPath, prefix: str, locations: Locations) -> MacroList:
    """Validate one ``macros`` block and return it as an ordered list."""
    if block is None:
        return []
    if not isinstance(block, dict):
        raise locations.error(path, f"{prefix}macros must be a mapping")
    for name, value in block.items():
        problem = declaration_problem(name, value)
        if problem is not None:
            raise locations.error((*path, name), prefix + problem)
    return list(block.items())


def model_macro_list(model_id: str, global_macros: MacroList, own: MacroList) -> MacroList:
    """``[MODEL_ID] + globals``, then model macros replace in place or append."""
    merged: MacroList = [("MODEL_ID", model_id), *global_macros]
    position = {name: i for i, (name, _) in enumerate(merged)}
    for name, value in own:
        if name in position:
            merged[position[name]] = (name, value)
        else:
            position[name] = len(merged)
            merged.append((name, value))
    return merged


# --- substitution (§6.3, §6.4) ----------------------------------------------------------


def substitute(tree: Any, name: str, value: Any) -> Any:
    """Replace ``${name}`` in every string leaf of ``tree`` (never in mapping keys).

    A leaf that is exactly ``${name}`` becomes ``value`` itself (typed);
    otherwise occurrences are replaced by its Go text form.
    """
    token = f"${{{name}}}"
    text = format_go_value(value)

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node == token:
                return value
            return node.replace(token, text) if token in node else node
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(tree)


def substitute_all(tree: Any, macros: MacroList) -> Any:
    """Apply ``macros`` from last to first, each across the whole tree."""
    for name, value in reversed(macros):
        tree = substitute(tree, name, value)
    return tree


def substitute_text(text: str, macros: Iterable[tuple[str, Any]]) -> str:
    """Textual (never typed) substitution, last to first: for setParamsByID keys."""
    for name, value in reversed(list(macros)):
        text = text.replace(f"${{{name}}}", format_go_value(value))
    return text


def strip_comment_lines(command: str) -> str:
    """Drop lines whose trimmed text starts with ``#`` (§8.1); keep empty lines."""
    return "\n".join(line for line in command.split("\n") if not line.strip().startswith("#"))


# --- the document -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortAssignment:
    """The ``${PORT}`` each model got, and the ``startPort`` counted from.

    A reload passes the running config's assignment back in, so a model that
    is still there keeps its port and only new models take new ones: adding a
    model that sorts first would otherwise shift every later model's port,
    change their ``cmd`` and restart them all (llama-swap allocates in sorted
    order at every load; a fresh start here still does). A changed
    ``startPort`` is an explicit move: then everything is allocated afresh.
    """

    start_port: int = DEFAULT_START_PORT
    ports: Mapping[str, int] = field(default_factory=dict)


class _Expander:
    """One expansion run: holds the global macros, port counter and locations."""

    def __init__(
        self, data: dict[str, Any], locations: Locations, keep: PortAssignment | None = None
    ) -> None:
        self.data = data
        self.locations = locations
        self.global_macros: MacroList = []
        self.next_port = DEFAULT_START_PORT
        self.start_port = DEFAULT_START_PORT
        self.keep = keep
        self.kept: dict[str, int] = {}  # model -> its port from ``keep`` (same startPort)
        self.taken: set[int] = set()  # every port of ``keep``: a removed model may still drain
        self.ports: dict[str, int] = {}

    def run(self) -> dict[str, Any]:
        self.global_macros = _declared(self.data.get("macros"), ("macros",), "", self.locations)
        models = self.data.get("models")
        model_macros = self._validate_model_macros(models)
        out: dict[str, Any] = {}
        for key, value in self.data.items():
            if key == "macros":
                out[key] = copy.deepcopy(value)
            elif key != "models":
                out[key] = substitute_all(copy.deepcopy(value), self.global_macros)
        self.next_port = self.start_port = self._start_port(out)
        if self.keep is not None and self.keep.start_port == self.start_port:
            known = models if isinstance(models, dict) else {}
            self.kept = {m: port for m, port in self.keep.ports.items() if m in known}
            self.taken = set(self.keep.ports.values())
        if isinstance(models, dict):
            out["models"] = self._expand_models(models, model_macros)
        elif "models" in self.data:
            out["models"] = copy.deepcopy(models)
        check_leftovers(out, self.locations)
        return {key: out[key] for key in self.data}

    def _validate_model_macros(self, models: Any) -> dict[str, MacroList]:
        result: dict[str, MacroList] = {}
        if not isinstance(models, dict):
            return result
        for model_id in sorted_ids(models):
            model = models[model_id]
            if isinstance(model, dict):
                path = ("models", model_id, "macros")
                prefix = f"model {model_id}: "
                result[model_id] = _declared(model.get("macros"), path, prefix, self.locations)
        return result

    def _start_port(self, expanded: dict[str, Any]) -> int:
        value = expanded.get("startPort")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is None or isinstance(value, bool) or not isinstance(value, int):
            return DEFAULT_START_PORT  # absent, or a wrong type the typed decode reports
        if value < 1:
            raise self.locations.error(("startPort",), "startPort must be greater than 1")
        return value

    def _expand_models(
        self, models: dict[str, Any], model_macros: dict[str, MacroList]
    ) -> dict[str, Any]:
        expanded: dict[str, Any] = {}
        for model_id in sorted_ids(models):
            model = models[model_id]
            if model is None:
                model = {}
            if not isinstance(model, dict):
                expanded[model_id] = copy.deepcopy(model)  # the typed decode reports it
                continue
            own = model_macros.get(model_id, [])
            macros = model_macro_list(model_id, self.global_macros, own)
            expanded[model_id] = self._expand_model(model_id, model, macros)
        return {model_id: expanded[model_id] for model_id in models}

    def _expand_model(self, model_id: str, model: dict[str, Any], macros: MacroList) -> Any:
        body = {k: copy.deepcopy(v) for k, v in model.items() if k != "macros"}
        for key in _COMMAND_KEYS:
            if isinstance(body.get(key), str):
                body[key] = strip_comment_lines(body[key])
        if body.get("proxy") is None:
            body["proxy"] = DEFAULT_PROXY
        body = substitute_all(body, macros)
        originals = self._expand_param_keys(model_id, body, macros, None)
        port = self._allocate_port(model_id, body)
        if port is not None:
            body = substitute(body, "PORT", port)
            macros = [*macros, ("PORT", port)]
        self._expand_param_keys(model_id, body, macros, originals)
        self._check_param_keys(model_id, body)
        if "macros" in model:
            body["macros"] = copy.deepcopy(model["macros"])
        return {key: body[key] for key in [*model, *body] if key in body}

    def _allocate_port(self, model_id: str, body: dict[str, Any]) -> int | None:
        """Next port iff the expanded cmd uses ``${PORT}`` (§6.7)."""
        cmd, proxy = body.get("cmd"), body.get("proxy")
        if isinstance(cmd, str) and "${PORT}" in cmd:
            port = self.kept.get(model_id)
            if port is None:
                while self.next_port in self.taken:
                    self.next_port += 1
                port = self.next_port
                self.next_port += 1
            self.ports[model_id] = port
            return port
        if isinstance(proxy, str) and "${PORT}" in proxy:
            raise self.locations.error(
                ("models", model_id, "proxy"),
                f"model {model_id}: proxy uses ${{PORT}} but cmd does not - "
                "${PORT} is only available when used in cmd",
            )
        return None

    def _expand_param_keys(
        self,
        model_id: str,
        body: dict[str, Any],
        macros: MacroList,
        originals: dict[str, str] | None,
    ) -> dict[str, str]:
        """Expand setParamsByID keys (§6.5); returns new key → key as written."""
        by_id = _params_by_id(body)
        if by_id is None:
            return {}
        path = ("models", model_id, "filters", "setParamsByID")
        renamed: dict[str, Any] = {}
        written: dict[str, str] = {}
        for key, value in by_id.items():
            source = originals.get(key, key) if originals else key
            new_key = substitute_text(key, macros)
            if new_key in renamed:
                raise self.locations.error(
                    path,
                    f'model {model_id} filters.setParamsByID: keys "{written[new_key]}" '
                    f'and "{source}" resolve to the same value',
                )
            renamed[new_key] = value
            written[new_key] = source
        body["filters"]["setParamsByID"] = renamed
        return written

    def _check_param_keys(self, model_id: str, body: dict[str, Any]) -> None:
        for key in _params_by_id(body) or {}:
            for ref in find_refs(key):
                raise self.locations.error(
                    ("models", model_id, "filters", "setParamsByID"),
                    f"unknown macro '${{{ref}}}' found in model {model_id} "
                    "filters.setParamsByID key",
                )


def _params_by_id(body: dict[str, Any]) -> dict[str, Any] | None:
    filters = body.get("filters")
    if not isinstance(filters, dict):
        return None
    by_id = filters.get("setParamsByID")
    return by_id if isinstance(by_id, dict) else None


def sorted_ids(models: dict[str, Any]) -> list[str]:
    """Model IDs in byte-wise order, the order that decides port numbers."""
    return sorted(models, key=lambda model_id: model_id.encode("utf-8"))


def expand_document(data: dict[str, Any], locations: Locations) -> dict[str, Any]:
    """Validate macro declarations and expand every macro in a parsed config.

    Returns a new tree (the input is not modified) in which ``macros`` blocks
    keep their original values, every model has a ``proxy``, ``${PORT}`` is
    allocated and no unknown ``${name}`` is left in a known field.
    """
    return _Expander(data, locations).run()


def expand_with_ports(
    data: dict[str, Any], locations: Locations, keep: PortAssignment | None = None
) -> tuple[dict[str, Any], PortAssignment]:
    """:func:`expand_document`, keeping the ports of ``keep`` (a reload), and the ports given."""
    expander = _Expander(data, locations, keep)
    expanded = expander.run()
    return expanded, PortAssignment(expander.start_port, dict(expander.ports))
