"""CaptureRing: round trip, masks, FIFO eviction, redaction, decompression, trimming (§18; #71)."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

import pytest

from modelswap.observability.captures import (
    COMPRESS_MIN_BYTES,
    TRIM_MIN_CHARS,
    CaptureRing,
    capture_mask,
    trim_base64,
)
from modelswap.observability.inflight import REDACTED
from modelswap.observability.records import RequestRecord

CHAT_BODY = b'{"model":"m1","messages":[{"role":"user","content":"hi"}]}'
ANSWER = b'{"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":1}}'
SECRET = "sk-very-secret-key-123"


def record(**fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": 1,
        "model": "m1",
        "method": "POST",
        "req_path": "/v1/chat/completions",
        "started_wall": 1000.0,
        "ended_wall": 1001.0,
        "duration_ms": 1000.0,
        "status": 200,
        "resp_content_type": "application/json",
        "req_headers": {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
        "req_body": CHAT_BODY,
        "resp_headers": {"Content-Type": "application/json"},
        "resp_body": ANSWER,
    }
    values.update(fields)
    return RequestRecord(**values)


def body(capture: dict[str, Any], key: str) -> bytes | None:
    value = capture[key]
    return None if value is None else base64.b64decode(value)


def test_round_trip_returns_the_spec_json() -> None:
    ring = CaptureRing(1 << 20)
    assert ring.store(3, record())
    assert ring.has(3) and not ring.has(4)
    capture = ring.get(3)
    assert capture == {
        "id": 3,
        "req_path": "/v1/chat/completions",
        "req_headers": {"Content-Type": "application/json", "Authorization": REDACTED},
        "req_body": base64.b64encode(CHAT_BODY).decode(),
        "resp_headers": {"Content-Type": "application/json"},
        "resp_body": base64.b64encode(ANSWER).decode(),
    }
    assert list(capture) == [
        "id",
        "req_path",
        "req_headers",
        "req_body",
        "resp_headers",
        "resp_body",
    ]
    assert ring.get(4) is None


def stored_text(ring: CaptureRing, row_id: int) -> str:
    """Everything the ring holds for one capture, bodies decompressed, as text."""
    capture = ring._blobs[row_id]
    blob = zlib.decompress(capture.blob) if capture.compressed else capture.blob
    return f"{capture!r} {blob.decode('utf-8', 'replace')}"


def test_small_captures_are_kept_uncompressed_large_ones_compressed() -> None:
    ring = CaptureRing(1 << 20)
    ring.store(1, record())
    assert not ring._blobs[1].compressed  # zlib's setup would cost more than it saves
    assert body(ring.get(1) or {}, "req_body") == CHAT_BODY
    big = json.dumps({"messages": [{"content": "some words " * COMPRESS_MIN_BYTES}]}).encode()
    ring.store(2, record(req_body=big))
    assert ring._blobs[2].compressed
    assert body(ring.get(2) or {}, "req_body") == big


def test_stored_form_is_compressed() -> None:
    ring = CaptureRing(1 << 20)
    big = json.dumps({"messages": [{"content": "the same words " * 2000}]}).encode()
    ring.store(1, record(req_body=big))
    assert ring.size < len(big) // 10
    assert body(ring.get(1) or {}, "req_body") == big


def test_zero_or_negative_buffer_disables_captures() -> None:
    for ring in (CaptureRing(0), CaptureRing.from_mib(0), CaptureRing.from_mib(-1)):
        assert not ring.enabled
        assert ring.store(1, record()) is False
        assert ring.get(1) is None and not ring.has(1)
    assert CaptureRing.from_mib(5).max_bytes == 5 * 1024 * 1024


def test_api_keys_and_credentials_are_never_stored() -> None:
    ring = CaptureRing(1 << 20)
    ring.store(
        1,
        record(
            req_headers={
                "authorization": f"Bearer {SECRET}",
                "x-api-key": SECRET,
                "Proxy-Authorization": f"Basic {SECRET}",
                "Cookie": f"session={SECRET}",
                "User-Agent": "curl/8",
            },
            resp_headers={"Set-Cookie": f"s={SECRET}", "Content-Type": "application/json"},
        ),
    )
    capture = ring.get(1)
    assert capture is not None
    assert capture["req_headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "Proxy-Authorization": REDACTED,
        "Cookie": REDACTED,
        "User-Agent": "curl/8",
    }
    assert capture["resp_headers"]["Set-Cookie"] == REDACTED
    assert SECRET not in stored_text(ring, 1)  # not even in what the ring holds
    assert SECRET not in json.dumps(capture)


def test_default_mask_keeps_everything_and_speech_keeps_no_response_body() -> None:
    assert capture_mask("/v1/chat/completions") == capture_mask("/anything")
    ring = CaptureRing(1 << 20)
    ring.store(1, record(req_path="/v1/audio/speech", resp_body=b"RIFF....WAVE"))
    capture = ring.get(1)
    assert capture is not None
    assert body(capture, "req_body") == CHAT_BODY
    assert capture["resp_headers"] == {"Content-Type": "application/json"}
    assert capture["resp_body"] is None


@pytest.mark.parametrize(
    ("path", "req_body", "resp_body"),
    [
        ("/v1/audio/voices", False, True),
        ("/v1/audio/transcriptions", False, True),
        ("/v1/images/generations", True, False),
        ("/v1/images/edits", False, False),
        ("/sdapi/v1/txt2img", True, False),
        ("/sdapi/v1/img2img", False, False),
        ("/v1/embeddings", True, True),
    ],
)
def test_route_masks(path: str, req_body: bool, resp_body: bool) -> None:
    ring = CaptureRing(1 << 20)
    ring.store(1, record(req_path=path))
    capture = ring.get(1)
    assert capture is not None
    assert (capture["req_body"] is not None) is req_body
    assert (capture["resp_body"] is not None) is resp_body
    assert capture["req_headers"] and capture["resp_headers"]  # headers always kept


def test_failed_request_keeps_request_and_headers_but_never_the_response_body() -> None:
    ring = CaptureRing(1 << 20)
    error = b'{"error":{"message":"model unavailable"}}'
    for row_id, status in ((1, 502), (2, 201)):
        ring.store(row_id, record(status=status, resp_body=error))
        capture = ring.get(row_id)
        assert capture is not None
        assert body(capture, "req_body") == CHAT_BODY
        assert capture["resp_headers"] == {"Content-Type": "application/json"}
        assert capture["resp_body"] is None


def test_no_response_headers_is_null() -> None:
    ring = CaptureRing(1 << 20)
    ring.store(1, record(resp_headers={}, resp_body=None, status=499))
    capture = ring.get(1)
    assert capture is not None and capture["resp_headers"] is None and capture["resp_body"] is None


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate
    ],
)
def test_compressed_response_is_stored_decompressed_without_content_encoding(
    encoding: str, compress: Any
) -> None:
    ring = CaptureRing(1 << 20)
    headers = {"Content-Type": "application/json", "content-encoding": encoding}
    ring.store(1, record(resp_headers=headers, resp_body=compress(ANSWER)))
    capture = ring.get(1)
    assert capture is not None
    assert capture["resp_headers"] == {"Content-Type": "application/json"}
    assert body(capture, "resp_body") == ANSWER


def test_unknown_encoding_is_stored_as_sent_with_its_header() -> None:
    ring = CaptureRing(1 << 20)
    ring.store(1, record(resp_headers={"Content-Encoding": "br"}, resp_body=b"\x8b\x01raw"))
    capture = ring.get(1)
    assert capture is not None
    assert capture["resp_headers"] == {"Content-Encoding": "br"}
    assert body(capture, "resp_body") == b"\x8b\x01raw"


def test_undecodable_response_is_not_captured() -> None:
    ring = CaptureRing(1 << 20)
    bogus = record(resp_headers={"Content-Encoding": "gzip"}, resp_body=b"not gzip at all")
    assert ring.store(1, bogus) is False
    assert not ring.has(1) and ring.skipped == 1
    # a failed request keeps no body, so its bogus encoding does not matter
    assert ring.store(2, record(status=500, resp_headers={"Content-Encoding": "gzip"}))
    assert (ring.get(2) or {})["resp_headers"] == {}


def incompressible(size: int, seed: int) -> bytes:
    """Bytes zlib cannot shrink (so stored sizes are predictable)."""
    import random

    return random.Random(seed).randbytes(size)


def test_ring_drops_the_oldest_past_its_cap() -> None:
    sized = CaptureRing(1 << 20)._capture_blob(record(req_body=incompressible(1000, 0)))
    one = sized.size if sized is not None else 0
    ring = CaptureRing(one * 3 + one // 2)  # room for three
    for row_id in range(1, 6):
        assert ring.store(row_id, record(req_body=incompressible(1000, row_id)))
        assert ring.size <= ring.max_bytes
    assert [row_id for row_id in range(1, 6) if ring.has(row_id)] == [3, 4, 5]
    assert ring.evicted == 2 and len(ring) == 3
    assert body(ring.get(5) or {}, "req_body") == incompressible(1000, 5)


def test_capture_larger_than_the_whole_buffer_is_skipped() -> None:
    ring = CaptureRing(2000)
    assert ring.store(1, record())
    assert ring.store(2, record(req_body=incompressible(5000, 1))) is False
    assert ring.has(1) and not ring.has(2)  # nothing was evicted for it
    assert ring.skipped == 1 and ring.evicted == 0


def test_storing_an_id_again_replaces_it() -> None:
    ring = CaptureRing(1 << 20)
    ring.store(1, record(req_body=b'{"a":1}'))
    ring.store(1, record(req_body=b'{"a":2}'))
    assert len(ring) == 1
    assert body(ring.get(1) or {}, "req_body") == b'{"a":2}'


# --- base64 trimming -------------------------------------------------------------------


def image_url(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG" * size).decode()


def test_vision_request_images_are_trimmed_and_the_rest_kept() -> None:
    url = image_url(3000)
    request = {
        "model": "m1",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    trimmed = json.loads(trim_base64(json.dumps(request).encode()))
    assert trimmed["messages"][0]["content"][0] == {"type": "text", "text": "what is this?"}
    assert trimmed["messages"][0]["content"][1]["image_url"]["url"] == (
        f"<base64 image/png, {len(url)} bytes trimmed>"
    )


def test_plain_base64_and_audio_data_urls_are_trimmed() -> None:
    plain = base64.b64encode(bytes(range(256)) * 8).decode()
    audio = "data:audio/wav;base64," + plain
    document = {"input_audio": {"data": plain}, "audio": audio, "n": 1, "ok": True, "x": None}
    trimmed = json.loads(trim_base64(json.dumps(document).encode()))
    assert trimmed == {
        "input_audio": {"data": f"<base64, {len(plain)} bytes trimmed>"},
        "audio": f"<base64 audio/wav, {len(audio)} bytes trimmed>",
        "n": 1,
        "ok": True,
        "x": None,
    }


def test_long_text_and_short_base64_are_kept_byte_for_byte() -> None:
    prose = json.dumps({"content": "a long story, with spaces. " * 100}, indent=2).encode()
    assert trim_base64(prose) is prose
    short = json.dumps({"data": "QUJD" * 100, "pad": "x " * TRIM_MIN_CHARS}).encode()
    assert trim_base64(short) == short  # 400 chars of base64: below the threshold
    assert trim_base64(b"not json " * 200) == b"not json " * 200
    assert trim_base64(b"{broken json" + b"A" * 2000) == b"{broken json" + b"A" * 2000


def test_threshold_is_inclusive() -> None:
    at = "A" * TRIM_MIN_CHARS
    below = "A" * (TRIM_MIN_CHARS - 1)
    assert json.loads(trim_base64(json.dumps([at, below]).encode())) == [
        f"<base64, {TRIM_MIN_CHARS} bytes trimmed>",
        below,
    ]


def test_sse_lines_are_trimmed_one_by_one() -> None:
    plain = "A" * 5000
    chunk = {"choices": [{"delta": {"audio": {"data": plain}}}]}
    stream = (
        b"data: " + json.dumps(chunk).encode() + b"\n\n"
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    lines = trim_base64(stream).split(b"\n")
    assert json.loads(lines[0][len(b"data: ") :])["choices"][0]["delta"]["audio"]["data"] == (
        "<base64, 5000 bytes trimmed>"
    )
    assert lines[2:] == [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}',
        b"",
        b"data: [DONE]",
        b"",
        b"",
    ]


def test_captures_trim_request_and_response_bodies() -> None:
    ring = CaptureRing(1 << 20)
    url = image_url(100_000)
    request = json.dumps({"messages": [{"content": [{"image_url": {"url": url}}]}]}).encode()
    ring.store(1, record(req_body=request))
    capture = ring.get(1)
    assert capture is not None
    stored = json.loads(body(capture, "req_body") or b"")
    assert stored["messages"][0]["content"][0]["image_url"]["url"].startswith("<base64 image/png,")
    assert ring.size < 1000


def test_will_store_is_sure_only_when_the_capture_cannot_fail() -> None:
    """True means store() keeps it (even at the worst growth); None when it might not."""
    assert CaptureRing(0).will_store(record()) is False  # disabled
    assert CaptureRing(1024 * 1024).will_store(record()) is True
    gzipped = record(resp_headers={"Content-Encoding": "gzip"}, resp_body=b"not gzip")
    assert CaptureRing(1024 * 1024).will_store(gzipped) is None
    assert CaptureRing(1024 * 1024).store(1, gzipped) is False
    # Trimming that lengthens: one long base64 string goes, many short numbers grow 4.5x.
    grows = (
        json.dumps({"b64": "A" * TRIM_MIN_CHARS}).encode()[:-1]
        + b',"n":['
        + b",".join([b"1e15"] * 20_000)
        + b"]}"
    )
    big = record(req_body=grows)
    trimmed = trim_base64(grows)
    assert len(trimmed) > 3 * len(grows)  # the re-serialised body really is longer
    for size in range(len(grows), 6 * len(grows), len(grows) // 4):
        ring = CaptureRing(size)
        if ring.will_store(big):
            assert ring.store(1, big) is True
