"""Scalar field types that decode YAML values the way llama-swap's decoder does.

llama-swap decodes its config with a YAML 1.2-style decoder into typed Go
fields, and users' configs depend on the exact leniency of that decode
(config spec §2.1):

* boolean fields take ``true``/``false`` and, for YAML 1.1 compatibility, the
  words ``y yes on`` / ``n no off`` (in the listed capitalisations), quoted or
  not — but never any other string, not even a quoted ``"true"``;
* integer fields reject strings (``startPort: "5800"`` fails) and booleans;
* string fields accept any scalar and keep its text (``name: 7`` is ``"7"``);
* durations are Go duration strings (``5s``, ``1m30s``); a bare number is not
  a duration.

Pydantic's lax mode is more forgiving than that (it turns ``"5800"`` into an
int), and its strict mode is stricter (no ``yes``), so each type here is a
plain ``Annotated`` core type plus one ``BeforeValidator`` that enforces the
llama-swap rule and words its error for a human. Each also carries a JSON
Schema that lets editors accept a whole-value macro (``ttl: "${TTL}"``), which
the macro phase turns into a typed value before decoding.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from modelswap.config.macros import format_go_value

TRUE_WORDS = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
FALSE_WORDS = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})

# A whole-value macro (``${NAME}`` or ``${env.NAME}``) written where a typed
# value belongs; only used to make the editor schema accept it.
_MACRO_REF: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\$\{(env\.)?[A-Za-z0-9_-]+\}$",
}


def describe_value(value: Any) -> str:
    """Name a YAML value for an error message: ``string "abcd"``, ``list``…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {format_go_value(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'string "{shown}"'
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in TRUE_WORDS:
            return True
        if value in FALSE_WORDS:
            return False
    raise PydanticCustomError(
        "yaml_bool",
        "must be a boolean (true/false), got {got}",
        {"got": describe_value(value)},
    )


def _to_int(value: Any) -> Any:
    # A fractional float is rejected rather than truncated: ``ttl: 0.5`` turning
    # into 0 ("never unload") would silently invert what the user meant.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise PydanticCustomError(
        "yaml_int", "must be an integer, got {got}", {"got": describe_value(value)}
    )


def _to_float(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise PydanticCustomError(
        "yaml_float", "must be a number, got {got}", {"got": describe_value(value)}
    )


def scalar_text(value: Any) -> Any:
    """The text a string field receives from a YAML scalar (null → empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_go_value(value)
    raise PydanticCustomError(
        "yaml_str", "must be a string, got {got}", {"got": describe_value(value)}
    )


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_PATTERN = r"^[-+]?(0|((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)$"


def parse_duration(text: str) -> float | None:
    """Parse a Go duration string (``1m30s``, ``90m``, ``0``) into seconds."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        return None
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def go_duration_text(seconds: float) -> str:
    """Format seconds like Go's ``time.Duration.String`` (``4s``, ``1m30s``, ``500ms``)."""
    nanos = round(seconds * 1e9)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_fraction(nanos, 1_000)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{_fraction(nanos, 1_000_000)}ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{hours}h" if hours else ""
    if hours or minutes:
        text += f"{minutes}m"
    return f"{sign}{text}{_fraction(rest, 1_000_000_000)}s"


def _fraction(amount: int, unit: int) -> str:
    whole, part = divmod(amount, unit)
    if not part:
        return str(whole)
    digits = str(part).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def _to_duration(value: Any) -> Any:
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds is not None:
            return seconds
        raise PydanticCustomError(
            "yaml_duration",
            'invalid duration "{text}" (use a duration such as "5s", "1m30s" or "90m")',
            {"text": value},
        )
    raise PydanticCustomError(
        "yaml_duration",
        'must be a duration string such as "5s" or "1m30s", got {got}',
        {"got": describe_value(value)},
    )


def _typed_or_macro(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [schema, _MACRO_REF]})


YamlBool = Annotated[
    bool,
    BeforeValidator(_to_bool),
    _typed_or_macro({"anyOf": [{"type": "boolean"}, {"enum": sorted(TRUE_WORDS | FALSE_WORDS)}]}),
]
"""A boolean field: ``true``/``false`` plus the YAML 1.1 yes/no/on/off words."""

YamlInt = Annotated[int, BeforeValidator(_to_int), _typed_or_macro({"type": "integer"})]
"""An integer field: ints (and integral floats); never strings or booleans."""

YamlFloat = Annotated[float, BeforeValidator(_to_float), _typed_or_macro({"type": "number"})]
"""A number field: ints or floats; never strings or booleans."""

YamlStr = Annotated[str, BeforeValidator(scalar_text), WithJsonSchema({"type": "string"})]
"""A string field: any scalar, kept as its text; null is the empty string."""

Duration = Annotated[
    float,
    BeforeValidator(_to_duration),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A Go duration string (``5s``, ``1m30s``, ``90m``) decoded to seconds."""

_V = TypeVar("_V")


def _nulls_to_mappings(value: Any) -> Any:
    # ``models: {qwen: }`` declares a model with every default, as in llama-swap.
    if isinstance(value, dict):
        return {key: ({} if item is None else item) for key, item in value.items()}
    return value


IdMap = Annotated[dict[YamlStr, _V], BeforeValidator(_nulls_to_mappings)]
"""A user-keyed map of sections (models, peers, groups…); a null entry is ``{}``."""
