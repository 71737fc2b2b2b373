"""Request filters, model rewrites and multipart surgery (server spec §7.2, §9.2): pure."""

from __future__ import annotations

import json
import textwrap

import pytest

from modelswap.config import Config, load_config_text
from modelswap.server.extract import BodyKind, extract_model
from modelswap.server.filters import (
    FilterError,
    FilterPlan,
    RewriteError,
    apply_filters,
    apply_json_filters,
    delete_path,
    filter_plan,
    set_path,
    split_path,
)
from modelswap.server.multipart import FormError, iter_parts, parse_media_type, replace_field
from modelswap.server.profiles import pin_upstream_path
from modelswap.server.rewrite import replace_model, replace_query_param

JSON = "application/json"
MP = "multipart/form-data; boundary=XyZ"

CONFIG = textwrap.dedent(
    """
    models:
      real:
        cmd: srv --port ${PORT}
        useModelName: upstream-name
        aliases: [nick]
        filters:
          stripParams: "temperature, model, , top_k"
          setParams: {top_p: 0.5, nested.deep: 1}
          setParamsByID:
            variant: {top_p: 0.1, thinking: true}
      plain:
        cmd: srv --port ${PORT}
    peers:
      remote:
        proxy: http://example.invalid
        models: [org/model]
        filters:
          setParams: {max_tokens: 9}
    """
)


def form(fields: list[tuple[str, str]], boundary: str = "XyZ") -> bytes:
    parts = []
    for name, value in fields:
        extra = '; filename="a.wav"\r\nContent-Type: audio/wav' if name == "file" else ""
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
            f"{value}\r\n"
        )
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config_text(CONFIG).config


# --- plans ----------------------------------------------------------------------------


def test_plan_for_model_alias_variant_peer_unknown(config: Config) -> None:
    plan = filter_plan(config, "real")
    assert plan.use_model_name == "upstream-name"
    assert plan.strip == ("temperature", "top_k")  # model protected, blanks dropped, sorted
    assert plan.set_params == (("nested.deep", 1), ("top_p", 0.5))
    assert plan.set_params_by_id == ()
    assert filter_plan(config, "variant").set_params_by_id == (("thinking", True), ("top_p", 0.1))
    assert filter_plan(config, "nick").use_model_name == "upstream-name"
    peer = filter_plan(config, "remote/org/model")
    assert peer == FilterPlan("", (), (("max_tokens", 9),), ())
    assert filter_plan(config, "org/model") == peer  # unique bare peer name
    assert filter_plan(config, "nobody").is_empty
    assert filter_plan(config, "plain").is_empty


# --- JSON paths -------------------------------------------------------------------------


def test_split_path_escapes() -> None:
    assert split_path("a.b") == ["a", "b"]
    assert split_path(r"a\.b.c") == ["a.b", "c"]
    assert split_path("a") == ["a"]


def test_set_path_nests_and_copies_on_write() -> None:
    doc = {"a": {"x": 1}, "messages": [{"role": "user"}]}
    out = set_path(doc, "a.b.c", 2)
    assert out == {"a": {"x": 1, "b": {"c": 2}}, "messages": [{"role": "user"}]}
    assert doc == {"a": {"x": 1}, "messages": [{"role": "user"}]}  # input untouched
    assert out["messages"] is doc["messages"]  # untouched branches are shared, not copied
    assert set_path({"a": "scalar"}, "a.b", 1) == {"a": {"b": 1}}
    assert set_path({"stop": ["x"]}, "stop.-1", "y") == {"stop": ["x", "y"]}
    assert set_path({"stop": ["x"]}, "stop.0", "z") == {"stop": ["z"]}
    assert set_path({"stop": []}, "stop.2", "z") == {"stop": [None, None, "z"]}
    assert set_path({}, "k", {"obj": [1]}) == {"k": {"obj": [1]}}
    with pytest.raises(FilterError, match=r"error setting parameter stop\.key in request"):
        set_path({"stop": []}, "stop.key", 1)


