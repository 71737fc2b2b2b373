"""Config text → plain tree, with llama-swap's YAML dialect and line numbers kept.

llama-swap reads YAML with a YAML 1.2-style parser, while PyYAML defaults to
YAML 1.1 (``yes`` is a bool, ``2024-01-01`` a date, ``0777`` octal). A user's
file must mean the same thing here as there, so this module resolves plain
scalars itself (see ``YamlLoader``), builds the tree from PyYAML's node graph
(so every alias becomes an independent copy and every key keeps its line), and
rejects duplicate keys that PyYAML would silently collapse.

It also owns the two steps that happen before and around parsing: ``${env.X}``
substitution on the raw text (§7) and merging several source files (§17).
Nothing else in modelswap reads the environment for config purposes; the
environment is always passed in explicitly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modelswap.config.locations import KeyPath, Locations, format_path
from modelswap.errors import ConfigError, ConfigProblem

__all__ = [
    "KeyPath",
    "Locations",
    "YamlDocument",
    "YamlLoader",
    "format_path",
    "load_text",
    "parse_with_content",
    "parse_yaml",
    "substitute_env",
]


@dataclass(frozen=True)
class YamlDocument:
    """A parsed config document: plain data plus where each key came from."""

    data: Any
    locations: Locations


# --- the YAML 1.2-style dialect ---------------------------------------------------------

_BOOL_TRUE = ("true", "True", "TRUE")
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
# A plain scalar starting with a digit or sign is a number candidate; yaml.v3 then
# decides int / float / string exactly as ``_go_number`` does.
_INT_RE = re.compile(r"^[-+]?[0-9_][0-9a-zA-Z_.+-]*$")
_YAML_STYLE_FLOAT_RE = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_GO_PREFIXED_RE = re.compile(r"^0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+|[0-7]*)$")
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_DIGITS = list("0123456789")

_TAG = "tag:yaml.org,2002:"
TAG_NULL, TAG_BOOL, TAG_INT = _TAG + "null", _TAG + "bool", _TAG + "int"
TAG_FLOAT, TAG_STR, TAG_MERGE = _TAG + "float", _TAG + "str", _TAG + "merge"


class YamlLoader(yaml.SafeLoader):
    """SafeLoader whose plain-scalar typing follows YAML 1.2 core, like yaml.v3.

    Only true/false (three spellings each) are booleans, so ``yes``/``on``/``n``
    stay strings; no timestamps, no sexagesimal; ints follow Go's base-0 rules; no
    ``=`` value tag. ``yaml.load(text, Loader=YamlLoader)`` works for quick
    reads; the config pipeline uses ``parse_yaml`` for locations and checks.
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 - PyYAML's class-level table


YamlLoader.add_implicit_resolver(TAG_BOOL, _BOOL_RE, list("tTfF"))
YamlLoader.add_implicit_resolver(TAG_INT, _INT_RE, [*_DIGITS, "-", "+"])
YamlLoader.add_implicit_resolver(TAG_FLOAT, _FLOAT_RE, [*_DIGITS, "-", "+", "."])
YamlLoader.add_implicit_resolver(TAG_NULL, _NULL_RE, ["~", "n", "N", ""])
YamlLoader.add_implicit_resolver(TAG_MERGE, re.compile(r"^<<$"), ["<"])


def _go_int(plain: str) -> int | None:
    """Go's ``strconv.ParseInt(s, 0, 64)`` then ``ParseUint``: 0x/0o/0b, and leading-0 octal."""
    sign, body = (plain[0], plain[1:]) if plain[:1] in ("+", "-") else ("", plain)
    if not body:
        return None
    if body.isdigit() and body[0] != "0":
        value = int(body, 10)
    else:
        match = _GO_PREFIXED_RE.match(body)
        if match is None:
            return None
        digits = match.group(1)
        if not digits:
            value = 0
        elif digits[0] in "xX":
            value = int(digits[1:], 16)
        elif digits[0] in "oO":
            value = int(digits[1:], 8)
        elif digits[0] in "bB":
            value = int(digits[1:], 2)
        else:
            value = int(digits, 8)
    if sign == "-":
        value = -value
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    if sign == "" and value <= _UINT64_MAX:
        return value
    return None


