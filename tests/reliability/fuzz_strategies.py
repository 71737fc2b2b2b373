"""hypothesis strategies for malformed requests, and the one rule every answer must obey.

Kept apart from the tests so the request shapes can be read on one screen.
Each strategy yields ``(method, target, headers, body)`` for
:func:`tests.reliability.harness.raw_request`; none of them can make the
server wait for bytes that never come (a declared ``Content-Length`` is never
larger than the body), so a missing answer is always a real hang.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from modelswap.server.inference import GET_PATHS, JSON_POST_PATHS, VERSIONLESS_PATHS
from tests.reliability.harness import Reply

Request = tuple[str, str | bytes, list[tuple[str | bytes, str | bytes]], bytes]

MODELS = ("m1", "m2")
NO_MODEL = "no model id could be identified"
NO_ROUTER = "no router for requested model"
METHODS = st.sampled_from(
    ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
) | st.from_regex(r"\A[A-Z]{1,12}\Z")
INFERENCE_PATHS = st.sampled_from(JSON_POST_PATHS + VERSIONLESS_PATHS + GET_PATHS)
ODD_CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-16",
        "application/jsonx",
        "text/application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary="unterminated',
        "multipart/form-data; boundary=x; boundary=y",
        "multipart/mixed; boundary=b",
        ";;;",
        "/",
        "text/plain",
        "application/octet-stream",
        "",
        "a" * 3000,
        "application/json;" + "x=y;" * 200,
    ]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
MODEL_VALUES = (
    st.sampled_from([*MODELS, "", "nope", "m1/../m2", "../../etc/passwd", "m1\x00"]) | JSON_VALUES
)

#: Path pieces that try to leave ``/upstream/<model>/`` for somewhere else.
PATH_TRICKS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "%2F",
    "%2f..%2f",
    "..%2F..%2F",
    "",
    ".",
    "@127.0.0.1:{attacker}",
    "user@127.0.0.1:{attacker}",
    "%40127.0.0.1:{attacker}",
    "http://127.0.0.1:{attacker}/",
    "http:%2F%2F127.0.0.1:{attacker}",
    "//127.0.0.1:{attacker}",
    "\\\\127.0.0.1:{attacker}",
    "127.0.0.1:{attacker}",
    "%00",
    "%",
    "%zz",
    "?x=1",
    "#frag",
    ";a=b",
    "v1",
    "chat",
    "m1",
    "m2",
    "a" * 5000,
]


def upstream_target(attacker_port: int) -> st.SearchStrategy[str]:
    """``/upstream/`` + a model (or not) + tricks: many ways to try to escape."""
    trick = st.sampled_from([t.format(attacker=attacker_port) for t in PATH_TRICKS])
    head = st.sampled_from(["m1/", "m2/", "m1", "", "nope/", "m1%2F", "/", "%6d1/"])
    return st.builds(
        lambda h, parts, sep: "/upstream/" + h + sep.join(parts),
        head,
        st.lists(trick, max_size=6),
        st.sampled_from(["/", "//", "/./"]),
    )


@st.composite
def json_requests(draw: st.DrawFn) -> Request:
    """Wrong types for ``model``/``stream``/``messages``, bad or truncated JSON."""
    fields = draw(
        st.fixed_dictionaries(
            {},
            optional={"model": MODEL_VALUES, "stream": JSON_VALUES, "messages": JSON_VALUES},
        )
    )
    document: Any = fields if draw(st.booleans()) else draw(JSON_VALUES)
    text = json.dumps(document)
    cut = draw(st.sampled_from([None, None, "truncate", "garbage"]))
    if cut == "truncate" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif cut == "garbage":
        text += draw(st.text(max_size=10))
    body = text.encode("utf-8", "surrogatepass")
    ctype = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
    return ("POST", draw(INFERENCE_PATHS), [("Content-Type", ctype)], body)


#: Inference paths the fake upstream answers without parsing JSON (its echo), so a
#: forwarded body nested past Python's parser limit reaches an upstream that copes.
ECHO_PATHS = (
    *(p for p in VERSIONLESS_PATHS if "rerank" not in p),  # /v/rerank is the fake's /rerank
    "/v1/images/edits",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/audioapi/v1/tasks/run",
)
LIMIT_DEPTHS = st.sampled_from([1_000, 2_000, 10_000, 20_000, 100_000]) | st.integers(900, 100_000)
HUGE_DIGITS = st.sampled_from([4_301, 5_000, 100_000]) | st.integers(4_301, 20_000)


@st.composite
def deep_values(draw: st.DrawFn) -> str:
    """Arrays/objects nested 900-100,000 levels; some broken (unclosed, mismatched)."""
    depth = draw(LIMIT_DEPTHS)
    shape = draw(
        st.sampled_from(["arrays", "objects", "mixed", "unclosed", "mismatched", "bad string"])
    )
    if shape == "objects":
        return '{"a":' * depth + draw(st.sampled_from(["1", "[]", '"x"'])) + "}" * depth
    if shape == "mixed":
        half = depth // 2
        return '[{"k]":"}{[\\"","v":' * half + "null" + "}]" * half
    if shape == "unclosed":
        return "[" * depth + "]" * draw(st.integers(0, depth - 1))
    if shape == "mismatched":
        return "[" * depth + "}" * depth
    if shape == "bad string":
        return "[" * depth + '"unterminated'
    return "[" * depth + "]" * depth


def _huge_number(digits: int, form: str) -> str:
    if form == "fraction":
        return "0." + "9" * digits
    if form == "exponent":
        return "1" + "0" * digits + "e-" + str(digits)
    return ("-" if form == "negative" else "") + "9" * digits


HUGE_NUMBERS = st.builds(
    _huge_number, HUGE_DIGITS, st.sampled_from(["int", "negative", "fraction", "exponent"])
) | st.sampled_from(["1e999999", "-1e999999", "1e-999999", "123456789" * 600])
BIG_STRINGS = st.sampled_from([100_000, 1_000_000]).map(lambda n: '"' + "a" * n + '"') | st.just(
    '"' + "\\u00e9\\n\\ud83d\\ude00" * 20_000 + '"'
)
CONSTANTS = st.sampled_from(["NaN", "Infinity", "-Infinity", "[NaN,Infinity]"])
LIMIT_VALUES = deep_values() | HUGE_NUMBERS | BIG_STRINGS | CONSTANTS
ENCODINGS = ("utf-8",) * 6 + ("bom",) * 2 + ("double bom", "utf-16", "utf-16-le", "utf-16-be")
ENCODINGS += ("utf-32", "utf-32-le", "utf-32-be")


def _encode_body(text: str, encoding: str) -> bytes:
    if encoding == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if encoding == "double bom":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode()
    return text.encode(encoding)


@st.composite
def json_limit_requests(draw: st.DrawFn) -> Request:
    """What Python's JSON parser cannot hold, beside a valid model or not (issue 13 item 1).

    Deep nesting (arrays, objects, mixed; 900-100,000 levels), integers past
    the 4,300-digit limit, 1e999999, huge strings, NaN/Infinity, duplicate
    keys, a UTF-8 BOM, UTF-16/32 bodies — as a member next to ``model``, as
    the model or ``stream`` itself, or as the whole body.
    """
    weird = draw(st.lists(LIMIT_VALUES, min_size=1, max_size=2))
    members: list[tuple[str, str]] = [("x" if i == 0 else "y", v) for i, v in enumerate(weird)]
    model = draw(st.sampled_from(["m1", "m1", "m2", "nope", "weird", "none", "twice"]))
    if model == "weird":
        members.append(("model", weird[0]))
    elif model == "twice":
        first, last = draw(st.permutations(['"nope"', '"m1"']))
        members += [("model", first), ("model", last)]
    elif model != "none":
        members.append(("model", json.dumps(model)))
    if draw(st.booleans()):
        members.append(("stream", draw(st.sampled_from(["true", "false", weird[0]]))))
    members = draw(st.permutations(members))
    text = "{" + ",".join(f'"{k}":{v}' for k, v in members) + "}"
    if draw(st.integers(0, 9)) == 0:
        text = weird[0]  # the weird value is the whole body
    encoding = draw(st.sampled_from(ENCODINGS))
    path = draw(st.sampled_from(ECHO_PATHS))
    if not any(v.startswith(("[", "{")) for v in weird):
        path = draw(st.sampled_from(ECHO_PATHS + JSON_POST_PATHS))  # the fake can parse these
    ctype = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
    return ("POST", path, [("Content-Type", ctype)], _encode_body(text, encoding))


@st.composite
def byte_requests(draw: st.DrawFn) -> Request:
    """Arbitrary bytes (invalid UTF-8 included) under odd content types."""
    body = draw(
        st.binary(max_size=3000)
        | st.sampled_from(
            [b"\xff\xfe\xfd", b'{"model": "\xc3\x28"}', b'{"model":"m1\xed\xa0\x80"}']
        )
    )
    headers: list[tuple[str | bytes, str | bytes]] = []
    ctype = draw(ODD_CONTENT_TYPES)
    if ctype:
        headers.append(("Content-Type", ctype))
    query = draw(st.sampled_from(["", "?model=m1", "?model=%ff", "?model=", "?&&=&model"]))
    return (
        draw(st.sampled_from(["POST", "GET", "PUT"])),
        draw(INFERENCE_PATHS) + query,
        headers,
        body,
    )


@st.composite
def multipart_requests(draw: st.DrawFn) -> Request:
    """Multipart bodies: random boundaries, parts, missing CRLFs and terminators."""
    boundary = draw(
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=70)
    )
    boundary = boundary.replace('"', "")
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["model", "file", "stream", "", '"', "x\r\ny"]))
        head = draw(
            st.sampled_from(
                [
                    f'Content-Disposition: form-data; name="{name}"',
                    f'Content-Disposition: form-data; name="{name}"; filename="a.wav"',
                    "Content-Disposition: garbage",
                    "",
                ]
            )
        )
        content = draw(st.binary(max_size=200) | st.sampled_from([b"m1", b"m2", b"true"]))
        sep = draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b""]))
        parts.append(b"--" + boundary.encode() + b"\r\n" + head.encode() + sep + content + b"\r\n")
    end = draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b"", b"--"]))
    ctype = f"multipart/form-data; boundary={draw(st.sampled_from([boundary, '', 'other']))}"
    path = draw(
        st.sampled_from(["/v1/audio/transcriptions", "/v1/images/edits", "/v1/chat/completions"])
    )
    return ("POST", path, [("Content-Type", ctype)], b"".join(parts) + end)


@st.composite
def path_requests(draw: st.DrawFn, attacker_port: int) -> Request:
    """``/upstream`` escapes and arbitrary request targets, raw bytes included."""
    target: str | bytes = draw(
        upstream_target(attacker_port)
        | st.text(max_size=300).map(
            lambda t: (
                "/"
                + "".join(c if c.isascii() and c.isalnum() else f"%{ord(c) & 0xFF:02x}" for c in t)
            )
        )
        | st.binary(min_size=1, max_size=200).map(
            lambda b: b"/" + b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")
        )
        | st.sampled_from(
            [
                "*",
                f"http://127.0.0.1:{attacker_port}/upstream/m1/x",
                "//upstream/m1/x",
                "/upstream/m1/" + "x/" * 3000,
            ]
        )
    )
    return (draw(METHODS), target, [], draw(st.sampled_from([b"", b"{}", b'{"model":"m1"}'])))


@st.composite
def header_requests(draw: st.DrawFn) -> Request:
    """Huge and numerous headers, odd names and values, broken Content-Length."""
    token = st.text(
        st.sampled_from(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~"
        ),
        min_size=1,
        max_size=40,
    )
    value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
    headers: list[tuple[str | bytes, str | bytes]] = draw(
        st.lists(st.tuples(token, value), max_size=30)
    )
    size = draw(st.sampled_from([0, 0, 100, 8000, 8200, 20_000, 70_000]))
    if size:
        headers.append((draw(token), "v" * size))
    many = draw(st.sampled_from([0, 0, 120, 400]))
    headers += [(f"X-Many-{i}", "1") for i in range(many)]
    body = b'{"model":"m1","messages":[]}'
    special = draw(
        st.sampled_from(
            [
                None,
                ("Content-Length", "abc"),
                ("Content-Length", "-1"),
                ("Content-Length", "5, 7"),
                ("Content-Length", "0"),
                ("Content-Length", "3"),
                ("Authorization", "Bearer " + "k" * 10_000),
                ("Authorization", "Basic %%%"),
                ("Expect", "100-continue"),
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Host", "127.0.0.1:1"),
                ("Host", ""),
            ]
        )
    )
    if special is not None:
        headers.append(special)
        headers.append(("Content-Type", "application/json"))
    return ("POST", "/v1/chat/completions", headers, body)


def is_json(reply: Reply) -> bool:
    return reply.headers.get("content-type", "").startswith("application/json")


def check_clean(reply: Reply, description: str, *, head: bool = False) -> None:
    """The rule: no traceback or HTML page, no 5xx of ours, errors in the JSON envelope.

    Documented exceptions: an unmatched path is Go's plain ``404 page not
    found``; a wrong method is aiohttp's plain-text 405; what aiohttp's HTTP
    parser refuses before any handler runs (a malformed request line or
    header) is its plain-text 400/413/431. 502/503/504 are upstream failures.
    """
    lowered = reply.body.lower()
    assert b"traceback" not in lowered, f"{description}: traceback in {reply.body[:300]!r}"
    assert b"<html" not in lowered, f"{description}: HTML page {reply.body[:300]!r}"
    if reply.status >= 500:
        assert reply.status in (502, 503, 504), (
            f"{description}: {reply.status} {reply.body[:300]!r}"
        )
        assert is_json(reply), f"{description}: {reply.status} not JSON {reply.body[:300]!r}"
    if reply.status < 400 or head:
        return  # a HEAD answer has no body to judge
    if is_json(reply):
        payload = json.loads(reply.body)
        assert isinstance(payload, dict) and "error" in payload, f"{description}: {payload!r:.300}"
        return
    if reply.status == 404:
        assert reply.body == b"404 page not found\n", f"{description}: {reply.body[:300]!r}"
        return
    plain = reply.headers.get("content-type", "").startswith("text/plain")
    assert reply.status in (400, 405, 413, 431) and plain, (
        f"{description}: {reply.status} {reply.headers} {reply.body[:300]!r}"
    )
