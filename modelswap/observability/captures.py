"""Request/response captures (server spec §18): a bounded, compressed, in-memory ring.

The recorder stores one capture per activity row, in its background work,
after the row is written (with the in-memory store: when the row is made,
which happens when something reads — see :mod:`~modelswap.observability.row_backlog`;
lookups make pending rows first); ``GET /api/captures/<id>`` reads it back. The ring
holds at most ``max_bytes`` of *compressed* captures (``captureBuffer`` MiB;
≤ 0 disables captures) and forgets the oldest first; a capture larger than
the whole buffer is skipped. Everything is lost on reload, as in llama-swap.

What a capture keeps, and what it never keeps:

* the route's **mask** (:data:`ROUTE_MASKS`) decides which bodies are kept:
  audio and image payloads are not;
* a failed request (status ≠ 200) never keeps its response body;
* headers are redacted exactly as in-flight headers are (first value per
  name, ``Authorization``/``Proxy-Authorization``/``Cookie``/``Set-Cookie``/
  ``X-Api-Key`` shown as ``[REDACTED]``): **API keys are never captured**;
* a gzip/deflate response body is stored decompressed and its
  ``Content-Encoding`` header removed (an unknown encoding is stored as is,
  with its header, so the bytes stay interpretable); a body that fails to
  decompress means no capture at all (spec §16);
* **large base64 payloads in JSON are trimmed** (see :func:`trim_base64`):
  an image in a vision request would otherwise fill the ring with one capture.

Encoding: the path and the redacted headers stay Python objects; the two
bodies are one blob, compressed with zlib (level 1) when they hold at least
:data:`COMPRESS_MIN_BYTES` — a small chat request is kept as it is, because
zlib's setup alone costs more than everything else the capture does. Nothing
is base64-encoded until a capture is actually read. The buffer counts the
blob, the strings and a fixed overhead per capture. The ring is guarded by a
lock so the recorder may store from a worker thread while handlers read on
the loop.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from modelswap.observability.inflight import REDACTED, redact_headers
from modelswap.observability.records import RequestRecord

__all__ = [
    "CAPTURES",
    "TRIM_MIN_CHARS",
    "CaptureMask",
    "CaptureRing",
    "capture_mask",
    "trim_base64",
]


@dataclass(frozen=True, slots=True)
class CaptureMask:
    """Which parts of a request a capture keeps."""

    req_headers: bool = True
    req_body: bool = True
    resp_headers: bool = True
    resp_body: bool = True


_ALL = CaptureMask()
ROUTE_MASKS: Mapping[str, CaptureMask] = {
    "/v1/audio/speech": CaptureMask(resp_body=False),
    "/v1/audio/voices": CaptureMask(req_body=False),
    "/v1/audio/transcriptions": CaptureMask(req_body=False),
    "/v1/images/generations": CaptureMask(resp_body=False),
    "/v1/images/edits": CaptureMask(req_body=False, resp_body=False),
    "/sdapi/v1/txt2img": CaptureMask(resp_body=False),
    "/sdapi/v1/img2img": CaptureMask(req_body=False, resp_body=False),
}
"""Spec §18's table; every other route keeps everything."""


def capture_mask(req_path: str) -> CaptureMask:
    """The mask for a (prefix-stripped) request path; any query string is ignored."""
    return ROUTE_MASKS.get(req_path.partition("?")[0], _ALL)


# --- base64 trimming ----------------------------------------------------------------

TRIM_MIN_CHARS = 1024
"""JSON strings shorter than this are never trimmed."""
_DATA_URL = re.compile(
    r"data:([\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[^;,]*)*;base64,([A-Za-z0-9+/=\s]*)", re.A
)
_PLAIN_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.A)


def _trimmed(value: str) -> str | None:
    """The placeholder for a long base64 string, or None to keep ``value``."""
    if len(value) < TRIM_MIN_CHARS:
        return None
    data_url = _DATA_URL.fullmatch(value)
    if data_url is not None:
        return f"<base64 {data_url.group(1) or 'data'}, {len(value)} bytes trimmed>"
    if _PLAIN_BASE64.fullmatch(value):
        return f"<base64, {len(value)} bytes trimmed>"
    return None


def _walk(node: Any) -> tuple[Any, bool]:
    if isinstance(node, str):
        placeholder = _trimmed(node)
        return (node, False) if placeholder is None else (placeholder, True)
    if isinstance(node, dict):
        changed = False
        for key, value in node.items():
            new, hit = _walk(value)
            if hit:
                node[key], changed = new, True
        return node, changed
    if isinstance(node, list):
        changed = False
        for index, value in enumerate(node):
            new, hit = _walk(value)
            if hit:
                node[index], changed = new, True
        return node, changed
    return node, False