def _go_number(text: str) -> int | float | str:
    """How yaml.v3 types a plain scalar that starts with a digit or sign.

    Underscores are removed first (``1_000`` → 1000); then Go's base-0 integer
    rules apply (``0x1f``, ``0o17``, ``0b101``, and ``0777`` is octal 511); then
    a YAML-style float (``089`` → 89.0); anything else stays a string
    (``1.2.3``, ``2024-01-01``).
    """
    plain = text.replace("_", "")
    as_int = _go_int(plain)
    if as_int is not None:
        return as_int
    if _YAML_STYLE_FLOAT_RE.match(plain):
        return float(plain)
    return text


def _to_int(text: str) -> int:
    """An integer as yaml.v3 reads it; anything else is a decode error."""
    value = _go_number(text)
    if not isinstance(value, int):
        raise ValueError(f"cannot decode {text!r} as an integer")
    return value


def _to_float(text: str) -> float:
    """YAML 1.2 core float, including ``.inf`` / ``.nan`` spellings."""
    if not _FLOAT_RE.match(text) and not _INT_RE.match(text):
        raise ValueError(f"cannot decode {text!r} as a float")
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    number = _go_number(text) if _INT_RE.match(text) else float(text)
    if isinstance(number, str):
        raise ValueError(f"cannot decode {text!r} as a float")
    return float(number)


def _to_bool(text: str) -> bool:
    if not _BOOL_RE.match(text):
        raise ValueError(f"cannot decode {text!r} as a bool")
    return text in _BOOL_TRUE


def scalar_value(node: ScalarNode) -> Any:
    """Typed value of one scalar node; unknown/explicit exotic tags stay text."""
    if node.tag == TAG_NULL:
        return None
    if node.tag == TAG_BOOL:
        return _to_bool(node.value)
    if node.tag == TAG_INT:
        return _go_number(node.value)
    if node.tag == TAG_FLOAT:
        return _to_float(node.value)
    return str(node.value)


def _construct_scalar(loader: yaml.SafeLoader, node: ScalarNode) -> Any:
    return scalar_value(node)


for _tag in (TAG_NULL, TAG_BOOL, TAG_INT, TAG_FLOAT):
    YamlLoader.add_constructor(_tag, _construct_scalar)


# --- node graph → plain tree ------------------------------------------------------------

_MAX_NODES = 2_000_000
"""Cap on constructed values, so alias bombs ("billion laughs") fail fast."""