def test_delete_path() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, {"x": 1}]}
    assert delete_path(doc, "a.b") == ({"a": {"c": 2}, "l": [1, {"x": 1}]}, True)
    assert delete_path(doc, "l.1.x") == ({"a": {"b": 1, "c": 2}, "l": [1, {}]}, True)
    assert delete_path(doc, "missing.x") == (doc, False)
    assert delete_path(doc, "l.7") == (doc, False)
    assert delete_path(doc, "a.b.c") == (doc, False)
    assert doc == {"a": {"b": 1, "c": 2}, "l": [1, {"x": 1}]}


def test_json_filter_order_scenario_55() -> None:
    plan = FilterPlan(
        use_model_name="real-name",
        strip=("temperature",),
        set_params=(("top_p", 0.5),),
        set_params_by_id=(("top_p", 0.1),),
    )
    doc = {"model": "alias", "temperature": 0.7, "messages": []}
    out, changed = apply_json_filters(doc, plan)
    assert changed
    assert out == {"model": "real-name", "messages": [], "top_p": 0.1}


def test_no_change_means_same_bytes() -> None:
    raw = b'{ "model" : "m",  "x": 1 }'
    req = extract_model("POST", JSON, "", raw)
    assert apply_filters(req, FilterPlan(strip=("absent",))) is req
    assert apply_filters(req, FilterPlan(use_model_name="m")) is req
    assert apply_filters(req, FilterPlan()) is req


def test_apply_filters_reserialises_and_keeps_routing_name(config: Config) -> None:
    raw = json.dumps({"model": "variant", "temperature": 1, "top_k": 3, "é": "ü"}).encode()
    req = extract_model("POST", JSON, "", raw)
    out = apply_filters(req, filter_plan(config, "variant"))
    assert out.model == "variant"  # routing still by the requested name
    assert out.data is not None
    body = json.loads(out.data)
    assert body == {
        "model": "upstream-name",
        "é": "ü",
        "nested": {"deep": 1},
        "top_p": 0.1,
        "thinking": True,
    }
    assert "ü".encode() in out.data  # UTF-8, not \\u escapes


def test_multipart_use_model_name_keeps_file_bytes_scenario_57() -> None:
    body = form([("model", "whisper"), ("file", "xx"), ("language", "en")])
    req = extract_model("POST", MP, "", body)
    out = apply_filters(req, FilterPlan(use_model_name="whisper-large-v3", strip=("language",)))
    assert out.model == "whisper"
    assert out.data == body.replace(b"\r\n\r\nwhisper\r\n", b"\r\n\r\nwhisper-large-v3\r\n")
    assert extract_model("POST", MP, "", out.data).model == "whisper-large-v3"


def test_filters_ignore_get_and_other_bodies() -> None:
    plan = FilterPlan(use_model_name="x", set_params=(("a", 1),))
    get = extract_model("GET", None, "model=m", None)
    assert apply_filters(get, plan) is get
    other = extract_model("POST", "text/plain", "model=m", None)
    assert apply_filters(other, plan) is other


# --- multipart ---------------------------------------------------------------------------


def test_parse_media_type() -> None:
    assert parse_media_type('Multipart/Form-Data; Boundary="a b\\"c"') == (
        "multipart/form-data",
        {"boundary": 'a b"c'},
    )
    for bad in ("", "a/", "a/b c", "a/b; x", 'a/b; x="open', "a/b; x=1; x=2"):
        with pytest.raises(FormError):
            parse_media_type(bad)