def _dump(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


_LONG_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{%d}" % (TRIM_MIN_CHARS - 128))
"""A trimmable string holds at least this run of base64 (a data URL's prefix aside)."""


def trim_base64(body: bytes) -> bytes:
    """``body`` with every long base64 JSON string replaced by a short placeholder.

    Applies to a JSON body and to each ``data:`` line of an SSE body. A string
    is trimmed when it is at least :data:`TRIM_MIN_CHARS` long and is either a
    base64 data URL (``data:image/png;base64,…``, any media type) or nothing
    but base64 (``[A-Za-z0-9+/]`` with ``=`` padding). It becomes
    ``"<base64 image/png, N bytes trimmed>"`` (or ``"<base64, N bytes trimmed>"``),
    N being the original string's length. A body with nothing to trim (or that
    is not JSON) is returned unchanged, byte for byte; a trimmed one is
    re-serialised compactly.
    """
    if len(body) < TRIM_MIN_CHARS or _LONG_BASE64_RUN.search(body) is None:
        return body  # nothing long enough to trim: skip parsing (the common case)
    try:
        stripped = body.lstrip()
        if stripped[:1] in (b"{", b"["):
            document, changed = _walk(json.loads(body))
            return _dump(document) if changed else body
        if b"data:" in body:
            return _trim_sse(body)
    except (ValueError, RecursionError, MemoryError):
        pass  # not JSON, or nested past what the parser (or the walk) can recurse: as sent
    return body


def _trim_sse(body: bytes) -> bytes:
    lines = body.split(b"\n")
    changed = False
    for index, line in enumerate(lines):
        if len(line) < TRIM_MIN_CHARS or not line.startswith(b"data:"):
            continue
        try:
            document, hit = _walk(json.loads(line[5:]))
        except (ValueError, RecursionError):
            continue
        if hit:
            lines[index] = b"data: " + _dump(document)
            changed = True
    return b"\n".join(lines) if changed else body


# --- response decoding ------------------------------------------------------------------


class _Undecodable(Exception):
    pass


def _decoded_response(
    headers: dict[str, str], body: bytes | None
) -> tuple[dict[str, str], bytes | None]:
    """Headers without ``Content-Encoding`` and the body decompressed (gzip/deflate)."""
    encoding_key = next((k for k in headers if k.lower() == "content-encoding"), None)
    if encoding_key is None:
        return headers, body
    encoding = headers[encoding_key].strip().lower()
    if encoding not in ("gzip", "deflate"):
        return headers, body  # unknown: stored as sent, header kept
    del headers[encoding_key]
    if body is None or not body:
        return headers, body
    try:
        if encoding == "gzip":
            return headers, zlib.decompress(body, wbits=47)  # gzip or zlib header
        try:
            return headers, zlib.decompress(body)  # zlib-wrapped, as HTTP "deflate" is
        except zlib.error:
            return headers, zlib.decompress(body, wbits=-15)  # raw deflate, as some send
    except zlib.error as error:
        raise _Undecodable(str(error)) from None


# --- the ring -------------------------------------------------------------------------


COMPRESS_MIN_BYTES = 4096
"""Bodies smaller than this (together) are kept as they are, uncompressed.

zlib's per-call setup (allocating and clearing its window) costs more than
a small chat request's whole bookkeeping and saves a few hundred bytes at
most; a large body is where compression pays, so only those are compressed.
"""
ENTRY_OVERHEAD_BYTES = 64
"""What one capture costs beyond its strings and bodies, counted against the buffer."""
GROWTH = 5
"""At most how much longer trimming can make a body: it removes a long base64 string
but re-serialises the JSON, where a number token can lengthen (``1e15`` is written
``1000000000000000.0``, 4.5 times as long); strings never grow."""


@dataclass(frozen=True, slots=True)
class _Capture:
    """One stored capture: headers already redacted; bodies as one blob, maybe compressed."""

    path: str
    req_headers: dict[str, str]
    resp_headers: dict[str, str] | None
    req_len: int
    """Request body length (-1: not kept)."""
    resp_len: int
    blob: bytes
    """Request body then response body, zlib-compressed when :attr:`compressed`."""
    compressed: bool
    size: int
    """Bytes counted against the buffer."""


def _header_bytes(headers: Mapping[str, str] | None) -> int:
    if not headers:
        return 0
    return sum(map(len, headers)) + sum(map(len, headers.values())) + 4 * len(headers)


def _encode(
    path: str,
    req_headers: dict[str, str],
    req_body: bytes | None,
    resp_headers: dict[str, str] | None,
    resp_body: bytes | None,
) -> _Capture:
    raw = (req_body or b"") + (resp_body or b"")
    compressed = len(raw) >= COMPRESS_MIN_BYTES
    blob = zlib.compress(raw, 1) if compressed else raw  # level 1: fast, most of the gain
    size = (
        len(blob)
        + len(path)
        + _header_bytes(req_headers)
        + _header_bytes(resp_headers)
        + ENTRY_OVERHEAD_BYTES
    )
    return _Capture(
        path,
        req_headers,
        resp_headers,
        -1 if req_body is None else len(req_body),
        -1 if resp_body is None else len(resp_body),
        blob,
        compressed,
        size,
    )


def _decode(row_id: int, capture: _Capture) -> dict[str, Any]:
    raw = zlib.decompress(capture.blob) if capture.compressed else capture.blob
    bodies: list[str | None] = []
    offset = 0
    for length in (capture.req_len, capture.resp_len):
        if length < 0:
            bodies.append(None)
        else:
            bodies.append(base64.b64encode(raw[offset : offset + length]).decode())
            offset += length
    return {
        "id": row_id,
        "req_path": capture.path,
        "req_headers": dict(capture.req_headers),
        "req_body": bodies[0],
        "resp_headers": None if capture.resp_headers is None else dict(capture.resp_headers),
        "resp_body": bodies[1],
    }


def _nothing_pending() -> None:
    return None


class CaptureRing:
    """Compressed captures by activity row id, oldest forgotten first (spec §18)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._blobs: OrderedDict[int, _Capture] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._before_read: Callable[[], None] = _nothing_pending
        self.evicted = 0
        self.skipped = 0
        """Captures not stored: larger than the buffer, or an undecodable response."""

    @classmethod
    def from_mib(cls, capture_buffer: int) -> CaptureRing:
        """The ring for config ``captureBuffer`` (MiB; ≤ 0 → disabled)."""
        return cls(max(0, capture_buffer) * 1024 * 1024)

    def __repr__(self) -> str:
        return (
            f"<CaptureRing captures={len(self._blobs)} size={self._size}/{self.max_bytes}B "
            f"evicted={self.evicted} skipped={self.skipped}>"
        )

    def __len__(self) -> int:
        return len(self._blobs)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def size(self) -> int:
        """Bytes currently counted against the buffer (compressed where compressed)."""
        return self._size

    def store(self, row_id: int, record: RequestRecord) -> bool:
        """Capture ``record`` under ``row_id``; False if disabled, too large or undecodable.

        CPU work (redaction, decompression, trimming, compression): call it
        from the recorder's background work, never on a request's path.
        """
        if not self.enabled:
            return False
        capture = self._capture_blob(record)
        if capture is None or capture.size > self.max_bytes:
            self.skipped += 1
            return False
        with self._lock:
            old = self._blobs.pop(row_id, None)
            if old is not None:
                self._size -= old.size
            self._blobs[row_id] = capture
            self._size += capture.size
            while self._size > self.max_bytes:
                _, evicted = self._blobs.popitem(last=False)
                self._size -= evicted.size
                self.evicted += 1
        return True

    def will_store(self, record: RequestRecord) -> bool | None:
        """Whether :meth:`store` of ``record`` would keep it — True, or None when unsure.

        Without making the capture: for an activity row shown live before its
        capture is made (the row backlog makes it later, with the row). Sure
        only when nothing can fail: no ``Content-Encoding`` to decode, and
        even :data:`GROWTH` times the bodies (trimming re-serialises JSON,
        which can lengthen a number token) plus the headers fits the buffer.
        """
        if not self.enabled:
            return False
        headers = record.resp_headers
        if headers and any(k.lower() == "content-encoding" for k in headers):
            return None
        bodies = len(record.req_body or b"") + len(record.resp_body or b"")
        worst = (
            GROWTH * bodies
            + len(record.req_path)
            + _header_bytes(record.req_headers)
            + _header_bytes(headers)
            + len(REDACTED) * (len(record.req_headers) + len(headers))
            + ENTRY_OVERHEAD_BYTES
        )
        return True if worst <= self.max_bytes else None

    def set_before_read(self, make_pending_rows: Callable[[], None]) -> None:
        """Called before every lookup: makes the captures still pending (the row backlog)."""
        self._before_read = make_pending_rows

    def get(self, row_id: int) -> dict[str, Any] | None:
        """The capture JSON (bodies base64), or None if absent, evicted or disabled."""
        self._before_read()
        with self._lock:
            capture = self._blobs.get(row_id)
        return None if capture is None else _decode(row_id, capture)

    def has(self, row_id: int) -> bool:
        self._before_read()
        return row_id in self._blobs

    def _capture_blob(self, record: RequestRecord) -> _Capture | None:
        mask = capture_mask(record.req_path)
        req_headers = redact_headers(record.req_headers) if mask.req_headers else {}
        req_body = None
        if mask.req_body and record.req_body is not None:
            req_body = trim_base64(record.req_body)
        resp_headers: dict[str, str] | None = None
        resp_body = None
        if mask.resp_headers and record.resp_headers:
            resp_headers = redact_headers(record.resp_headers)
        keep_body = mask.resp_body and record.status == 200 and record.resp_body is not None
        try:
            if resp_headers is not None:
                resp_headers, body = _decoded_response(
                    resp_headers, record.resp_body if keep_body else None
                )
                resp_body = body if keep_body else None
            elif keep_body:
                resp_body = record.resp_body
        except _Undecodable:
            return None
        if resp_body is not None:
            resp_body = trim_base64(resp_body)
        return _encode(record.req_path, req_headers, req_body, resp_headers, resp_body)


CAPTURES: web.AppKey[CaptureRing] = web.AppKey("captures", CaptureRing)
