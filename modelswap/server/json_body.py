"""JSON request bodies: parsed at C speed, and never a 500 for what the parser cannot hold.

Python's ``json`` module parses in C but recursively: past about 1,000 levels
of nesting (less the stack already in use) it raises :class:`RecursionError`,
and it refuses integers over 4,300 digits (the int-string conversion limit).
llama-swap reads the model with gjson, which does not build the document:
black-boxed, it forwards ``{"model":"m1","x":[[[…100,000 levels…]]]}`` and
5,000-digit numbers untouched. So do we, without slowing normal bodies:

* :func:`parse_json_body` runs the one C parse. Only when that raises one of
  the two limits does it parse again member by member (:func:`_parse_members`):
  each top-level member the parser can hold is parsed as usual; one it cannot
  is kept as :class:`RawJSON`, its source text, found by :func:`_skip_container`
  (strings are matched whole, bracket runs counted — no recursion). A deep or
  huge value is therefore *forwarded as sent* and only checked for balanced
  brackets and terminated strings, not fully validated. That check stops after
  :data:`SCAN_TOKEN_LIMIT` tokens, so a body built to be slow to scan is a 404
  in bounded time.
* :func:`encode_json` serialises a (possibly rewritten) document: ``json.dumps``
  first, and an iterative encoder when a :class:`RawJSON` is inside or the
  document is nested deeper than ``json.dumps`` can recurse. A lone surrogate
  (the client sent ``"\\ud800"``) is written back escaped, never a
  ``UnicodeEncodeError``.
* Encodings: a UTF-8 BOM is accepted (as gjson, which skips it); UTF-16 and
  UTF-32 bodies are refused with the reason — RFC 8259 requires UTF-8 between
  systems, and llama-swap finds no model in them either.

Everything here is pure (no I/O, no clock) and tested table-driven.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SCAN_TOKEN_LIMIT = 250_000
"""Strings and bracket runs examined in values too deep to parse, per body (~0.15 s at most).

Enough for 100,000 levels of arrays (two runs) or of one-key objects (200,000 tokens).
"""

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_DECODER = json.JSONDecoder()
_UTF8 = frozenset({"utf-8", "utf-8-sig"})
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|(")|([\[{]+)|([\]}]+)', re.DOTALL)
"""A whole string, or (groups 1-3) a lone quote, a run of openers, a run of closers."""
_QUOTE, _OPENERS, _CLOSERS = 1, 2, 3
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class JSONBodyError(ValueError):
    """Why no document could be read; the text follows ``no model id could be identified: ``."""


@dataclass(frozen=True, slots=True)
class RawJSON:
    """A top-level member value kept as its source text (too deep, or a number too long)."""

    text: str

    @property
    def is_container(self) -> bool:
        return self.text[:1] in ("[", "{")

    @property
    def truthy(self) -> bool:
        """llama-swap's ``stream`` rule on a number: non-zero (containers are false)."""
        if self.is_container:
            return False
        mantissa = self.text.partition("e")[0].partition("E")[0]
        return any(digit in mantissa for digit in "123456789")


def _int_limit(error: ValueError) -> bool:
    """The int-string conversion limit (a plain ValueError, not a syntax error)."""
    return not isinstance(error, json.JSONDecodeError) and "integer string conversion" in str(error)


def parse_json_body(data: bytes) -> Any:
    """The parsed body; :class:`JSONBodyError` with the reason when it is not JSON.

    The common case is exactly one ``json.loads``; see the module docstring
    for what happens past the parser's limits.
    """
    encoding = json.detect_encoding(data)
    if encoding not in _UTF8:
        raise JSONBodyError(f"invalid JSON body: encoded as {encoding.upper()}, not UTF-8")
    try:
        text = data.decode(encoding, "surrogatepass")
        return json.loads(text)
    except RecursionError:
        pass
    except MemoryError:
        raise JSONBodyError("JSON body too large to parse (out of memory)") from None
    except ValueError as error:
        if not _int_limit(error):
            raise JSONBodyError(f"invalid JSON body: {error}") from None
    try:
        return _parse_members(text)
    except JSONBodyError:
        raise
    except ValueError as error:
        raise JSONBodyError(f"invalid JSON body: {error}") from None
    except MemoryError:
        raise JSONBodyError("JSON body too large to parse (out of memory)") from None