def test_iter_parts_offsets_and_errors() -> None:
    body = b"preamble\r\n" + form([("model", "m"), ("file", "data")])
    parts = list(iter_parts(body, "XyZ"))
    assert [(p.name, p.filename, body[p.start : p.end]) for p in parts] == [
        ("model", None, b"m"),
        ("file", "a.wav", b"data"),
    ]
    with pytest.raises(FormError):
        list(iter_parts(b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nno end", "XyZ"))
    with pytest.raises(FormError):
        list(iter_parts(body, ""))


def test_replace_field_appends_when_absent() -> None:
    body = form([("file", "xx")])
    out = replace_field(body, "XyZ", "model", "m2")
    assert extract_model("POST", MP, "", out).model == "m2"
    assert [p.name for p in iter_parts(out, "XyZ")] == ["file", "model"]


# --- model rewrite (profiles, selectors, peers) ------------------------------------------


def test_replace_query_param_keeps_other_params() -> None:
    assert replace_query_param("a=%2F&model=x&b=1", "model", "y/z", add=False) == (
        "a=%2F&model=y%2Fz&b=1"
    )
    assert replace_query_param("a=1", "model", "y", add=False) == "a=1"
    assert replace_query_param("", "model", "y", add=True) == "model=y"


@pytest.mark.parametrize(
    ("method", "ct", "query", "body", "check"),
    [
        ("GET", None, "model=public&autoload=1", None, "query"),
        ("POST", JSON, "", b'{"model":"public","x":1}', "json"),
        ("POST", MP, "", form([("model", "public"), ("file", "xx")]), "form"),
        ("POST", "application/x-www-form-urlencoded", "", b"model=public&p=1", "form"),
        ("POST", "text/plain", "model=public", None, "query"),
        ("POST", None, "model=public", None, "query"),
    ],
)
def test_s24_58_replace_request_model_everywhere(
    method: str, ct: str | None, query: str, body: bytes | None, check: str
) -> None:
    req = extract_model(method, ct, query, body)
    assert req.model == "public"
    out = replace_model(req, "target")
    assert out.model == "target"
    assert extract_model(method, ct, out.query_string, out.data).model == "target"
    if check == "query":
        assert "model=target" in out.query_string
        assert out.data == req.data
    if check == "json":
        assert out.data is not None and json.loads(out.data) == {"model": "target", "x": 1}


def test_s24_58_replace_request_model_json_length_and_multipart_file() -> None:
    req = extract_model("POST", JSON, "", b'{"model":"public","x":1}')
    out = replace_model(req, "a-much-longer-target")
    assert out.data is not None and len(out.data) != len(req.data or b"")
    assert json.loads(out.data) == {"model": "a-much-longer-target", "x": 1}  # length = bytes

    body = form([("model", "public"), ("file", "xx"), ("language", "en")])
    out = replace_model(extract_model("POST", MP, "", body), "target")
    assert out.data == body.replace(b"\r\n\r\npublic\r\n", b"\r\n\r\ntarget\r\n")
    parts = list(iter_parts(out.data, "XyZ"))
    assert [(p.name, p.filename, out.data[p.start : p.end]) for p in parts] == [
        ("model", None, b"target"),
        ("file", "a.wav", b"xx"),
        ("language", None, b"en"),
    ]


def test_s24_58_replace_request_model_upstream_path() -> None:
    pins = {"public": "real", "author/public": "target"}
    assert pin_upstream_path(pins, "author/public/v1/chat") == "target/v1/chat"
    assert pin_upstream_path(pins, "author/public/api/x%2Fy") == "target/api/x%2Fy"


def test_replace_model_multipart_with_query_model_rewrites_both() -> None:
    req = extract_model("POST", MP, "model=public", form([("model", "public")]))
    out = replace_model(req, "t")
    assert out.query_string == "model=t"
    assert out.data is not None and b"\r\n\r\nt\r\n" in out.data


def test_replace_model_only_if_equal() -> None:
    req = extract_model("POST", JSON, "", b'{"model":"peer/m"}')
    assert replace_model(req, "m", only_if="other") is req
    out = replace_model(req, "m", only_if="peer/m")
    assert out.data == b'{"model":"m"}' and out.model == "m"


def test_replace_model_disabled_pin_empties_model() -> None:
    req = extract_model("GET", None, "model=disabled", None)
    out = replace_model(req, "")
    assert out.model == ""
    assert out.kind is BodyKind.QUERY


def test_replace_model_bad_multipart_is_400() -> None:
    req = extract_model("POST", MP, "model=q", b"garbage")
    with pytest.raises(RewriteError) as caught:
        replace_model(req, "t")
    assert caught.value.status == 400
