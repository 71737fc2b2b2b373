"""Token and rate figures of one finished request (server spec §16), as pure functions.

:func:`parse_record` turns a :class:`~modelswap.observability.records.RequestRecord`
into a :class:`Usage`: the token counts, prompt/generation rates, duration and
error message of its activity row. No I/O, no clock, no logging: the recorder
runs it for every request, so it is written for speed —

* a body is decompressed only when ``Content-Encoding`` says gzip/deflate;
* an SSE body is never split into lines: the scanner looks for the few byte
  strings that can start a usage/timings/metrics key and parses only the
  ``data:`` lines that contain one (see :func:`_candidate_lines`), so a long
  stream of content deltas costs a handful of ``bytes.find`` calls.

Conventions (the spec's): negative values mean "unknown"; a record with
nothing to parse (status ≠ 200, empty body, invalid JSON, no usage found)
gets zeros everywhere and the wall-clock duration.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from modelswap.observability.records import RequestRecord

__all__ = [
    "DecompressError",
    "Usage",
    "decompress",
    "error_message",
    "extract_error_message",
    "parse_body",
    "parse_record",
    "status_text",
]

ERROR_MSG_LIMIT = 500

_USAGE_PATHS = (("usage",), ("response", "usage"), ("message", "usage"))

# A key named usage/timings/metrics appears in JSON text either literally or with
# at least one letter written as a \u escape; every letter of those keys is
# \u006x or \u007x. A line with none of these byte strings cannot carry a usage,
# timings or metrics object, so it is skipped without being parsed.
_NEEDLES = (b"usage", b"timings", b"metrics", b"\\u006", b"\\u007")


@dataclass(frozen=True, slots=True)
class Usage:
    """The parsed figures of one activity row (the spec's ``tokens`` plus duration/error)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = 0
    draft_tokens: int = 0
    draft_acc_tokens: int = 0
    prompt_per_second: float = 0.0
    tokens_per_second: float = 0.0
    duration_ms: int = 0
    error_msg: str = ""
    decompression_failed: bool = False
    """True when the body could not be decompressed (the spec's "no capture" case)."""


class DecompressError(ValueError):
    """A gzip/deflate body that does not decompress."""


# Go's net/http.StatusText, so error_msg reads exactly as llama-swap's does.
_STATUS_TEXT = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    304: "Not Modified", 305: "Use Proxy", 307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request URI Too Long",
    415: "Unsupported Media Type", 416: "Requested Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request",
    422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # fmt: skip


def status_text(status: int) -> str:
    """``"<code> <reason>"`` (``502 Bad Gateway``), or ``HTTP <code>`` for unknown codes."""
    reason = _STATUS_TEXT.get(status)
    return f"{status} {reason}" if reason else f"HTTP {status}"


# --- decoding --------------------------------------------------------------------


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate; any other encoding is returned as is.

    ``deflate`` accepts both the zlib-wrapped form (RFC 9110) and the raw DEFLATE
    stream Go's ``compress/flate`` (llama-swap) reads.
    """
    kind = encoding.strip().lower()
    try:
        if kind == "gzip":
            return gzip.decompress(body)
        if kind == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error) as error:
        raise DecompressError(str(error) or type(error).__name__) from error
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""One strict decoder for every body: ``json.loads`` with a keyword builds a new one per call."""


def _loads(data: bytes) -> Any:
    """Strict JSON (NaN/Infinity rejected, as Go's validator does); ValueError if invalid.

    Also ValueError for what the parser cannot hold (nesting past its recursion
    limit, no memory): an upstream's odd answer must never fail the recorder's
    batch — the row is stored without figures, as for any unreadable body.
    """
    try:
        # What json.loads does with bytes (BOM, UTF-16/32 detection), with one decoder.
        return _DECODER.decode(data.decode(json.detect_encoding(data), "surrogatepass"))
    except (RecursionError, MemoryError) as error:
        raise ValueError(f"unparsable JSON: {type(error).__name__}") from None


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is not None:
        return value
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        return ""
    lowered = name.lower()
    for key, found in headers.items():
        if key.lower() == lowered:
            return found
    return ""


# --- error messages --------------------------------------------------------------


def extract_error_message(body: bytes) -> str:
    """The first non-empty string at ``error.message``, ``error``, ``message``, ``detail``.

    "" when the body is not a JSON object or has none; longer than 500
    characters → the first 500 plus ``...``.
    """
    try:
        parsed = _loads(body)
    except ValueError:
        return ""
    if not isinstance(parsed, dict):
        return ""
    error = parsed.get("error")
    candidates = (
        error.get("message") if isinstance(error, dict) else None,
        error,
        parsed.get("message"),
        parsed.get("detail"),
    )
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            if len(candidate) > ERROR_MSG_LIMIT:
                return candidate[:ERROR_MSG_LIMIT] + "..."
            return candidate
    return ""


def error_message(status: int, body: bytes, encoding: str = "") -> str:
    """``error_msg`` of a non-200 response (spec §16)."""
    try:
        decoded = decompress(body, encoding) if encoding else body
    except DecompressError as error:
        return f"response decode failed: {error}"
    return extract_error_message(decoded) or status_text(status)


# --- number coercion (gjson's Int()/Float() on whatever the upstream sent) --------


_INT_LIMIT = 2**53
"""Counts are clamped to ±2**53 so a garbage number can never overflow a SQLite SUM."""


def _int(value: Any) -> int:
    if isinstance(value, bool | int):
        number = int(value)
    elif isinstance(value, float):
        number = int(value) if math.isfinite(value) else 0
    elif isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            number = int(_float(value))
    else:
        return 0
    return max(-_INT_LIMIT, min(_INT_LIMIT, number))


def _float(value: Any) -> float:
    """A finite float (JSON such as ``1e400`` parses to infinity, which JSON cannot carry)."""
    if isinstance(value, bool | int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return 0.0
    else:
        return 0.0
    return number if math.isfinite(number) else 0.0


# --- the accumulated figures ----------------------------------------------------


class _Acc:
    """What a body yields: usage tokens, the last timings and the last metrics."""

    __slots__ = ("cached", "found", "input", "metrics", "output", "timings")

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cached = -1
        self.found = False
        self.timings: dict[str, Any] | None = None
        self.metrics: dict[str, Any] | None = None

    def add_usage(self, usage: Any, *, replace_only_nonzero: bool) -> bool:
        """Merge one usage object; False if it carries none of the token fields."""
        if not isinstance(usage, dict):
            return False
        ok = False
        value: Any
        if "prompt_tokens" in usage or "input_tokens" in usage:
            value = usage["prompt_tokens"] if "prompt_tokens" in usage else usage["input_tokens"]
            ok = True
            count = _int(value)
            if count > 0 or not replace_only_nonzero:
                self.input = count
        if "completion_tokens" in usage or "output_tokens" in usage:
            key = "completion_tokens" if "completion_tokens" in usage else "output_tokens"
            ok = True
            count = _int(usage[key])
            if count > 0 or not replace_only_nonzero:
                self.output = count
        cached = _cached(usage)
        if cached is not None:
            ok = True
            if cached >= 0:
                self.cached = cached
        return ok


def _cached(usage: dict[str, Any]) -> int | None:
    if "cache_read_input_tokens" in usage:
        return _int(usage["cache_read_input_tokens"])
    for details_key in ("input_tokens_details", "prompt_tokens_details"):
        details = usage.get(details_key)
        if isinstance(details, dict) and "cached_tokens" in details:
            return _int(details["cached_tokens"])
    return None


def _path(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _rate(value: float) -> float:
    """A rate, or -1 (unknown) when a tiny divisor overflowed it to infinity."""
    return value if math.isfinite(value) else -1.0


def _build(acc: _Acc, wall_ms: int) -> Usage:
    """Token/rate computation once something was found (spec §16)."""
    input_tokens, output_tokens, cached = acc.input, acc.output, acc.cached
    draft, draft_acc = -1, -1
    prompt_rate, gen_rate = -1.0, -1.0
    duration = wall_ms
    timings = acc.timings
    if timings is not None:
        input_tokens = _int(timings.get("prompt_n"))
        output_tokens = _int(timings.get("predicted_n"))
        prompt_rate = _float(timings.get("prompt_per_second"))
        gen_rate = _float(timings.get("predicted_per_second"))
        if "cache_n" in timings:
            cached = _int(timings["cache_n"])
        if "draft_n" in timings and "draft_n_accepted" in timings:
            draft = _int(timings["draft_n"])
            draft_acc = _int(timings["draft_n_accepted"])
        timed = _float(timings.get("prompt_ms")) + _float(timings.get("predicted_ms"))
        duration = max(duration, _int(timed))
    metrics = acc.metrics
    if metrics is not None:
        spec = metrics.get("speculative_decoding")
        if (
            isinstance(spec, dict)
            and "num_draft_tokens" in spec
            and "num_accepted_draft_tokens" in spec
        ):
            draft = _int(spec["num_draft_tokens"])
            draft_acc = _int(spec["num_accepted_draft_tokens"])
        ttft = _float(metrics.get("time_to_first_token_ms"))
        if ttft > 0:
            prompt_rate = _rate((input_tokens - max(cached, 0)) * 1000.0 / ttft)
        itl = _float(metrics.get("mean_itl_ms"))
        if itl > 0:
            gen_rate = _rate(1000.0 / itl)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_tokens=cached,
        draft_tokens=draft,
        draft_acc_tokens=draft_acc,
        prompt_per_second=prompt_rate,
        tokens_per_second=gen_rate,
        duration_ms=duration,
    )


# --- SSE ---------------------------------------------------------------------------


def _candidate_lines(body: bytes) -> Iterator[bytes]:
    """Each line (in order, once) that contains one of :data:`_NEEDLES`."""
    starts: set[int] = set()
    for needle in _NEEDLES:
        at = body.find(needle)
        while at != -1:
            start = body.rfind(b"\n", 0, at) + 1
            starts.add(start)
            end = body.find(b"\n", at)
            if end == -1:
                break
            at = body.find(needle, end)
    for start in sorted(starts):
        end = body.find(b"\n", start)
        yield body[start:] if end == -1 else body[start:end]


def _scan_sse(body: bytes, acc: _Acc) -> None:
    for raw in _candidate_lines(body):
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            event = _loads(data)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        for path in _USAGE_PATHS:
            if acc.add_usage(_path(event, path), replace_only_nonzero=True):
                acc.found = True
        timings = event.get("timings")
        if isinstance(timings, dict):
            acc.timings = timings
            acc.found = True
        metrics = event.get("metrics")
        if isinstance(metrics, dict):
            acc.metrics = metrics
            acc.found = True


def _scan_json(body: bytes, req_path: str, acc: _Acc) -> None:
    try:
        parsed = _loads(body)
    except ValueError:
        return
    if isinstance(parsed, list):
        # /infill answers an array; llama-server puts the timings on its last element.
        last = parsed[-1] if parsed and req_path.startswith("/infill") else None
        timings = last.get("timings") if isinstance(last, dict) else None
        if isinstance(timings, dict):
            acc.timings = timings
            acc.found = True
        return
    if not isinstance(parsed, dict):
        return
    usage = parsed.get("usage")
    if isinstance(usage, dict):
        acc.add_usage(usage, replace_only_nonzero=False)
        acc.found = True
    timings = parsed.get("timings")
    if isinstance(timings, dict):
        acc.timings = timings
        acc.found = True
    metrics = parsed.get("metrics")
    if isinstance(metrics, dict):
        acc.metrics = metrics
        acc.found = True


# --- entry points --------------------------------------------------------------------


def parse_body(
    status: int,
    content_type: str,
    body: bytes,
    *,
    encoding: str = "",
    req_path: str = "",
    wall_ms: float = 0.0,
    partial: bool = False,
) -> Usage:
    """The figures of one response (spec §16).

    ``partial``: ``body`` is only the tail of a longer body (its first line
    may be cut, and a compressed tail cannot be decoded): SSE scanning starts
    at its first complete line, anything else yields a minimal record.
    """
    wall = int(wall_ms)
    if status != 200:
        if partial and encoding.strip().lower() in ("gzip", "deflate"):
            return Usage(duration_ms=wall, error_msg=status_text(status))
        return Usage(duration_ms=wall, error_msg=error_message(status, body, encoding))
    if not body:
        return Usage(duration_ms=wall)
    if encoding:
        if partial and encoding.strip().lower() in ("gzip", "deflate"):
            return Usage(duration_ms=wall)
        try:
            body = decompress(body, encoding)
        except DecompressError as error:
            return Usage(
                duration_ms=wall,
                error_msg=f"response decompression failed: {error}",
                decompression_failed=True,
            )
    acc = _Acc()
    if "text/event-stream" in content_type:
        if partial:
            cut = body.find(b"\n")
            body = b"" if cut == -1 else body[cut + 1 :]
        _scan_sse(body, acc)
    elif not partial:
        _scan_json(body, req_path, acc)
    if not acc.found:
        return Usage(duration_ms=wall)
    return _build(acc, wall)


def parse_record(record: RequestRecord) -> Usage:
    """The figures of a finished request; a body not kept whole is parsed from its tail."""
    partial = record.resp_body is None
    return parse_body(
        record.status,
        record.resp_content_type,
        record.resp_tail if record.resp_body is None else record.resp_body,
        encoding=_header(record.resp_headers, "Content-Encoding"),
        req_path=record.req_path,
        wall_ms=record.duration_ms,
        partial=partial,
    )