class _ParseFailure(Exception):
    """A construction problem at a line; turned into ConfigError by the caller."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _TreeBuilder:
    """Builds plain data from a node graph, recording a Locations entry per key/item.

    Building straight from nodes (instead of PyYAML's constructor) is what
    makes each alias use a fresh deep copy with its own paths, and lets the
    duplicate-key check know which keys came from ``<<`` merges.
    """

    def __init__(self, filename: str, locations: Locations, restore: dict[int, int]) -> None:
        self.filename = filename
        self.locations = locations
        self.restore = restore
        self._active: set[int] = set()
        self._count = 0

    def text(self, value: str) -> str:
        """Undo ``_hide_yaml11_breaks`` in one scalar text."""
        return value.translate(self.restore) if self.restore else value

    def build(self, node: Node, path: KeyPath) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise _ParseFailure(_line(node), "document expands to too many values (alias bomb?)")
        if isinstance(node, ScalarNode):
            try:
                value = scalar_value(node)
                return self.text(value) if isinstance(value, str) else value
            except ValueError as exc:
                raise _ParseFailure(_line(node), str(exc)) from None
        if id(node) in self._active:
            raise _ParseFailure(_line(node), "anchor is used recursively inside itself")
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            raise _ParseFailure(_line(node), f"unsupported node {type(node).__name__}")
        finally:
            self._active.discard(id(node))

    def _sequence(self, node: SequenceNode, path: KeyPath) -> list[Any]:
        items: list[Any] = []
        for index, item in enumerate(node.value):
            self.locations.add((*path, index), self.filename, _line(item))
            items.append(self.build(item, (*path, index)))
        return items

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        explicit = self._explicit_keys(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == TAG_MERGE:
                self._merge_into(result, explicit, value_node, path)
                continue
            key = self.text(str(key_node.value))
            self.locations.add((*path, key), self.filename, _line(key_node))
            result[key] = self.build(value_node, (*path, key))
        return result

    def _build_into(self, node: Node, path: KeyPath, locs: Locations) -> Any:
        """Build ``node`` recording its locations in ``locs`` instead."""
        saved, self.locations = self.locations, locs
        try:
            return self.build(node, path)
        finally:
            self.locations = saved

    def _explicit_keys(self, node: MappingNode) -> set[str]:
        """Keys written in this mapping; a key written twice is an error."""
        seen: dict[str, int] = {}
        merge_line: int | None = None
        for key_node, _ in node.value:
            if key_node.tag == TAG_MERGE:
                if merge_line is not None:
                    raise _duplicate(key_node, "<<", merge_line)
                merge_line = _line(key_node)
                continue
            if not isinstance(key_node, ScalarNode):
                raise _ParseFailure(_line(key_node), "mapping keys must be scalars")
            key = self.text(str(key_node.value))
            if key in seen:
                raise _duplicate(key_node, key, seen[key])
            seen[key] = _line(key_node)
        return set(seen)

    def _merge_into(
        self,
        result: dict[str, Any],
        explicit: set[str],
        value: Node,
        path: KeyPath,
    ) -> None:
        """Apply ``<<``: earlier sources win over later ones, explicit keys over all."""
        for source in _merge_sources(value):
            scratch = Locations(self.filename)
            built = self._build_into(source, path, scratch)
            adopted = {k for k in built if k not in explicit and k not in result}
            for key in built:
                if key in adopted:
                    result[key] = built[key]
            depth = len(path)
            for entry_path, (file, line) in scratch.items():
                if len(entry_path) > depth and entry_path[depth] in adopted:
                    self.locations.add(entry_path, file, line)


def _merge_sources(value: Node) -> list[MappingNode]:
    if isinstance(value, MappingNode):
        return [value]
    if isinstance(value, SequenceNode) and all(isinstance(v, MappingNode) for v in value.value):
        return list(value.value)
    raise _ParseFailure(_line(value), "map merge requires map or sequence of maps as the value")


def _duplicate(key_node: Node, key: str, first_line: int) -> _ParseFailure:
    return _ParseFailure(
        _line(key_node), f'mapping key "{key}" already defined at line {first_line}'
    )


def _compose_first(text: str) -> Node | None:
    """The node graph of the first document (like yaml.v3 Unmarshal), or None."""
    loader = YamlLoader(text)
    try:
        return loader.get_node() if loader.check_node() else None
    finally:
        loader.dispose()


def _parse_failure(filename: str, line: int | None, detail: str) -> ConfigError:
    where = f"line {line}: " if line is not None else ""
    message = f"failed to parse config {filename}: yaml: {where}{detail}"
    return ConfigError([ConfigProblem(message, filename, line)])


_YAML11_BREAKS = "\x85\u2028\u2029"


def _hide_yaml11_breaks(text: str) -> tuple[str, dict[int, int]]:
    """Swap NEL/LS/PS for unused private-use characters before scanning.

    PyYAML treats them as line breaks (YAML 1.1); yaml.v3 treats them as
    ordinary characters, e.g. inside an inserted env value. Returns the text
    and the translation table that restores them in scalars.
    """
    if not any(c in text for c in _YAML11_BREAKS):
        return text, {}
    spare = (chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
    hide = {ord(c): ord(next(spare)) for c in _YAML11_BREAKS}
    return text.translate(hide), {v: k for k, v in hide.items()}


def parse_with_content(text: str, filename: str) -> tuple[YamlDocument, bool]:
    """Parse one document; the flag says whether it had any content at all."""
    text, restore = _hide_yaml11_breaks(text)
    try:
        root = _compose_first(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = exc.problem or exc.context or str(exc)
        raise _parse_failure(filename, line, detail) from None
    except yaml.YAMLError as exc:
        raise _parse_failure(filename, None, str(exc)) from None
    except RecursionError:
        raise _parse_failure(filename, None, "document is nested too deeply") from None
    locations = Locations(filename)
    if root is None or (isinstance(root, ScalarNode) and root.tag == TAG_NULL):
        return YamlDocument({}, locations), False
    if not isinstance(root, MappingNode):
        problem = ConfigProblem(
            f"config {filename}: top-level YAML must be a mapping", filename, _line(root)
        )
        raise ConfigError([problem])
    try:
        data = _TreeBuilder(filename, locations, restore).build(root, ())
    except _ParseFailure as exc:
        raise _parse_failure(filename, exc.line, exc.message) from None
    except RecursionError:
        raise _parse_failure(filename, None, "document is nested too deeply") from None
    return YamlDocument(data, locations), True


def parse_yaml(text: str, filename: str) -> YamlDocument:
    """Parse config text (already env-substituted) into a plain tree with locations.

    Raises ConfigError for syntax errors, duplicate keys and a non-mapping top
    level. An empty or comment-only text is an empty mapping.
    """
    return parse_with_content(text, filename)[0]


# --- ${env.NAME} substitution (§7) ------------------------------------------------------

ENV_REF = re.compile(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}")


def _scalar_texts(root: Node | None) -> Iterator[str]:
    """Every scalar's text in document order: the YAML minus its comments."""
    stack: list[Node] = [root] if root is not None else []
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if isinstance(node, ScalarNode):
            yield str(node.value)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, MappingNode):
            for key, value in reversed(node.value):
                stack.extend((value, key))


