"""Macro engine: declarations, scopes, typing, ${PORT} allocation, leftovers (§6, §8.1).

Each test feeds config text through the real path (env substitution, parse,
expand) and asserts on the expanded tree or on the error message, as the
acceptance scenarios of config.md §20 describe them.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelswap.config.macros import (
    PortAssignment,
    expand_document,
    expand_with_ports,
    format_go_value,
    model_macro_list,
)
from modelswap.config.yaml_io import load_text
from modelswap.errors import ConfigError
from modelswap.process.command import split_command


def expand(text: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    doc = load_text(textwrap.dedent(text), "config.yaml", environ or {})
    return expand_document(doc.data, doc.locations)


def expand_error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        expand(text, environ)
    return info.value


def message(text: str) -> str:
    return expand_error(text).problems[0].message


# --- format_go_value --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-42, "-42"),
        (10001, "10001"),
        (0.7, "0.7"),
        (0.5, "0.5"),
        (16384.0, "16384"),
        (123456.0, "123456"),
        (1000000.0, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.00001, "1e-05"),
        (0.0001, "0.0001"),
        (0.000123, "0.000123"),
        (1.5e-7, "1.5e-07"),
        (-2.5, "-2.5"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (0.0, "0"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
        (float("nan"), "NaN"),
        ("text", "text"),
    ],
)
def test_format_go_value_matches_go_percent_v(value: Any, text: str) -> None:
    assert format_go_value(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_go_float_round_trips_and_uses_exponents_like_go(value: float) -> None:
    text = format_go_value(value)
    assert float(text) == value
    if value != 0:
        exponent = int(f"{abs(value):e}".split("e")[1])
        assert ("e" in text) == (exponent < -4 or exponent >= 6)


def test_model_macro_list_overrides_in_place_and_appends() -> None:
    merged = model_macro_list("m", [("a", 1), ("b", 2)], [("b", 3), ("c", 4)])
    assert merged == [("MODEL_ID", "m"), ("a", 1), ("b", 3), ("c", 4)]


# --- ports and proxy (5, 6, 40, 42) -----------------------------------------------------


def test_s20_5_proxy_uses_port_but_cmd_does_not() -> None:
    err = expand_error("models: {model1: {cmd: svr --port 111}}")
    assert err.problems[0].message == (
        "model model1: proxy uses ${PORT} but cmd does not - "
        "${PORT} is only available when used in cmd"
    )
    assert err.problems[0].file == "config.yaml"
    assert err.problems[0].line == 1


def test_s20_6_ports_allocated_in_sorted_order_only_when_cmd_uses_port() -> None:
    models = expand(
        """
        startPort: 5800
        models:
          model3:
            cmd: svr --port 9999
            proxy: http://localhost:9999
          model2:
            cmd: svr --port ${PORT}
            proxy: http://172.11.22.33:${PORT}
          model1:
            cmd: svr --port ${PORT}
        """
    )["models"]
    assert models["model1"]["cmd"] == "svr --port 5800"
    assert models["model1"]["proxy"] == "http://localhost:5800"
    assert models["model2"]["cmd"] == "svr --port 5801"
    assert models["model2"]["proxy"] == "http://172.11.22.33:5801"
    assert models["model3"] == {"cmd": "svr --port 9999", "proxy": "http://localhost:9999"}
    assert list(models) == ["model3", "model2", "model1"]  # original key order kept


def _ports(text: str, keep: PortAssignment | None = None) -> tuple[dict[str, str], PortAssignment]:
    doc = load_text(textwrap.dedent(text), "config.yaml", {})
    expanded, ports = expand_with_ports(doc.data, doc.locations, keep)
    return {m: body["cmd"] for m, body in expanded["models"].items()}, ports


def test_a_reload_keeps_the_ports_of_models_still_there() -> None:
    """Adding a model that sorts first must not move (and so restart) the others."""
    before, ports = _ports(
        """
        models:
          b: {cmd: 'svr --port ${PORT}'}
          c: {cmd: 'svr --port ${PORT}'}
          d: {cmd: 'svr --port ${PORT}'}
        """
    )
    assert before == {"b": "svr --port 5800", "c": "svr --port 5801", "d": "svr --port 5802"}
    assert ports == PortAssignment(5800, {"b": 5800, "c": 5801, "d": 5802})
    # a is new and sorts first; c was removed (it may still be draining: its port
    # is not handed out again in this reload); e is new too.
    after, ports2 = _ports(
        """
        models:
          a: {cmd: 'svr --port ${PORT}'}
          b: {cmd: 'svr --port ${PORT}'}
          d: {cmd: 'svr --port ${PORT}'}
          e: {cmd: 'svr --port ${PORT}'}
        """,
        ports,
    )
    assert after == {
        "a": "svr --port 5803",
        "b": "svr --port 5800",
        "d": "svr --port 5802",
        "e": "svr --port 5804",
    }
    assert ports2.ports == {"a": 5803, "b": 5800, "d": 5802, "e": 5804}
    # Without the running assignment (a fresh start) ports are llama-swap's: sorted order.
    fresh, _ = _ports("models: {a: {cmd: 's ${PORT}'}, b: {cmd: 's ${PORT}'}}")
    assert fresh == {"a": "s 5800", "b": "s 5801"}


def test_a_changed_start_port_allocates_every_port_afresh() -> None:
    _, ports = _ports("models: {b: {cmd: 's ${PORT}'}}")
    after, ports2 = _ports(
        "startPort: 7000\nmodels: {a: {cmd: 's ${PORT}'}, b: {cmd: 's ${PORT}'}}", ports
    )
    assert after == {"a": "s 7000", "b": "s 7001"}
    assert ports2 == PortAssignment(7000, {"a": 7000, "b": 7001})


def test_s20_6_start_port_defaults_to_5800() -> None:
    models = expand("models: {m: {cmd: 's --port ${PORT}'}}")["models"]
    assert models["m"]["proxy"] == "http://localhost:5800"


def test_s20_6_start_port_below_one_is_rejected() -> None:
    for value in (0, -99):
        text = f"startPort: {value}\nmodels: {{m: {{cmd: 's ${{PORT}}'}}}}"
        assert message(text) == "startPort must be greater than 1"


def test_s20_6_start_port_wrong_type_is_left_for_the_typed_decode() -> None:
    tree = expand("startPort: abcd\nmodels: {m: {cmd: 's ${PORT}'}}")
    assert tree["startPort"] == "abcd"
    assert tree["models"]["m"]["cmd"] == "s 5800"


def test_s20_40_start_port_from_a_whole_value_macro() -> None:
    tree = expand(
        """
        macros: {FIRST_PORT: 6200}
        startPort: "${FIRST_PORT}"
        models:
          m: {cmd: "server --port ${PORT}"}
        """
    )
    assert tree["startPort"] == 6200
    assert tree["models"]["m"]["cmd"] == "server --port 6200"
    assert tree["models"]["m"]["proxy"] == "http://localhost:6200"


def test_s20_42_port_applies_throughout_the_model() -> None:
    model = expand(
        """
        startPort: 6100
        models:
          m:
            cmd: "server --port ${PORT}"
            proxy: "http://127.0.0.1:${PORT}"
            checkEndpoint: "/health/${PORT}"
            aliases: ["port-${PORT}"]
            metadata: {port: "${PORT}"}
        """
    )["models"]["m"]
    assert model["proxy"] == "http://127.0.0.1:6100"
    assert model["checkEndpoint"] == "/health/6100"
    assert model["aliases"] == ["port-6100"]
    assert model["metadata"] == {"port": 6100}


def test_s20_42_check_endpoint_port_without_cmd_port_is_an_error() -> None:
    text = """
        models:
          m:
            cmd: server --port 8000
            proxy: http://localhost:8000
            checkEndpoint: /health/${PORT}
        """
    assert message(text) == "macro '${PORT}' should have been substituted in m.checkEndpoint"


# --- setParamsByID keys (17, 18) --------------------------------------------------------


def test_s20_17_param_keys_resolving_to_the_same_value() -> None:
    err = expand_error(
        """
        macros: {FIRST: shared, SECOND: shared}
        models:
          model1:
            cmd: s ${PORT}
            filters:
              setParamsByID:
                "${FIRST}": {a: 1}
                "${SECOND}": {a: 2}
        """
    )
    assert err.problems[0].message == (
        'model model1 filters.setParamsByID: keys "${FIRST}" and "${SECOND}" '
        "resolve to the same value"
    )
    assert err.problems[0].line == 7


def test_s20_18_param_key_with_port() -> None:
    model = expand(
        """
        startPort: 6300
        models:
          model1:
            cmd: s --port ${PORT}
            filters:
              setParamsByID:
                "model1:${PORT}": {temperature: 0.1}
                "${MODEL_ID}:high": {temperature: 0.9}
        """
    )["models"]["model1"]
    assert model["filters"]["setParamsByID"] == {
        "model1:6300": {"temperature": 0.1},
        "model1:high": {"temperature": 0.9},
    }


def test_s20_18_param_key_with_unknown_macro() -> None:
    text = """
        models:
          model1:
            cmd: s ${PORT}
            filters: {setParamsByID: {"x-${nope}": {a: 1}}}
        """
    assert message(text) == (
        "unknown macro '${nope}' found in model model1 filters.setParamsByID key"
    )


# --- the big command scenarios (20, 23, 24) ---------------------------------------------

S20_CONFIG = """
    startPort: 9990
    macros:
      svr-path: "path/to/server"
      argOne: "--arg1"
      argTwo: "--arg2"
      autoPort: "--port ${PORT}"
      overriddenByModelMacro: failed
    models:
      model1:
        macros:
          overriddenByModelMacro: success
        cmd: |
          ${svr-path} ${argTwo}
          # the automatic ${PORT} is replaced
          ${autoPort}
          ${argOne}
          --arg3 three
          --overridden ${overriddenByModelMacro}
        cmdStop: |
          /path/to/stop.sh --port ${PORT} ${argTwo}
    """


def test_s20_20_global_and_model_macros_in_cmd() -> None:
    tree = expand(S20_CONFIG)
    model = tree["models"]["model1"]
    assert " ".join(split_command(model["cmd"])) == (
        "path/to/server --arg2 --port 9990 --arg1 --arg3 three --overridden success"
    )
    assert split_command(model["cmdStop"]) == ["/path/to/stop.sh", "--port", "9990", "--arg2"]
    assert model["proxy"] == "http://localhost:9990"


def test_s20_20_macro_blocks_keep_their_original_values() -> None:
    tree = expand(S20_CONFIG)
    assert tree["macros"]["autoPort"] == "--port ${PORT}"
    assert tree["models"]["model1"]["macros"] == {"overriddenByModelMacro": "success"}


def test_s20_23_comment_line_mentioning_a_macro_is_not_expanded() -> None:
    model = expand(
        """
        startPort: 9990
        macros:
          latest-llama: >
            /user/llama.cpp/build/bin/llama-server
            --port ${PORT}
        models:
          model1:
            cmd: |
              # Use the latest ${latest-llama} build
              ${latest-llama}
              --model /path/to/model.gguf
              -ngl 99
        """
    )["models"]["model1"]
    assert split_command(model["cmd"]) == [
        "/user/llama.cpp/build/bin/llama-server",
        "--port",
        "9990",
        "--model",
        "/path/to/model.gguf",
        "-ngl",
        "99",
    ]


def test_s20_23_empty_lines_are_kept_in_cmd() -> None:
    model = expand('models: {m: {cmd: "a ${PORT}\\n\\n  # c\\nb"}}')["models"]["m"]
    assert model["cmd"] == "a 5800\n\nb"


def test_s20_24_model_id_in_global_macros_and_byte_order_ports() -> None:
    tree = expand(
        """
        startPort: 9000
        macros:
          docker-llama: docker run --name ${MODEL_ID} -p ${PORT}:8080 docker_img
          docker-stop: docker stop ${MODEL_ID}
        models:
          model1:
            cmd: s --port ${PORT}
          model2:
            cmd: ${docker-llama}
            cmdStop: ${docker-stop}
          "author/model:F16":
            cmd: s --port ${PORT}
        """
    )
    models = tree["models"]
    assert models["model2"]["cmd"] == "docker run --name model2 -p 9002:8080 docker_img"
    assert models["model2"]["cmdStop"] == "docker stop model2"
    assert models["author/model:F16"]["cmd"] == "s --port 9000"
    assert models["model1"]["cmd"] == "s --port 9001"
    assert tree["macros"]["docker-stop"] == "docker stop ${MODEL_ID}"


# --- declarations (21, 29, 32, 37) ------------------------------------------------------


@pytest.mark.parametrize("name", ["PORT", "MODEL_ID", "PID"])
def test_s20_21_reserved_global_macro_names(name: str) -> None:
    assert message(f"macros: {{{name}: x}}") == f"macro name '{name}' is reserved"


@pytest.mark.parametrize("name", ["PORT", "MODEL_ID", "PID"])
def test_s20_21_reserved_model_macro_names(name: str) -> None:
    text = f"models: {{model1: {{cmd: 's ${{PORT}}', macros: {{{name}: x}}}}}}"
    assert message(text) == f"model model1: macro name '{name}' is reserved"


def test_s20_21_global_macros_are_validated_before_model_macros() -> None:
    text = """
        macros: {PID: 1}
        models: {a: {cmd: x, macros: {PORT: 1}}}
        """
    assert message(text) == "macro name 'PID' is reserved"


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "~", ""])
def test_s20_29_macro_values_must_be_scalars(value: str) -> None:
    assert "must be a scalar type" in message(f"macros:\n  bad: {value}\n")


def test_s20_29_invalid_type_names_the_go_type() -> None:
    assert message("macros: {bad: [1]}") == (
        "macro 'bad' has invalid type []interface {}, must be a scalar type "
        "(string, int, float, or bool)"
    )


def test_s20_29_scalar_macro_values_load() -> None:
    tree = expand(
        """
        macros: {s: text, i: 5, f: 0.5, b: true}
        models:
          m:
            cmd: run ${s} ${i} ${f} ${b} --port ${PORT}
            metadata: {s: "${s}", i: "${i}", f: "${f}", b: "${b}"}
        """
    )
    model = tree["models"]["m"]
    assert model["cmd"] == "run text 5 0.5 true --port 5800"
    assert model["metadata"] == {"s": "text", "i": 5, "f": 0.5, "b": True}


def test_s20_29_macros_block_must_be_a_mapping() -> None:
    assert message("macros: [a, b]") == "macros must be a mapping"
    text = "models: {m: {cmd: x, macros: [a]}}"
    assert message(text) == "model m: macros must be a mapping"


def test_s20_32_self_reference() -> None:
    err = expand_error('macros:\n  recursive: "value-${recursive}"\n')
    assert err.problems[0].message == "macro 'recursive' contains self-reference"
    assert err.problems[0].line == 2


def test_s20_37_invalid_characters_in_name() -> None:
    assert message("macros: {bad.name: x}") == (
        "macro name 'bad.name' contains invalid characters, must match pattern ^[a-zA-Z0-9_-]+$"
    )


def test_s20_37_name_too_long() -> None:
    assert "exceeds maximum length" not in message("macros: {" + "a" * 63 + ": [x]}")
    assert message("macros: {" + "a" * 64 + ": x}") == (
        f"macro name '{'a' * 64}' exceeds maximum length of 63 characters"
    )


def test_s20_37_checks_run_length_then_charset_then_type_then_reserved() -> None:
    assert "exceeds maximum length" in message("macros: {" + "." * 64 + ": [x]}")
    assert "invalid characters" in message("macros: {a.b: [x]}")
    assert "self-reference" in message('macros: {PORT: "${PORT}"}')


# --- unknown macros and leftovers (22, 28, 31, 35, 36, 38, 43) --------------------------


@pytest.mark.parametrize(
    ("field", "yaml_field"),
    [
        ("cmd", "cmd: 'svr ${unknownMacro} ${PORT}'"),
        ("cmdStop", "cmdStop: 'stop ${unknownMacro}'"),
        ("proxy", "proxy: 'http://h:${unknownMacro}'"),
        ("checkEndpoint", "checkEndpoint: '/${unknownMacro}'"),
        ("filters.stripParams", "filters: {stripParams: '${unknownMacro}'}"),
    ],
)
def test_s20_22_unknown_macro_in_named_fields(field: str, yaml_field: str) -> None:
    base = "" if field == "cmd" else "    cmd: 'svr ${PORT}'\n"
    text = f"models:\n  model1:\n{base}    {yaml_field}\n"
    err = expand_error(text)
    assert err.problems[0].message == f"unknown macro '${{unknownMacro}}' found in model1.{field}"
    assert err.problems[0].line is not None


def test_s20_22_pid_only_allowed_in_cmd_stop() -> None:
    tree = expand("models: {m: {cmd: 's ${PORT}', cmdStop: 'kill ${PID}'}}")
    assert tree["models"]["m"]["cmdStop"] == "kill ${PID}"
    err = message("models: {m: {cmd: 's ${PORT} ${PID}'}}")
    assert err == "unknown macro '${PID}' found in m.cmd"


def test_s20_28_unknown_macro_in_metadata() -> None:
    err = message(
        """
        models:
          test-model:
            cmd: s ${PORT}
            metadata: {nested: {value: "${UNKNOWN_MACRO}"}}
        """
    )
    assert err == "model test-model metadata: unknown macro '${UNKNOWN_MACRO}'"


def test_s20_28_unknown_macro_in_other_model_fields_uses_dotted_path() -> None:
    text = "models: {m: {cmd: 's ${PORT}', filters: {setParams: {t: [1, '${X}']}}}}"
    assert message(text) == "model m filters.setParams.t: unknown macro '${X}'"


def test_s20_31_reference_to_later_macro_is_unknown() -> None:
    err = message(
        """
        macros:
          FIRST: "value-${SECOND}"
          SECOND: two
        models:
          m: {cmd: "echo ${FIRST} ${PORT}"}
        """
    )
    assert "unknown macro '${SECOND}'" in err


def test_s20_35_macros_in_name_and_description() -> None:
    model = expand(
        """
        macros: {family: Llama}
        models:
          m1:
            cmd: s ${PORT}
            name: "${family} ${MODEL_ID}"
            description: "a ${family} model"
        """
    )["models"]["m1"]
    assert model["name"] == "Llama m1"
    assert model["description"] == "a Llama model"


def test_s20_35_unknown_macro_in_name() -> None:
    text = "models: {m1: {cmd: 's ${PORT}', name: '${nope}'}}"
    assert message(text) == "unknown macro '${nope}' found in m1.name"


def test_s20_36_macro_value_with_undefined_reference() -> None:
    text = """
        macros: {A: "value-${UNDEFINED}"}
        models: {m: {cmd: "echo ${A} ${PORT}"}}
        """
    assert "UNDEFINED" in message(text)


def test_s20_38_model_macros_do_not_leak() -> None:
    err = message(
        """
        models:
          owner:
            macros: {LOCAL: here}
            cmd: echo ${LOCAL} ${PORT}
          other:
            cmd: echo ${LOCAL} ${PORT}
        """
    )
    assert err == "unknown macro '${LOCAL}' found in other.cmd"


def test_s20_43_pid_in_metadata_is_unknown() -> None:
    text = "models: {m: {cmd: 's ${PORT}', metadata: {pid: '${PID}'}}}"
    assert "unknown macro '${PID}'" in message(text)


def test_leftover_outside_models_uses_the_key_path() -> None:
    assert message("apiKeys: ['${nope}']") == "apiKeys[0]: unknown macro '${nope}'"
    text = "peers: {openrouter: {proxy: x, apiKey: '${KEY}'}}"
    err = expand_error(text)
    assert err.problems[0].message == "peers.openrouter.apiKey: unknown macro '${KEY}'"
    assert err.problems[0].path is None  # already part of the message


def test_leftover_in_unknown_top_level_keys_is_ignored() -> None:
    tree = expand("defs: {x: '${whatever}'}\n")
    assert tree["defs"] == {"x": "${whatever}"}


def test_leftover_env_reference_is_reported_as_not_set() -> None:
    doc = load_text("apiKeys: [x]\n", "config.yaml", {})
    data = {"apiKeys": ["${env.HIDDEN}"]}  # cannot come out of phase 1 unless unset
    with pytest.raises(ConfigError) as info:
        expand_document(data, doc.locations)
    problem = info.value.problems[0]
    assert problem.message == "apiKeys[0]: environment variable 'HIDDEN' not set"
    assert problem.line == 1


def test_invalid_reference_syntax_is_literal_text() -> None:
    tree = expand("models: {m: {cmd: 's ${PORT} ${bad.name}'}}")
    assert tree["models"]["m"]["cmd"] == "s 5800 ${bad.name}"


# --- typing and scopes (25–27, 30, 33, 34, 41, 44–47) -----------------------------------


def test_s20_25_typed_metadata() -> None:
    metadata = expand(
        """
        macros:
          PORT_NUM: 10001
          TEMP: 0.7
          ENABLED: true
          NAME: "llama model"
          CTX: 16384
        models:
          m:
            cmd: s ${PORT}
            metadata:
              port: ${PORT_NUM}
              temperature: ${TEMP}
              enabled: ${ENABLED}
              name: ${NAME}
              context: "${CTX}"
              note: "Running on port ${PORT_NUM} with temp ${TEMP} and context ${CTX}"
        """
    )["models"]["m"]["metadata"]
    assert metadata == {
        "port": 10001,
        "temperature": 0.7,
        "enabled": True,
        "name": "llama model",
        "context": 16384,
        "note": "Running on port 10001 with temp 0.7 and context 16384",
    }
    assert type(metadata["port"]) is int and type(metadata["temperature"]) is float


def test_s20_26_nested_metadata_with_port_and_lists() -> None:
    metadata = expand(
        """
        startPort: 10000
        models:
          m:
            cmd: s ${PORT}
            metadata:
              config: {port: "${PORT}", deep: [{id: "${MODEL_ID}"}]}
              tags: ["model:${MODEL_ID}", "port:${PORT}"]
        """
    )["models"]["m"]["metadata"]
    assert metadata == {
        "config": {"port": 10000, "deep": [{"id": "m"}]},
        "tags": ["model:m", "port:10000"],
    }


def test_s20_27_model_macro_overrides_global() -> None:
    metadata = expand(
        """
        macros: {TEMP: 0.5, GLOBAL_ONLY: g}
        models:
          m:
            cmd: s ${PORT}
            macros: {TEMP: 0.9, MODEL_ONLY: mo}
            metadata: {temperature: "${TEMP}", g: "${GLOBAL_ONLY}", mo: "${MODEL_ONLY}"}
        """
    )["models"]["m"]["metadata"]
    assert metadata == {"temperature": 0.9, "g": "g", "mo": "mo"}


def test_s20_30_macro_in_macro_chains() -> None:
    models = expand(
        """
        macros:
          A: value-A
          B: prefix-${A}-suffix
          base: /models
          path: ${base}/llama
          full: ${path}/model.gguf
        models:
          m1: {cmd: "echo ${B} ${PORT}"}
          m2: {cmd: "load ${full} ${PORT}"}
        """
    )["models"]
    assert models["m1"]["cmd"] == "echo prefix-value-A-suffix 5800"
    assert models["m2"]["cmd"] == "load /models/llama/model.gguf 5801"


def test_s20_30_whole_value_chain_keeps_the_type() -> None:
    tree = expand("macros: {N: 7, M: '${N}'}\nglobalTTL: '${M}'\n")
    assert tree["globalTTL"] == 7


def test_s20_33_global_macro_with_model_id() -> None:
    model = expand(
        """
        macros: {greet: "hello ${MODEL_ID}"}
        models:
          my-model: {cmd: "echo ${greet} ${PORT}"}
        """
    )["models"]["my-model"]
    assert model["cmd"] == "echo hello my-model 5800"


def test_s20_34_global_macro_sees_model_override() -> None:
    model = expand(
        """
        macros:
          tag: global
          msg: value-${tag}
        models:
          m:
            macros: {tag: model-level}
            cmd: echo ${msg}
            proxy: http://localhost:1
        """
    )["models"]["m"]
    assert model["cmd"] == "echo value-model-level"


def test_s20_41_pid_survives_through_a_macro() -> None:
    model = expand(
        """
        macros: {STOP_COMMAND: "kill ${PID}"}
        models:
          m: {cmd: "s ${PORT}", cmdStop: "${STOP_COMMAND}"}
        """
    )["models"]["m"]
    assert model["cmdStop"] == "kill ${PID}"


def test_s20_44_whole_value_macros_across_the_config() -> None:
    tree = expand(
        """
        macros:
          GLOBAL_TTL: 120
          LOADING: true
          SESSION_HEADER: X-My-Session
          MODEL_NAME: m
          CONNECT_TIMEOUT: 12
        globalTTL: "${GLOBAL_TTL}"
        sendLoadingState: "${LOADING}"
        ui: {activity: {session_id: ["${SESSION_HEADER}"]}}
        hooks: {on_startup: {preload: ["${MODEL_NAME}"]}}
        models:
          m:
            macros: {MODEL_TTL: 30}
            cmd: s ${PORT}
            ttl: "${MODEL_TTL}"
            timeouts: {connect: "${CONNECT_TIMEOUT}"}
            env: ["MODEL=${MODEL_ID}"]
        """
    )
    assert tree["globalTTL"] == 120
    assert tree["sendLoadingState"] is True
    assert tree["ui"] == {"activity": {"session_id": ["X-My-Session"]}}
    assert tree["hooks"] == {"on_startup": {"preload": ["m"]}}
    model = tree["models"]["m"]
    assert model["ttl"] == 30
    assert model["timeouts"] == {"connect": 12}
    assert model["env"] == ["MODEL=m"]


def test_s20_44_partial_interpolation_stays_a_string() -> None:
    tree = expand("macros: {X: 5}\nmodels: {m: {cmd: 's ${PORT}', ttl: '1${X}'}}")
    assert tree["models"]["m"]["ttl"] == "15"


def test_s20_45_mapping_keys_are_never_substituted() -> None:
    model = expand(
        """
        macros: {KEY: k}
        models:
          m:
            cmd: s ${PORT}
            metadata: {"${KEY}": value}
        """
    )["models"]["m"]
    assert model["metadata"] == {"${KEY}": "value"}


def test_s20_46_capabilities_macros() -> None:
    models = expand(
        """
        macros: {default_ctx: 98304, img_modality: image, has_tools: true}
        models:
          a:
            cmd: s ${PORT}
            capabilities:
              context: ${default_ctx}
              in: [text, "${img_modality}"]
              tools: ${has_tools}
          b:
            cmd: s ${PORT}
            macros: {default_ctx: 65536}
            capabilities: {context: "${default_ctx}"}
        """
    )["models"]
    assert models["a"]["capabilities"] == {
        "context": 98304,
        "in": ["text", "image"],
        "tools": True,
    }
    assert models["b"]["capabilities"] == {"context": 65536}


def test_s20_46_unknown_macro_in_capabilities() -> None:
    text = "models: {m: {cmd: 's ${PORT}', capabilities: {out: ['${undefined_macro}']}}}"
    assert message(text) == "model m capabilities: unknown macro '${undefined_macro}'"


def test_s20_39_anchor_expands_per_model() -> None:
    models = expand(
        """
        defs:
          model: &model
            cmd: echo ${LOCAL} --port ${PORT}
            env: ["LOCAL=${LOCAL}"]
            metadata: {local: "${LOCAL}"}
        models:
          first:
            <<: *model
            macros: {LOCAL: first-value}
          second:
            <<: *model
            macros: {LOCAL: second-value}
        """
    )["models"]
    assert models["first"]["cmd"] == "echo first-value --port 5800"
    assert models["second"]["cmd"] == "echo second-value --port 5801"
    assert models["first"]["env"] == ["LOCAL=first-value"]
    assert models["second"]["metadata"] == {"local": "second-value"}


def test_s20_47_anchored_capabilities_with_model_macros() -> None:
    models = expand(
        """
        defs:
          caps: &caps
            context: ${default_ctx}
            tools: true
        models:
          small:
            cmd: s ${PORT}
            macros: {default_ctx: 4096}
            capabilities: {<<: *caps}
          large:
            cmd: s ${PORT}
            macros: {default_ctx: 8192}
            capabilities: *caps
        """
    )["models"]
    assert models["small"]["capabilities"] == {"context": 4096, "tools": True}
    assert models["large"]["capabilities"] == {"context": 8192, "tools": True}


# --- the tree contract ------------------------------------------------------------------


def test_expand_document_does_not_modify_its_input() -> None:
    doc = load_text("macros: {a: x}\nmodels: {m: {cmd: 'run ${a} ${PORT}'}}\n", "c.yaml", {})
    before = repr(doc.data)
    expand_document(doc.data, doc.locations)
    assert repr(doc.data) == before


def test_null_proxy_gets_the_default_and_null_model_fails_on_it() -> None:
    tree = expand("models: {m: {cmd: 's ${PORT}', proxy: ~}}")
    assert tree["models"]["m"]["proxy"] == "http://localhost:5800"
    assert "proxy uses ${PORT} but cmd does not" in message("models: {m: ~}")


def test_global_macros_apply_to_peers_but_not_to_the_macros_block() -> None:
    tree = expand(
        """
        macros: {KEY: secret, MAX_TOKENS: 4096}
        peers:
          p:
            proxy: http://x
            apiKey: ${KEY}
            filters: {setParams: {max_tokens: "${MAX_TOKENS}"}}
        """
    )
    assert tree["peers"]["p"]["apiKey"] == "secret"
    assert tree["peers"]["p"]["filters"]["setParams"] == {"max_tokens": 4096}
    assert tree["macros"] == {"KEY": "secret", "MAX_TOKENS": 4096}


def test_errors_carry_file_line_and_path() -> None:
    err = expand_error("models:\n  m:\n    cmd: s ${PORT}\n    name: '${x}'\n")
    problem = err.problems[0]
    assert (problem.file, problem.line, problem.path) == ("config.yaml", 4, "models.m.name")
    assert str(problem) == ("config.yaml:4: models.m.name: unknown macro '${x}' found in m.name")