def _ws(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return index if match is None else match.end()


def _parse_members(text: str) -> dict[str, Any]:
    """The top-level object, one member at a time; what the parser cannot hold stays raw."""
    i = _ws(text, 0)
    if not text.startswith("{", i):
        raise JSONBodyError("JSON body is not an object")
    document: dict[str, Any] = {}
    i = _ws(text, i + 1)
    if text.startswith("}", i):
        i += 1
    else:
        budget = [SCAN_TOKEN_LIMIT]
        while True:
            if not text.startswith('"', i):
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, i
                )
            key, i = _DECODER.raw_decode(text, i)
            i = _ws(text, i)
            if not text.startswith(":", i):
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            i = _ws(text, i + 1)
            document[key], i = _member_value(text, i, budget)  # a repeated key: last wins
            i = _ws(text, i)
            if text.startswith(",", i):
                i = _ws(text, i + 1)
            elif text.startswith("}", i):
                i += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
    if _ws(text, i) != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return document


def _member_value(text: str, i: int, budget: list[int]) -> tuple[Any, int]:
    try:
        value, end = _DECODER.raw_decode(text, i)
        return value, end
    except RecursionError:
        pass
    except ValueError as error:
        if not _int_limit(error):
            raise
    if text.startswith(("[", "{"), i):
        end = _skip_container(text, i, budget)
    else:
        match = _NUMBER.match(text, i)
        if match is None:  # cannot happen: only numbers and containers hit the limits
            raise json.JSONDecodeError("Expecting value", text, i)
        end = match.end()
    return RawJSON(text[i:end]), end


def _skip_container(text: str, start: int, budget: list[int]) -> int:
    """The end of the array/object at ``start``, without recursion (module docstring)."""
    depth = 0
    for match in _TOKEN.finditer(text, start):
        budget[0] -= 1
        if budget[0] < 0:
            raise JSONBodyError(
                f"JSON body nested too deeply to check (over {SCAN_TOKEN_LIMIT} tokens "
                "in values past the parser's depth limit)"
            )
        kind = match.lastindex
        if kind == _CLOSERS:
            begin, end = match.span()
            if end - begin >= depth:
                return begin + depth
            depth -= end - begin
        elif kind == _OPENERS:
            depth += match.end() - match.start()
        elif kind == _QUOTE:
            raise json.JSONDecodeError("Unterminated string starting at", text, match.start())
    raise json.JSONDecodeError("Unterminated array or object starting at", text, start)


# --- encoding ------------------------------------------------------------------------


def compact_text(value: Any) -> str:
    """``value`` as compact JSON text (key order kept); a :class:`RawJSON` as its source."""
    if isinstance(value, RawJSON):
        return value.text
    try:
        text: str = _DUMPS(value)
    except (TypeError, RecursionError):  # a RawJSON inside, or deeper than dumps recurses
        text = _encode_iteratively(value)
    return text


def encode_json(document: Any) -> bytes:
    """A rewritten body: compact UTF-8 JSON; raw members verbatim, lone surrogates escaped."""
    text = compact_text(document)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # only a lone surrogate cannot be UTF-8: write it as \\uXXXX
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


_END: Any = object()


class _Frame:
    __slots__ = ("closer", "first", "items", "mapping")

    def __init__(self, items: Any, mapping: bool, closer: str) -> None:
        self.items = items
        self.mapping = mapping
        self.closer = closer
        self.first = True


def _encode_iteratively(root: Any) -> str:
    """The same text as ``json.dumps(root, separators=(",", ":"), ensure_ascii=False)``."""
    out: list[str] = []
    stack: list[_Frame] = []
    value = root
    while True:
        if isinstance(value, RawJSON):
            out.append(value.text)
        elif isinstance(value, dict):
            out.append("{")
            stack.append(_Frame(iter(value.items()), True, "}"))
        elif isinstance(value, list | tuple):
            out.append("[")
            stack.append(_Frame(iter(value), False, "]"))
        else:
            out.append(_DUMPS(value))
        while stack:
            frame = stack[-1]
            item = next(frame.items, _END)
            if item is _END:
                out.append(frame.closer)
                stack.pop()
                continue
            if not frame.first:
                out.append(",")
            frame.first = False
            if frame.mapping:
                key, value = item
                out.append(_DUMPS(key if isinstance(key, str) else str(key)) + ":")
            else:
                value = item
            break
        else:
            return "".join(out)
