"""The typed schema: llama-swap's decode strictness, readable errors, warnings, JSON Schema.

Scalars must decode exactly as llama-swap's YAML decoder does (§2.1), every
type error must name file, line and key path in plain words, and unknown keys
must be warnings that point at the key that was probably meant.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from modelswap.config import (
    Config,
    ConfigDocument,
    FifoSettings,
    Filters,
    ModelConfig,
    ModelFilters,
    config_json_schema,
    load_config,
    load_config_text,
)
from modelswap.config.schema_types import (
    FALSE_WORDS,
    TRUE_WORDS,
    go_duration_text,
    parse_duration,
)
from modelswap.config.warnings import closest_key, schema_keys, walk_keys
from modelswap.errors import ConfigError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "llama-swap-example.yaml"


def load(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), environ={}).config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [str(p) for p in info.value.problems]


def decode(data: dict[str, Any]) -> ConfigDocument:
    return ConfigDocument.model_validate(data, by_alias=True, by_name=False)


# --- §2.1 booleans -------------------------------------------------------------------


@pytest.mark.parametrize("word", sorted(TRUE_WORDS))
def test_yaml11_true_words_are_true_in_boolean_fields(word: str) -> None:
    config = load(f"""
        sendLoadingState: {word}
        includeAliasesInList: "{word}"
        models:
          m: {{cmd: "x ${{PORT}}", unlisted: {word}, capabilities: {{tools: {word}}}}}
        routing: {{router: {{settings: {{groups: {{g: {{swap: {word}, members: [m]}}}}}}}}}}
    """)
    assert config.send_loading_state is True
    assert config.include_aliases_in_list is True
    assert config.models["m"].unlisted is True
    assert config.models["m"].capabilities.tools is True
    assert config.routing.groups["g"].swap is True


@pytest.mark.parametrize("word", sorted(FALSE_WORDS))
def test_yaml11_false_words_are_false_in_boolean_fields(word: str) -> None:
    config = load(f"""
        performance: {{disabled: {word}}}
        groups: {{g: {{exclusive: '{word}', persistent: {word}}}}}
        models:
          m: {{cmd: "x ${{PORT}}", compat: {{ignoreWebsockets: {word}}}}}
    """)
    assert config.performance.disabled is False
    assert config.routing.groups["g"].exclusive is False
    assert config.models["m"].compat.ignore_websockets is False


@pytest.mark.parametrize("value", ['"true"', "'false'", '"True"', "maybe", "1", "0", "yess", "[]"])
def test_other_values_in_boolean_fields_are_errors(value: str) -> None:
    (message,) = problems(f"sendLoadingState: {value}")
    assert message.startswith("config.yaml:1: sendLoadingState: must be a boolean (true/false)")


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "false"])
def test_plain_yaml_booleans_are_booleans(value: str) -> None:
    assert load(f"logRequests: {value}").log_requests is (value.lower() == "true")


# --- §2.1 integers, floats, strings, durations --------------------------------------------


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ('"5800"', 'string "5800"'),
        ("abcd", 'string "abcd"'),
        ("true", "boolean true"),
        ("1.5", "float 1.5"),
        ("[1]", "list"),
        ("{a: 1}", "mapping"),
    ],
)
def test_integer_fields_reject_non_integers(value: str, got: str) -> None:
    assert problems(f"startPort: {value}") == [
        f"config.yaml:1: startPort: must be an integer, got {got}"
    ]


def test_integral_floats_and_hex_decode_as_integers() -> None:
    assert load("startPort: 6000.0").start_port == 6000
    assert load("startPort: 0x1770").start_port == 6000


def test_null_means_default_not_zero() -> None:
    config = load("""
        globalTTL: 30
        healthCheckTimeout: ~
        models:
          m:
            cmd: x ${PORT}
            ttl:
            aliases: ~
    """)
    assert config.health_check_timeout == 120
    assert config.models["m"].ttl == 30
    assert config.models["m"].aliases == ()


def test_string_fields_take_any_scalar_as_text() -> None:
    config = load("""
        models:
          m:
            cmd: x ${PORT}
            name: 7
            description: 0.5
            useModelName: true
            aliases: [1, 2.0]
    """)
    model = config.models["m"]
    assert (model.name, model.description, model.use_model_name) == ("7", "0.5", "true")
    assert model.aliases == ("1", "2")


def test_string_fields_reject_collections() -> None:
    assert problems("logLevel: [debug]") == ["config.yaml:1: logLevel: must be a string, got list"]


def test_numeric_keys_of_id_maps_become_strings() -> None:
    config = load("models: {1234: {cmd: 'x ${PORT}'}}")
    assert list(config.models) == ["1234"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("1m30s", 90.0), ("90m", 5400.0), ("1h", 3600.0), ("1.5s", 1.5), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "1m 30s", "abc"])
def test_invalid_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_bare_integer_is_not_a_duration() -> None:
    for value in ("30", "0"):
        (message,) = problems(f"performance: {{every: {value}}}")
        assert message == (
            "config.yaml:1: performance.every: must be a duration string such as "
            f'"5s" or "1m30s", got integer {value}'
        )
    assert "invalid duration" in problems("performance: {every: soon}")[0]


# --- errors: every type error, located, in words ---------------------------------------


def test_all_type_errors_of_one_decode_are_reported_in_file_order() -> None:
    found = problems("""
        startPort: abcd
        models:
          m:
            cmd: x ${PORT}
            ttl: "5"
            capabilities: {context: big}
        apiKeys: key
        profiles:
          old: [m]
    """)
    assert found == [
        'config.yaml:2: startPort: must be an integer, got string "abcd"',
        'config.yaml:6: models.m.ttl: must be an integer, got string "5"',
        'config.yaml:7: models.m.capabilities.context: must be an integer, got string "big"',
        'config.yaml:8: apiKeys: must be a list, got string "key"',
        "config.yaml:10: profiles.old: profile must be a mapping with description and pins; "
        "the legacy list syntax is no longer supported",
    ]


def test_error_messages_never_leak_pydantic_wording() -> None:
    found = problems("""
        models: [a, b]
        ui: {activity: {session_id: {a: 1}}}
        routing: {scheduler: {settings: {fifo: {maxWait: -1}}}}
    """)
    assert found == [
        "config.yaml:2: models: must be a mapping, got list",
        "config.yaml:3: ui.activity.session_id: must be a list, got mapping",
        "config.yaml:4: routing.scheduler.settings.fifo.maxWait: must be >= 0",
    ]
    assert not any("Input should" in p or "pydantic" in p for p in found)


def test_validation_errors_carry_file_and_line() -> None:
    (message,) = problems("""
        models:
          qwen:
            cmd: x ${PORT}
            ttl: -5
    """)
    assert message == "config.yaml:5: model qwen: invalid TTL value -5"


def test_top_level_must_be_a_mapping() -> None:
    assert "top-level YAML must be a mapping" in problems("- a\n- b")[0]


# --- modelswap extensions: maxWait / minResidency ----------------------------------------


def test_max_wait_and_min_residency_default_off() -> None:
    routing = load("").routing
    assert (routing.max_wait, routing.min_residency) == (0.0, 0.0)


def test_min_residency_defaults_to_a_third_of_max_wait() -> None:
    routing = load("routing: {scheduler: {settings: {fifo: {maxWait: 30}}}}").routing
    assert (routing.max_wait, routing.min_residency) == (30.0, 10.0)


def test_min_residency_can_be_set() -> None:
    text = "routing: {scheduler: {settings: {fifo: {maxWait: 7.5, minResidency: 0}}}}"
    routing = load(text).routing
    assert (routing.max_wait, routing.min_residency) == (7.5, 0.0)
    assert (
        "minResidency: must be >= 0"
        in problems("routing: {scheduler: {settings: {fifo: {minResidency: -1}}}}")[0]
    )


def test_extension_keys_are_documented() -> None:
    fields = FifoSettings.model_fields
    assert "anti-starvation" in (fields["max_wait"].description or "")
    assert "maxWait/3" in (fields["min_residency"].description or "")


# --- filters -------------------------------------------------------------------------


def test_filter_sanitisation() -> None:
    filters = Filters(
        strip_params="model, top_k, top_k, temperature, temperature, top_p, , ,",
        set_params={"model": "x", "b": 2, "a": 1},
        set_params_by_id={"fast": {"model": "y", "z": 0}},
    )
    assert filters.strip_params_list == ("temperature", "top_k", "top_p")
    assert filters.set_params_items == (("a", 1), ("b", 2))
    assert filters.set_params_for("fast") == (("z", 0),)
    assert filters.set_params_for("other") == ()


def test_legacy_strip_params_only_when_strip_params_is_empty() -> None:
    legacy = ModelFilters.model_validate({"strip_params": "a"}, by_alias=True, by_name=False)
    assert legacy.strip_params_list == ("a",)
    both = ModelFilters.model_validate(
        {"stripParams": "b", "strip_params": "a"}, by_alias=True, by_name=False
    )
    assert both.strip_params_list == ("b",)


# --- schema objects --------------------------------------------------------------------


def test_models_are_frozen() -> None:
    model = ModelConfig(cmd="x")
    with pytest.raises(ValidationError):
        model.cmd = "y"  # type: ignore[misc]


def test_snake_case_names_work_in_code_but_not_in_yaml() -> None:
    assert ModelConfig(check_endpoint="none").check_endpoint == "none"
    assert decode({"start_port": 1}).start_port == 5800


def test_config_json_schema_serialises_with_yaml_keys() -> None:
    schema = config_json_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    top = schema["properties"]
    for key in ("healthCheckTimeout", "startPort", "globalTTL", "models", "routing", "peers"):
        assert key in top
    model = schema["$defs"]["ModelConfig"]["properties"]
    assert {"cmdStop", "checkEndpoint", "sendLoadingState", "concurrencyLimit"} <= set(model)
    assert schema["$defs"]["PerformanceConfig"]["properties"]["every"]["default"] == "5s"
    # a whole-value macro is allowed where a typed value belongs
    assert any(
        option.get("pattern", "").startswith("^\\$\\{")
        for option in schema["$defs"]["ModelConfig"]["properties"]["ttl"]["anyOf"]
    )


# --- unknown keys -----------------------------------------------------------------------


def test_unknown_key_warning_with_line_and_suggestion() -> None:
    loaded = load_config_text(
        textwrap.dedent("""
            models:
              qwen:
                cmd: x ${PORT}
                tll: 300
        """),
        environ={},
    )
    assert [str(w) for w in loaded.warnings] == [
        'config.yaml:5: models.qwen.tll: unknown key (did you mean "ttl"?)'
    ]
    assert loaded.config.models["qwen"].ttl == 0  # the typo did nothing, as in llama-swap


def test_unknown_keys_at_every_level() -> None:
    loaded = load_config_text(
        textwrap.dedent("""
            healthcheckTimeout: 30
            start_port: 6000
            zzz: 1
            models:
              m:
                cmd: x ${PORT}
                filters: {stripParam: a}
                timeouts: {conect: 1}
            peers:
              p: {proxy: http://h, models: [a], filters: {strip_params: b}}
            routing:
              router: {settings: {groups: {g: {member: [m]}}}}
              scheduler: {settings: {fifo: {max_wait: 3}}}
            hooks: {onStartup: {preload: [m]}}
        """),
        environ={},
    )
    assert [(w.line, w.path, w.message) for w in loaded.warnings] == [
        (2, "healthcheckTimeout", 'unknown key (did you mean "healthCheckTimeout"?)'),
        (3, "start_port", 'unknown key (did you mean "startPort"?)'),
        (4, "zzz", "unknown key"),
        (8, "models.m.filters.stripParam", 'unknown key (did you mean "stripParams"?)'),
        (9, "models.m.timeouts.conect", 'unknown key (did you mean "connect"?)'),
        (11, "peers.p.filters.strip_params", 'unknown key (did you mean "stripParams"?)'),
        (13, "routing.router.settings.groups.g.member", 'unknown key (did you mean "members"?)'),
        (14, "routing.scheduler.settings.fifo.max_wait", 'unknown key (did you mean "maxWait"?)'),
        (15, "hooks.onStartup", 'unknown key (did you mean "on_startup"?)'),
    ]
    assert loaded.config.start_port == 5800


def test_free_form_maps_and_anchor_holders_are_not_checked() -> None:
    loaded = load_config_text(
        textwrap.dedent("""
            defs:
              base: &base {cmd: "x ${PORT}"}
            x-common: {anything: 1}
            macros: {whatever: 1}
            matrix:
              vars: {g: m}
              evict_costs: {g: 2}
              sets: {any-name: g}
            models:
              m:
                <<: *base
                macros: {local: 1}
                metadata: {free: {form: true}}
                env: [A=1]
                filters:
                  setParams: {anything: 1}
                  setParamsByID: {m-fast: {whatever: 2}}
            profiles: {p: {pins: {foo: m}}}
            selectors: {s: {strategy: pin, targets: [m], metadata: {x: 1}}}
        """),
        environ={},
    )
    assert loaded.warnings == ()


def test_closest_key() -> None:
    assert closest_key("tll", ["ttl", "cmd"]) == "ttl"
    assert closest_key("TTL", ["ttl"]) == "ttl"
    assert closest_key("send_loading_state", ["sendLoadingState"]) == "sendLoadingState"
    assert closest_key("zzz", ["ttl", "cmd"]) is None


# --- the llama-swap example config --------------------------------------------------------

# Keys the example deliberately leaves out: the legacy top-level routing forms
# (they cannot be combined with `routing.router`; tested on their own), the
# per-model healthCheckTimeout (always overwritten) and modelswap's own
# extensions (scheduler, retryOnCrash, ollama: not llama-swap keys).
NOT_IN_EXAMPLE = {
    ("ConfigDocument", "groups"),
    ("ConfigDocument", "matrix"),
    ("ModelConfig", "healthCheckTimeout"),
    ("FifoSettings", "maxWait"),
    ("FifoSettings", "minResidency"),
    ("ModelConfig", "retryOnCrash"),
    ("ConfigDocument", "ollama"),
    ("OllamaConfig", "listen"),
    ("ModelConfig", "resources"),  # modelswap extension: memory-aware eviction
    ("RoutingSection", "resources"),
}


def test_llama_swap_example_loads_unchanged_without_warnings(tmp_path: Path) -> None:
    loaded = load_config(
        str(FIXTURE), environ={"OPENROUTER_API_KEY": "sk-or-test", "STORE_DIR": str(tmp_path)}
    )
    assert loaded.warnings == ()
    config = loaded.config
    assert set(config.models) == {"llama", "qwen", "reranker", "docker-model", "comfyui_auto"}
    llama = config.models["llama"]
    assert llama.proxy == "http://127.0.0.1:10002"
    assert llama.capabilities.context == 4096
    assert "llama:creative" in llama.aliases
    assert config.peers["openrouter"].api_key == "sk-or-test"
    assert config.hooks.on_startup.preload == ("llama", "llama")
    assert config.routing.router_use == "group"
    assert config.store is not None and config.store.path == f"{tmp_path}/activity.db"


def test_llama_swap_example_uses_every_key(tmp_path: Path) -> None:
    loaded = load_config(
        str(FIXTURE), environ={"OPENROUTER_API_KEY": "k", "STORE_DIR": str(tmp_path)}
    )
    used = {(v.section.__name__, v.key) for v in walk_keys(loaded.expanded) if v.known}
    expected = schema_keys() - NOT_IN_EXAMPLE
    assert expected - used == set()


# --- properties -----------------------------------------------------------------------------


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_go_duration_text_round_trips(nanos: int) -> None:
    seconds = nanos / 1e9
    parsed = parse_duration(go_duration_text(seconds))
    assert parsed is not None
    assert parsed == pytest.approx(seconds, abs=1e-9)


@given(st.text(max_size=8))
def test_only_yaml11_words_decode_as_booleans(text: str) -> None:
    data = {"sendLoadingState": text}
    if text in TRUE_WORDS | FALSE_WORDS:
        assert decode(data).send_loading_state is (text in TRUE_WORDS)
    else:
        with pytest.raises(ValidationError):
            decode(data)


def test_json_schema_accepts_the_example_as_written_and_flags_type_errors() -> None:
    import jsonschema

    from modelswap.config.yaml_io import parse_yaml

    validator = jsonschema.Draft202012Validator(config_json_schema())
    written = parse_yaml(FIXTURE.read_text(), str(FIXTURE)).data
    assert list(validator.iter_errors(written)) == []
    bad = {"startPort": "abc", "models": {"m": {"ttl": "x", "unlisted": "true"}}}
    flagged = sorted(tuple(e.absolute_path) for e in validator.iter_errors(bad))
    assert flagged == [("models", "m", "ttl"), ("models", "m", "unlisted"), ("startPort",)]