def _active_env_names(text: str) -> list[str]:
    """Env names referenced outside comments (the raw text if it does not parse)."""
    try:
        loader = YamlLoader(_hide_yaml11_breaks(text)[0])
        try:
            texts: list[str] = []
            while loader.check_node():
                texts.extend(_scalar_texts(loader.get_node()))
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError):
        texts = [text]
    names: list[str] = []
    for chunk in texts:
        for match in ENV_REF.finditer(chunk):
            if match.group(1) not in names:
                names.append(match.group(1))
    return names


def _env_line(text: str, name: str) -> int | None:
    index = text.find(f"${{env.{name}}}")
    return text.count("\n", 0, index) + 1 if index >= 0 else None


def env_value(name: str, environ: Mapping[str, str]) -> str:
    """The value to insert for ``${env.name}``, escaped for double-quoted YAML.

    Raises ValueError with the spec's message when unset or unsafe.
    """
    value = environ.get(name)
    if value is None:
        raise ValueError(f"environment variable '{name}' is not set")
    if any(c in value for c in "\n\r\0"):
        raise ValueError(
            f"environment variable '{name}' contains newlines or null bytes "
            "which are not allowed in YAML substitution"
        )
    return value.replace("\\", "\\\\").replace('"', '\\"')


def substitute_env(text: str, filename: str, environ: Mapping[str, str]) -> str:
    """Replace every active ``${env.NAME}`` in raw config text (§7).

    References that only occur in comments are neither looked up nor
    replaced. Values are inserted verbatim after escaping ``\\`` and ``"``.
    """
    values: dict[str, str] = {}
    for name in _active_env_names(text):
        try:
            values[name] = env_value(name, environ)
        except ValueError as exc:
            problem = ConfigProblem(str(exc), filename, _env_line(text, name))
            raise ConfigError([problem]) from None
    return ENV_REF.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def load_text(text: str, filename: str, environ: Mapping[str, str]) -> YamlDocument:
    """One config text → document: env substitution, then parse."""
    return parse_yaml(substitute_env(text, filename, environ), filename)
