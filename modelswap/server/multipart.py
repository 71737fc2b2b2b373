"""Form bodies as bytes: media-type parsing, a multipart scan, and field replacement.

Why our own ~150 lines instead of aiohttp's ``MultipartReader`` or the stdlib
``email`` parser: we need the *byte offsets* of each part. Knowing where the
``model`` field's value sits lets a rewrite (``useModelName``, a profile pin,
a peer's model id) replace just those bytes and leave every other part —
uploaded files included — exactly as the client sent them: same boundary,
same field order, same part headers and content types. llama-swap rebuilds
the whole form instead (files first become ``application/octet-stream``, field
order is lost); keeping the client's bytes is strictly more faithful.

The body is already in memory (read once, under the size cap, by
:mod:`modelswap.server.extract`), so scanning it is a handful of ``find``
calls. Only CRLF line endings are recognised, as every real client sends.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


class FormError(ValueError):
    """A form body (or its Content-Type) cannot be parsed."""


def _token(text: str, start: int) -> int:
    """Index just past the HTTP token starting at ``start``."""
    end = start
    while end < len(text) and text[end] in _TOKEN_CHARS:
        end += 1
    return end


def _skip_spaces(text: str, start: int) -> int:
    while start < len(text) and text[start] in " \t":
        start += 1
    return start


def _quoted(text: str, start: int) -> tuple[str, int]:
    """A quoted-string starting at ``start`` (on the opening quote) → value, end."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise FormError("unterminated quoted string")


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/form-data; boundary=x'`` → ``('multipart/form-data', {'boundary': 'x'})``.

    Follows Go's ``mime.ParseMediaType`` closely enough for routing: the type
    is lower-cased, a bare ``type`` without ``/subtype`` is accepted, parameter
    names are lower-cased, a trailing ``;`` is tolerated, anything else that is
    not ``; name=token`` or ``; name="quoted"`` is an error.
    """
    base = value.partition(";")[0]
    media = base.strip().lower()
    end = _token(media, 0)
    if end == 0:
        raise FormError("no media type")
    if end != len(media):
        if media[end] != "/":
            raise FormError("expected slash after first token")
        sub_end = _token(media, end + 1)
        if sub_end == end + 1:
            raise FormError("expected token after slash")
        if sub_end != len(media):
            raise FormError("unexpected content after media subtype")
    params: dict[str, str] = {}
    text = value[len(base) :]  # "" or starts with ";"
    i = 0
    while True:
        i = _skip_spaces(text, i)
        if i >= len(text):
            break
        if text[i] != ";":
            raise FormError("invalid media parameter")
        i = _skip_spaces(text, i + 1)
        if i >= len(text):
            break  # trailing ";"
        key_end = _token(text, i)
        if key_end == i or key_end >= len(text) or text[key_end] != "=":
            raise FormError("invalid media parameter")
        key = text[i:key_end].lower()
        i = key_end + 1
        if i < len(text) and text[i] == '"':
            param, i = _quoted(text, i)
        else:
            value_end = _token(text, i)
            if value_end == i:
                raise FormError("invalid media parameter")
            param, i = text[i:value_end], value_end
        if key in params:
            raise FormError("duplicate parameter name")
        params[key] = param
    return media, params


@dataclass(frozen=True, slots=True)
class Part:
    """One multipart part: its form name, filename (None for a text field) and content span."""

    name: str
    filename: str | None
    start: int
    """Offset of the first content byte in the body."""
    end: int
    """Offset just past the last content byte (before ``CRLF--boundary``)."""


def _disposition(header_block: bytes) -> tuple[str, str | None]:
    for raw_line in header_block.split(b"\r\n"):
        name, sep, value = raw_line.decode("utf-8", "replace").partition(":")
        if sep and name.strip().lower() == "content-disposition":
            try:
                _, params = parse_media_type(value.strip())
            except FormError:
                return "", None
            return params.get("name", ""), params.get("filename")
    return "", None


def iter_parts(body: bytes, boundary: str) -> Iterator[Part]:
    """Every part of a ``multipart/form-data`` body, in order; FormError if malformed."""
    if not boundary:
        raise FormError("no multipart boundary")
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    pos = body.find(delimiter)
    if pos < 0 or (pos > 0 and body[pos - 2 : pos] != b"\r\n"):
        raise FormError("multipart: no opening boundary")
    while True:
        after = pos + len(delimiter)
        if body.startswith(b"--", after):
            return  # closing delimiter
        line_end = body.find(b"\r\n", after)
        if line_end < 0 or body[after:line_end].strip(b" \t"):
            raise FormError("multipart: malformed boundary line")
        headers_start = line_end + 2
        if body.startswith(b"\r\n", headers_start):
            header_block, content_start = b"", headers_start + 2
        else:
            headers_end = body.find(b"\r\n\r\n", headers_start)
            if headers_end < 0:
                raise FormError("multipart: unterminated part headers")
            header_block, content_start = body[headers_start:headers_end], headers_end + 4
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter < 0:
            raise FormError("multipart: missing closing boundary")
        name, filename = _disposition(header_block)
        yield Part(name, filename, content_start, next_delimiter)
        pos = next_delimiter + 2


def text_fields(body: bytes, boundary: str) -> list[tuple[str, str]]:
    """``(name, value)`` of every non-file part, in order (values decoded as UTF-8)."""
    return [
        (part.name, body[part.start : part.end].decode("utf-8", "replace"))
        for part in iter_parts(body, boundary)
        if part.filename is None and part.name
    ]


def replace_field(body: bytes, boundary: str, name: str, value: str) -> bytes:
    """The body with every text field ``name`` set to ``value``; appended if absent.

    All other bytes (files, other fields, part headers, the boundary) are kept.
    """
    encoded = value.encode("utf-8")
    spans = [
        (part.start, part.end)
        for part in iter_parts(body, boundary)
        if part.name == name and part.filename is None
    ]
    if not spans:
        closing = body.rfind(b"\r\n--" + boundary.encode("utf-8", "surrogateescape") + b"--")
        if closing < 0:
            raise FormError("multipart: missing closing boundary")
        quoted_name = name.replace("\\", "\\\\").replace('"', '\\"')
        new_part = (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{quoted_name}"\r\n\r\n'
        ).encode("utf-8", "surrogateescape") + encoded
        return body[:closing] + new_part + body[closing:]
    pieces: list[bytes | memoryview] = []
    view = memoryview(body)
    cursor = 0
    for start, end in spans:
        pieces += [view[cursor:start], encoded]
        cursor = end
    pieces.append(view[cursor:])
    return b"".join(pieces)
