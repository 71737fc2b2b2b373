"""Model id extraction (server spec §3): pure, table-driven, no server."""

from __future__ import annotations

import json

import pytest

from modelswap.errors import ModelNotFoundError
from modelswap.server.extract import (
    BodyKind,
    body_kind,
    extract_model,
    json_text,
    json_truthy,
)

JSON = "application/json"


def multipart(fields: list[tuple[str, str]], boundary: str = "XyZ") -> bytes:
    parts = []
    for name, value in fields:
        if name == "file":
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n{value}\r\n'
            )
        else:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            )
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


@pytest.mark.parametrize(
    ("method", "content_type", "kind"),
    [
        ("GET", JSON, BodyKind.QUERY),
        ("HEAD", None, BodyKind.QUERY),
        ("POST", None, BodyKind.OTHER),
        ("POST", "", BodyKind.OTHER),
        ("POST", "application/json", BodyKind.JSON),
        ("POST", "application/json; charset=utf-8", BodyKind.JSON),
        ("POST", "text/plain; x=application/json", BodyKind.JSON),  # substring, as llama-swap
        ("POST", "multipart/form-data; boundary=abc", BodyKind.MULTIPART),
        ("POST", "Multipart/Form-Data; boundary=abc", BodyKind.MULTIPART),
        ("POST", "application/x-www-form-urlencoded", BodyKind.URLENCODED),
        ("POST", "application/x-www-form-urlencoded; charset=utf-8", BodyKind.URLENCODED),
        ("POST", "text/plain", BodyKind.OTHER),
        ("POST", "text", BodyKind.OTHER),
        ("POST", "text/", BodyKind.MALFORMED),
        ("POST", "/plain", BodyKind.MALFORMED),
        ("POST", "text/plain garbage", BodyKind.MALFORMED),
        ("POST", "text/plain; =x", BodyKind.MALFORMED),
        ("POST", "multipart/form-data; boundary", BodyKind.MALFORMED),
        ("POST", "text/plain;", BodyKind.OTHER),  # trailing ";" tolerated
    ],
)
def test_body_kind(method: str, content_type: str | None, kind: BodyKind) -> None:
    assert body_kind(method, content_type) is kind


def test_get_uses_first_model_query_param_and_stream_true_only() -> None:
    req = extract_model("GET", None, "model=a&model=b&stream=true", None)
    assert (req.model, req.stream, req.kind) == ("a", True, BodyKind.QUERY)
    assert not extract_model("GET", None, "model=a&stream=1", None).stream
    assert extract_model("GET", None, "model=a%2Fb+c", None).model == "a/b c"


@pytest.mark.parametrize(
    ("body", "model", "stream"),
    [
        ({"model": "llama3"}, "llama3", False),
        ({"model": "m", "stream": True}, "m", True),
        ({"model": "m", "stream": False}, "m", False),
        ({"model": "m", "stream": 1}, "m", True),
        ({"model": "m", "stream": 0.5}, "m", True),
        ({"model": "m", "stream": 0}, "m", False),
        ({"model": "m", "stream": "TRUE"}, "m", True),
        ({"model": "m", "stream": "t"}, "m", True),
        ({"model": "m", "stream": "1"}, "m", True),
        ({"model": "m", "stream": "yes"}, "m", False),
        ({"model": "m", "stream": None}, "m", False),
        ({"model": 123}, "123", False),
        ({"model": 1.5}, "1.5", False),
        ({"model": True}, "true", False),
        ({"model": None}, "", False),
        ({"model": ["a", 1]}, '["a",1]', False),
        ({}, "", False),
        ({"model": ""}, "", False),
    ],
)
def test_json_model_and_stream(body: dict[str, object], model: str, stream: bool) -> None:
    req = extract_model("POST", JSON, "model=ignored&stream=true", json.dumps(body).encode())
    assert (req.model, req.stream) == (model, stream)
    assert req.json == body
    assert req.data == json.dumps(body).encode()


def test_invalid_json_keeps_404_and_says_why() -> None:
    req = extract_model("POST", JSON, "", b"{not json")
    assert req.model == "" and req.json is None and req.data == b"{not json"
    with pytest.raises(ModelNotFoundError) as caught:
        req.require_model()
    assert caught.value.status == 404
    assert caught.value.message.startswith("no model id could be identified: invalid JSON body: ")


def test_json_array_is_no_model() -> None:
    req = extract_model("POST", JSON, "", b'[{"model": "a"}]')
    with pytest.raises(ModelNotFoundError, match="JSON body is not an object"):
        req.require_model()


def test_empty_json_body_is_plain_no_model() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        extract_model("POST", JSON, "", b"{}").require_model()
    assert caught.value.message == "no model id could be identified"


def test_multipart_field_and_query_precedence() -> None:
    ct = "multipart/form-data; boundary=XyZ"
    body = multipart([("model", "whisper"), ("stream", "true"), ("file", "xx")])
    req = extract_model("POST", ct, "", body)
    assert (req.model, req.stream, req.boundary) == ("whisper", True, "XyZ")
    assert extract_model("POST", ct, "model=other", body).model == "other"
    # present-but-empty query value still wins (Go's FormValue takes the first value)
    assert extract_model("POST", ct, "model=", body).model == ""
    assert not extract_model("POST", ct, "stream=false", body).stream


def test_unparsable_multipart_falls_back_to_query() -> None:
    ct = "multipart/form-data; boundary=XyZ"
    assert extract_model("POST", ct, "model=q", b"garbage").model == "q"
    assert extract_model("POST", ct, "", b"garbage").model == ""


def test_urlencoded_body_first_then_query() -> None:
    ct = "application/x-www-form-urlencoded"
    assert extract_model("POST", ct, "model=q", b"model=b&stream=true").model == "b"
    assert extract_model("POST", ct, "model=q", b"prompt=x").model == "q"
    assert extract_model("POST", ct, "", b"model=b&stream=true").stream


def test_other_content_type_uses_query_only() -> None:
    req = extract_model("POST", "text/plain", "model=q&stream=true", None)
    assert (req.model, req.stream, req.data) == ("q", True, None)
    assert extract_model("POST", None, "", None).model == ""


def test_malformed_content_type_fails_even_with_query_model() -> None:
    req = extract_model("POST", "text/ plain", "model=q", None)
    with pytest.raises(ModelNotFoundError, match="malformed Content-Type"):
        req.require_model()


def test_json_helpers() -> None:
    assert json_text(1e20) == "100000000000000000000"
    assert json_text({"a": 1}) == '{"a":1}'
    assert json_truthy(True) and not json_truthy([1]) and not json_truthy({"a": 1})
