"""Acceptance scenarios of config spec §20 that are about the typed config.

Numbered as in the spec (1–4, 7–16, 19, 55–86); the macro, env and multi-file
scenarios are covered at tree level in test_macros.py / test_yaml_io.py.
Every config goes through the real loader from text with an explicit, empty
environment.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelswap.config import DEFAULT_GROUP, DEFAULT_IGNORE_PATH, Config, load_config_text
from modelswap.errors import ConfigError


def load(text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config_text(textwrap.dedent(text), environ=environ or {}).config


def error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    return str(info.value)


def first_message(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.problems[0].message


# --- defaults and basics -----------------------------------------------------------


def test_s20_1_empty_document_gets_every_default() -> None:
    config = load("")
    assert config.start_port == 5800
    assert config.health_check_timeout == 120
    assert config.log_level == "info"
    assert config.log_to_stdout == "proxy"
    assert config.metrics_max_in_memory == 1000
    assert config.capture_buffer == 5
    assert config.unload_timeout == 10
    assert (config.performance.disabled, config.performance.every) == (False, 5.0)
    assert config.ui.activity.session_id == ("X-Session-ID", "X-Litellm-Session-Id")
    assert config.upstream.ignore_paths == (DEFAULT_IGNORE_PATH,)
    assert config.routing.router_use == "group"
    assert config.routing.scheduler_use == "fifo"
    assert DEFAULT_GROUP in config.routing.groups
    assert config.store is None
    assert config.models == {}


def test_s20_2_model_defaults() -> None:
    config = load("""
        models:
          model1:
            cmd: path/to/cmd --port ${PORT}
    """)
    model = config.models["model1"]
    assert model.cmd == "path/to/cmd --port 5800"
    assert model.proxy == "http://localhost:5800"
    assert model.check_endpoint == "/health"
    assert model.aliases == ()
    assert model.env == ()
    assert model.ttl == 0
    assert model.unload_timeout == 10
    assert model.unlisted is False
    assert model.use_model_name == ""
    assert model.concurrency_limit == 0
    default = config.routing.groups[DEFAULT_GROUP]
    assert (default.swap, default.exclusive, default.persistent) == (True, True, False)
    assert default.members == ("model1",)


@pytest.mark.parametrize(("configured", "effective"), [(15, 15), (3, 15), (300, 300)])
def test_s20_3_health_check_timeout_floor_and_copy(configured: int, effective: int) -> None:
    config = load(f"""
        healthCheckTimeout: {configured}
        models:
          a: {{cmd: "x --port ${{PORT}}", healthCheckTimeout: 999}}
          b: {{cmd: "y --port ${{PORT}}"}}
    """)
    assert config.health_check_timeout == effective
    assert {m.health_check_timeout for m in config.models.values()} == {effective}


def test_s20_4_start_port() -> None:
    assert load("startPort: 1000").start_port == 1000
    assert "startPort: must be an integer" in error("startPort: abcd")
    assert "startPort must be greater than 1" in error("startPort: -99")


def test_s20_7_global_ttl() -> None:
    config = load("""
        globalTTL: 300
        models:
          inherit: {cmd: "a ${PORT}"}
          never: {cmd: "b ${PORT}", ttl: 0}
          own: {cmd: "c ${PORT}", ttl: 600}
          explicit-default: {cmd: "d ${PORT}", ttl: -1}
    """)
    assert {k: m.ttl for k, m in config.models.items()} == {
        "inherit": 300,
        "never": 0,
        "own": 600,
        "explicit-default": 300,
    }
    assert "globalTTL must be >= 0" in error("globalTTL: -1")
    assert "model m: invalid TTL value -2" in error("models: {m: {cmd: 'a ${PORT}', ttl: -2}}")


def test_s20_8_unload_timeout() -> None:
    config = load("""
        unloadTimeout: 25
        models:
          inherit: {cmd: "a ${PORT}"}
          own: {cmd: "b ${PORT}", unloadTimeout: 45}
          zero: {cmd: "c ${PORT}", unloadTimeout: 0}
    """)
    assert {k: m.unload_timeout for k, m in config.models.items()} == {
        "inherit": 25,
        "own": 45,
        "zero": 25,
    }
    assert "unloadTimeout must be >= 0" in error("unloadTimeout: -1")
    assert "model model1: invalid unloadTimeout value -1" in error(
        "models: {model1: {cmd: 'a ${PORT}', unloadTimeout: -1}}"
    )
    assert load("unloadTimeout: 0").unload_timeout == 10


def test_s20_9_send_loading_state_inherits_unless_set() -> None:
    config = load("""
        sendLoadingState: true
        models:
          model1: {cmd: "a ${PORT}", sendLoadingState: false}
          model2: {cmd: "b ${PORT}"}
    """)
    assert config.models["model1"].send_loading_state is False
    assert config.models["model2"].send_loading_state is True
    assert config.models["model2"].loading_state is True


def test_s20_10_model_timeouts_partial_and_defaults() -> None:
    config = load("""
        models:
          custom:
            cmd: a ${PORT}
            timeouts: {connect: 45, responseHeader: 120}
          plain: {cmd: "b ${PORT}"}
          zero:
            cmd: c ${PORT}
            timeouts: {connect: 0}
    """)
    custom = config.models["custom"].timeouts
    assert (custom.connect, custom.response_header, custom.keepalive) == (45, 120, 30)
    plain = config.models["plain"].timeouts
    assert (
        plain.connect,
        plain.keepalive,
        plain.response_header,
        plain.tls_handshake,
        plain.expect_continue,
        plain.idle_conn,
    ) == (30, 30, 0, 10, 1, 90)
    assert config.models["zero"].timeouts.connect == 0


def test_s20_11_peer_timeout_defaults() -> None:
    config = load("""
        peers:
          remote: {proxy: "http://10.0.0.1:8080", models: [m]}
    """)
    t = config.peers["remote"].timeouts
    assert (
        t.connect,
        t.keepalive,
        t.response_header,
        t.tls_handshake,
        t.expect_continue,
        t.idle_conn,
    ) == (30, 30, 60, 10, 1, 90)


@pytest.mark.parametrize(("limit", "expected"), [(None, 50), (10, 50), (50, 50), (60, 60)])
def test_s20_12_comfyui_auto_is_special(limit: int | None, expected: int) -> None:
    limit_line = "" if limit is None else f"concurrencyLimit: {limit}"
    config = load(f"""
        models:
          comfyui_auto:
            cmd: comfy --port ${{PORT}}
            compat: {{ignoreWebsockets: false}}
            {limit_line}
          other:
            cmd: other --port ${{PORT}}
            concurrencyLimit: 10
    """)
    comfy = config.models["comfyui_auto"]
    assert comfy.concurrency_limit == expected
    assert comfy.compat.ignore_websockets is True
    other = config.models["other"]
    assert (other.concurrency_limit, other.compat.ignore_websockets) == (10, False)


# --- aliases and setParamsByID -----------------------------------------------------


def test_s20_13_duplicate_explicit_alias() -> None:
    assert "duplicate alias m1 found in model: model" in error("""
        models:
          model1: {cmd: "a ${PORT}", aliases: [m1]}
          model2: {cmd: "b ${PORT}", aliases: [m1, m2]}
    """)


def test_s20_14_set_params_by_id_keys_become_aliases() -> None:
    config = load("""
        models:
          model1:
            cmd: a ${PORT}
            filters:
              setParamsByID:
                "${MODEL_ID}:high": {reasoning_effort: high}
                "${MODEL_ID}:low": {reasoning_effort: low}
    """)
    assert config.resolve_model_id("model1:high") == "model1"
    assert config.resolve_model_id("model1:low") == "model1"
    assert set(config.models["model1"].aliases) == {"model1:high", "model1:low"}
    assert config.models["model1"].filters.set_params_for("model1:high") == (
        ("reasoning_effort", "high"),
    )


def test_s20_15_set_params_by_id_key_equal_to_model_id() -> None:
    assert "conflicts with an existing model ID" in error("""
        models:
          model1:
            cmd: a ${PORT}
            filters: {setParamsByID: {model2: {a: 1}}}
          model2: {cmd: "b ${PORT}"}
    """)


def test_s20_16_set_params_by_id_key_shared_by_two_models() -> None:
    message = error("""
        models:
          model1:
            cmd: a ${PORT}
            filters: {setParamsByID: {shared-alias: {a: 1}}}
          model2:
            cmd: b ${PORT}
            filters: {setParamsByID: {shared-alias: {a: 2}}}
    """)
    assert "duplicate alias" in message
    assert "already used by model model1" in message


def test_s20_19_set_params_by_id_key_equal_to_peer_fqn() -> None:
    assert "conflicts with fully qualified peer model name" in error("""
        models:
          local:
            cmd: a ${PORT}
            filters: {setParamsByID: {peer/model: {a: 1}}}
        peers:
          peer: {proxy: "http://10.0.0.2", models: [model]}
    """)


# --- API keys, peers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ('[""]', "empty api key found in apiKeys"),
        ('["   "]', "apiKeys[0]: api key cannot contain spaces"),
        ('[" key123"]', "apiKeys[0]: api key cannot contain spaces"),
        ('["key123 "]', "apiKeys[0]: api key cannot contain spaces"),
        ('["key 123"]', "apiKeys[0]: api key cannot contain spaces"),
        ('["valid-key", "bad key"]', "apiKeys[1]: api key cannot contain spaces"),
        ('["valid-key", "", "x"]', "empty api key found in apiKeys"),
    ],
)
def test_s20_55_api_key_rules(keys: str, message: str) -> None:
    assert first_message(f"apiKeys: {keys}") == message


def test_s20_55_api_keys_valid_and_tab_allowed() -> None:
    assert load('apiKeys: ["a", "b\\tc"]').api_keys == ("a", "b\tc")


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ("{models: [m]}", "proxy is required"),
        ('{proxy: "", models: [m]}', "proxy is required"),
        ('{proxy: "://invalid", models: [m]}', "invalid peer proxy URL"),
        ('{proxy: "http://h:1"}', "peer models can not be empty"),
        ('{proxy: "http://h:1", models: []}', "peer models can not be empty"),
    ],
)
def test_s20_56_peer_requirements(peer: str, message: str) -> None:
    assert message in error(f"peers: {{p: {peer}}}")


def test_s20_57_peer_proxy_url_parts() -> None:
    config = load("peers: {p: {proxy: 'http://192.168.1.23:8080/api', models: [m, m]}}")
    parts = urlsplit(config.peers["p"].proxy)
    assert (parts.netloc, parts.scheme, parts.path) == ("192.168.1.23:8080", "http", "/api")
    assert config.peers["p"].models == ("m",)  # duplicates ignored


def test_s20_58_peer_fields_take_env_and_global_macros() -> None:
    config = load(
        """
        macros:
          KEY: from-macro
          MAX_TOKENS: 4096
          STRIP_LIST: "temperature, top_p"
        peers:
          env-peer:
            proxy: http://h1
            apiKey: ${env.OPENROUTER_API_KEY}
            models: [a]
          macro-peer:
            proxy: http://h2
            apiKey: ${KEY}
            models: [b]
            filters:
              stripParams: "${STRIP_LIST}"
              setParams: {max_tokens: "${MAX_TOKENS}"}
          static-peer:
            proxy: http://h3
            apiKey: sk-static
            models: [c]
        """,
        environ={"OPENROUTER_API_KEY": "sk-env"},
    )
    peers = config.peers
    assert [peers[p].api_key for p in ("env-peer", "macro-peer", "static-peer")] == [
        "sk-env",
        "from-macro",
        "sk-static",
    ]
    filters = peers["macro-peer"].filters
    assert filters.strip_params_list == ("temperature", "top_p")
    assert filters.set_params == {"max_tokens": 4096}
    unknown_key = error("peers: {openrouter: {proxy: http://h, apiKey: '${NOPE}', models: [a]}}")
    assert "peers.openrouter.apiKey" in unknown_key
    assert "unknown macro" in unknown_key
    assert "peers.openrouter.filters.setParams" in error(
        "peers: {openrouter: {proxy: http://h, models: [a], filters: {setParams: {v: '${NO}'}}}}"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("models: {peer/model: {cmd: 'a ${PORT}'}}", 'model ID "peer/model" conflicts'),
        (
            "models: {m: {cmd: 'a ${PORT}', aliases: [peer/model]}}",
            'model m alias "peer/model" conflicts',
        ),
        (
            "selectors: {peer/model: {strategy: pin, targets: [model]}}",
            'selector ID "peer/model" conflicts',
        ),
        (
            "profiles: {p: {pins: {peer/model: model}}}",
            'profile p pin "peer/model" conflicts',
        ),
    ],
)
def test_s20_59_peer_namespace_conflicts(extra: str, message: str) -> None:
    text = f"peers: {{peer: {{proxy: http://h, models: [model]}}}}\n{extra}\n"
    assert message + " with fully qualified peer model name" in error(text)


def test_s20_59_ambiguous_fqn() -> None:
    assert first_message("""
        peers:
          a: {proxy: http://h1, models: [b/c]}
          a/b: {proxy: http://h2, models: [c]}
    """) == (
        'peer model name "a/b/c" is ambiguous between peers.a model "b/c" and peers.a/b model "c"'
    )


# --- filters, capabilities, misc ---------------------------------------------------


@pytest.mark.parametrize("key", ["stripParams", "strip_params"])
def test_s20_60_strip_params_sanitised(key: str) -> None:
    config = load(f"""
        macros:
          default_strip: "temperature, top_p"
        models:
          m:
            cmd: a ${{PORT}}
            filters:
              {key}: "model, top_k, top_k, temperature, ${{default_strip}}, , ,"
    """)
    filters = config.models["m"].filters
    assert filters.strip_params == "model, top_k, top_k, temperature, temperature, top_p, , ,"
    assert filters.strip_params_list == ("temperature", "top_k", "top_p")


def test_s20_61_set_params_sorted_without_model() -> None:
    config = load("""
        models:
          m:
            cmd: a ${PORT}
            filters:
              setParams: {top_p: 0.9, temperature: 0.7, model: x, stop: ["<|end|>"]}
          only-model:
            cmd: b ${PORT}
            filters: {setParams: {model: x}}
    """)
    items = config.models["m"].filters.set_params_items
    assert [k for k, _ in items] == ["stop", "temperature", "top_p"]
    assert dict(items)["stop"] == ["<|end|>"]
    assert config.models["only-model"].filters.set_params_items == ()


def test_s20_62_capabilities() -> None:
    config = load("""
        models:
          full:
            cmd: a ${PORT}
            capabilities: {in: [text, image], out: [text], tools: true, reranker: false,
                           context: 8192}
          tools-ctx:
            cmd: b ${PORT}
            capabilities: {tools: true, context: 8192}
          none: {cmd: "c ${PORT}"}
          tools-off:
            cmd: d ${PORT}
            capabilities: {tools: false}
          reranker-off:
            cmd: e ${PORT}
            capabilities: {reranker: false}
          reranker:
            cmd: f ${PORT}
            capabilities: {reranker: true}
    """)
    caps = {k: m.capabilities for k, m in config.models.items()}
    assert not caps["full"].is_empty
    assert caps["full"].input_modalities == ("text", "image")
    assert not caps["tools-ctx"].is_empty
    assert caps["tools-ctx"].input_modalities == caps["tools-ctx"].output_modalities == ()
    assert caps["none"].is_empty and caps["tools-off"].is_empty and caps["reranker-off"].is_empty
    assert not caps["reranker"].is_empty
    bad_modality = first_message(
        "models: {m: {cmd: 'a ${PORT}', capabilities: {in: [text, video]}}}"
    )
    assert bad_modality == (
        'model m: capabilities.in: invalid modality "video", must be one of: text, audio, image'
    )
    assert "capabilities.context" in error(
        "models: {m: {cmd: 'a ${PORT}', capabilities: {context: -1}}}"
    )


def test_s20_63_session_id_normalisation() -> None:
    config = load("ui: {activity: {session_id: [' X-Trace-ID ', '', x-trace-id, X-Session-ID]}}")
    assert config.ui.activity.session_id == ("X-Trace-ID", "X-Session-ID")
    assert load("ui: {activity: {session_id: []}}").ui.activity.session_id == ()


def test_s20_64_performance() -> None:
    assert load("performance: {every: 30s}").performance.every == 30.0
    disabled = load("performance: {disabled: true}").performance
    assert (disabled.disabled, disabled.every) == (True, 5.0)
    assert "every must be at least 5s" in error("performance: {every: 4s}")
    assert load("performance: {every: 1m30s}").performance.every == 90.0
    assert load("performance: {every: 0s}").performance.every == 5.0
    loaded = load_config_text("performance: {enable: true}", environ={})
    assert loaded.config.performance.disabled is False
    assert [str(w) for w in loaded.warnings] == [
        'config.yaml:1: performance.enable: unknown key (did you mean "disabled"?)'
    ]


@pytest.mark.parametrize("text", ["", "upstream: {}", "upstream: {ignorePaths: []}"])
def test_s20_65_default_ignore_pattern(text: str) -> None:
    (pattern,) = load(text).upstream.ignore_patterns
    for path in ("/foo.js", "/bar/baz.json", "/static/img.png", "/notes.txt", "/favicon.ico"):
        assert pattern.search(path), path
    for path in ("/v1/chat/completions", "/v1/models", "/health"):
        assert not pattern.search(path), path


def test_s20_65_custom_ignore_paths() -> None:
    config = load("upstream: {ignorePaths: ['^/static/', '\\.map$']}")
    assert [p.pattern for p in config.upstream.ignore_patterns] == ["^/static/", "\\.map$"]
    message = error("upstream: {ignorePaths: ['[invalid(']}")
    assert "upstream.ignorePaths" in message
    assert "invalid regular expression" in message


def test_s20_66_store_path(tmp_path: Path) -> None:
    new_file = tmp_path / "activity.db"
    assert load(f"store: {{path: '{new_file}'}}").store is not None
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"")
    config = load(f"store: {{path: '  {existing}  '}}")
    assert config.store is not None and config.store.path == str(existing)
    assert "not writable" in error("store: {path: /no/such/dir/x.db}")
    assert "store.path must not be empty" in error("store: {path: ''}")
    assert f"store.path: {tmp_path} is a directory, not a file" in error(
        f"store: {{path: '{tmp_path}'}}"
    )


def test_s20_67_preload_cleanup() -> None:
    config = load("""
        models:
          model1: {cmd: "a ${PORT}", aliases: [one]}
          model2: {cmd: "b ${PORT}"}
        peers:
          p: {proxy: http://h, models: [remote]}
        hooks:
          on_startup:
            preload: ["model1", " model2 ", "one", "", "unknown", "remote", "p/remote"]
    """)
    assert config.hooks.on_startup.preload == ("model1", "model2", "model1")


# --- routing -----------------------------------------------------------------------

MODELS = """
models:
  gemma: {cmd: "g ${PORT}"}
  qwen: {cmd: "q ${PORT}"}
  model1: {cmd: "a ${PORT}"}
  model2: {cmd: "b ${PORT}"}
  model3: {cmd: "c ${PORT}"}
  model4: {cmd: "d ${PORT}"}
"""


def test_s20_68_member_in_two_groups() -> None:
    assert "model member model2 is used in multiple groups: group1 and group2" in error(
        MODELS + "groups: {group1: {members: [model1, model2]}, group2: {members: [model2]}}"
    )
    assert "duplicate model member model1 found in group: g" in error(
        MODELS + "groups: {g: {members: [model1, model1]}}"
    )


def test_s20_69_legacy_forms() -> None:
    grouped = load(MODELS + "groups: {g1: {members: [gemma, qwen]}}")
    assert grouped.routing.router_use == "group"
    assert grouped.routing.groups["g1"].members == ("gemma", "qwen")
    assert grouped.routing.scheduler_use == "fifo"
    matrix = load(MODELS + "matrix: {vars: {g: gemma, q: qwen}, sets: {s: 'g | q'}}")
    assert matrix.routing.router_use == "matrix"
    assert matrix.routing.matrix is not None
    assert matrix.routing.matrix.set_names == ("s",)
    assert matrix.routing.groups == {}


def test_s20_70_canonical_forms() -> None:
    matrix = load(
        MODELS + "routing: {router: {use: matrix, settings: {matrix: {sets: {s: gemma}}}}}"
    )
    assert matrix.routing.router_use == "matrix"
    grouped = load(
        MODELS + "routing: {router: {use: group, settings: {groups: {g: {members: [qwen]}}}}}"
    )
    assert grouped.routing.router_use == "group"
    assert grouped.routing.groups["g"].members == ("qwen",)
    plain = load(MODELS)
    assert (plain.routing.router_use, plain.routing.scheduler_use) == ("group", "fifo")


def test_s20_71_legacy_and_canonical_mixed() -> None:
    assert "migrate" in error(
        MODELS + "groups: {g: {members: [gemma]}}\nrouting: {router: {use: group}}"
    )


def test_s20_72_matrix_router_without_matrix() -> None:
    assert "routing.router.settings.matrix is not set" in error("routing: {router: {use: matrix}}")


def test_s20_73_use_picks_one_and_ignores_the_other() -> None:
    config = load(
        MODELS
        + """
routing:
  router:
    use: group
    settings:
      groups: {g: {members: [gemma]}}
      matrix: {sets: {broken: "nonexistent & ("}}
"""
    )
    assert config.routing.router_use == "group"
    assert config.routing.matrix is None
    assert config.routing.groups["g"].members == ("gemma",)


def test_s20_74_unknown_router() -> None:
    assert 'routing.router.use: unknown router "bogus" (valid: group, matrix)' in error(
        "routing: {router: {use: bogus}}"
    )


def test_s20_75_fifo_priority() -> None:
    assert 'references unknown model "nope"' in error(
        MODELS + "routing: {scheduler: {settings: {fifo: {priority: {nope: 5}}}}}"
    )
    config = load(MODELS + "routing: {scheduler: {settings: {fifo: {priority: {gemma: 5}}}}}")
    assert config.routing.priority == {"gemma": 5}


def test_s20_76_legacy_groups_and_matrix() -> None:
    assert "config cannot use both 'groups' and 'matrix'" in error(
        MODELS + "groups: {g: {members: [gemma]}}\nmatrix: {sets: {s: qwen}}"
    )


@pytest.mark.parametrize(
    ("matrix", "expected"),
    [
        ("{vars: {a_b: gemma}, sets: {s: gemma}}", "must contain only alphanumeric"),
        ("{vars: {" + "v" * 33 + ": gemma}, sets: {s: gemma}}", "1-32 characters long"),
        ("{vars: {'': gemma}, sets: {s: gemma}}", "1-32 characters long"),
        ("{vars: {x: nobody}, sets: {s: gemma}}", 'references unknown model "nobody"'),
        ("{evict_costs: {gemma: 0}, sets: {s: gemma}}", "positive integer"),
        ("{evict_costs: {gemma: -1}, sets: {s: gemma}}", "positive integer"),
        ("{evict_costs: {ghost: 3}, sets: {s: gemma}}", "unknown var or model"),
        ("{sets: {a: '+b', b: '+a'}}", "circular reference"),
        ("{sets: {a: '+nonexistent'}}", "references undefined set"),
        ("{vars: {g: gemma}}", "at least one set"),
        ("{vars: {g: gemma}, sets: {s: 'g & nonexistent'}}", "unknown var or model"),
    ],
)
def test_s20_77_matrix_validation(matrix: str, expected: str) -> None:
    message = first_message(MODELS + f"matrix: {matrix}")
    assert message.startswith("matrix: ")
    assert expected in message


def test_s20_77_matrix_direct_model_names() -> None:
    assert load(MODELS + "matrix: {sets: {s: 'gemma & qwen'}}").routing.matrix is not None


def test_s20_78_matrix_solve() -> None:
    config = load("""
        models:
          gemma: {cmd: "g ${PORT}"}
          qwen: {cmd: "q ${PORT}"}
          mistral: {cmd: "m ${PORT}"}
          voxtral: {cmd: "v ${PORT}"}
          llama70B: {cmd: "l ${PORT}"}
        matrix:
          vars: {g: gemma, q: qwen, m: mistral, v: voxtral, L: llama70B}
          evict_costs: {L: 30, v: 50}
          sets:
            standard: "(g | q | m) & v"
            full: "L"
    """)
    matrix = config.routing.matrix
    assert matrix is not None
    to_gemma = matrix.solve("gemma", ["voxtral"])
    assert (to_gemma.set_name, to_gemma.evict) == ("standard", ())
    to_llama = matrix.solve("llama70B", ["voxtral"])
    assert (to_llama.set_name, to_llama.evict) == ("full", ("voxtral",))
    single = load(MODELS + "matrix: {vars: {g: gemma}, sets: {s: 'g & gemma'}}").routing.matrix
    assert single is not None and single.combinations("s") == (("gemma",),)
    shadow = load(MODELS + "matrix: {vars: {qwen: gemma}, sets: {s: qwen}}").routing.matrix
    assert shadow is not None and shadow.combinations("s") == (("gemma",),)


def test_s20_79_groups_example() -> None:
    config = load(
        MODELS
        + """
groups:
  g1: {swap: true, exclusive: false, members: [model2]}
  forever: {exclusive: false, persistent: true, members: [model4]}
"""
    )
    groups = config.routing.groups
    assert set(groups) == {"g1", "forever", DEFAULT_GROUP}
    assert groups[DEFAULT_GROUP].members == ("gemma", "model1", "model3", "qwen")
    forever = groups["forever"]
    assert (forever.swap, forever.exclusive, forever.persistent) == (True, False, True)


# --- profiles and selectors --------------------------------------------------------

NAMES = """
models:
  a:
    cmd: a ${PORT}
    aliases: [alias-a]
    filters: {setParamsByID: {variant: {temperature: 0.1}}}
  b: {cmd: "b ${PORT}"}
peers:
  remote: {proxy: "http://10.0.0.9", models: [remote-model]}
"""


def test_s20_80_profile_pins_that_load() -> None:
    config = load(
        NAMES
        + """
profiles:
  everything:
    description: all kinds of targets
    pins:
      local-id: a
      by-alias: alias-a
      by-variant: variant
      bare-peer: remote-model
      fqn: remote/remote-model
      off: ""
      off-too: ~
      a: b
"""
    )
    profile = config.profiles["everything"]
    assert profile.description == "all kinds of targets"
    assert profile.pins["off"] == "" and profile.pins["off-too"] == ""
    assert profile.pins["a"] == "b"


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        ("{old: [a]}", "legacy list syntax"),
        ("{p: {pins: {}}}", "profiles.p.pins must contain at least one entry"),
        ("{p: {pins: {x: missing}}}", 'profiles.p.pins.x references unknown model "missing"'),
        ("{p: {pins: {first: a, second: first}}}", 'references unknown model "first"'),
        ("{' ': {pins: {x: a}}}", "profiles: profile names cannot be empty"),
        ("{p: {pins: {' ': a}}}", "profiles.p.pins: pin names cannot be empty"),
    ],
)
def test_s20_81_profile_errors(profiles: str, expected: str) -> None:
    assert expected in error(NAMES + f"profiles: {profiles}")


def test_s20_82_selector_defaults_and_fields() -> None:
    config = load(
        NAMES
        + """
groups:
  together: {swap: false, members: [a, b]}
selectors:
  fast:
    strategy: spillover
    targets: [a, b]
    name: Fast lane
    description: spills to b
    unlisted: true
    metadata: {tier: 1}
"""
    )
    selector = config.selectors["fast"]
    assert selector.settings.spillover == 1
    assert (selector.name, selector.description, selector.unlisted) == (
        "Fast lane",
        "spills to b",
        True,
    )
    assert selector.metadata == {"tier": 1}


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        ("{' ': {strategy: pin, targets: [a]}}", "selectors: selector names cannot be empty"),
        ("{s: {targets: [a]}}", "selectors.s.strategy is required"),
        ("{s: {strategy: random, targets: [a]}}", 'unknown strategy "random"'),
        ("{s: {strategy: pin}}", "selectors.s.targets must contain at least one entry"),
        ("{s: {strategy: pin, targets: [missing]}}", 'references unknown model "missing"'),
        (
            "{s: {strategy: pin, targets: [t]}, t: {strategy: pin, targets: [a]}}",
            "selector chaining is not supported",
        ),
        ("{a: {strategy: pin, targets: [b]}}", 'selectors.a: name conflicts with model ID "a"'),
        ("{alias-a: {strategy: pin, targets: [b]}}", "name conflicts with model alias"),
        ("{variant: {strategy: pin, targets: [b]}}", "name conflicts with model alias"),
        (
            "{s: {strategy: warm, targets: [remote-model]}}",
            'selectors.s.targets[0] must resolve to a local model for strategy "warm"',
        ),
        (
            "{s: {strategy: spillover, targets: [a], settings: {spillover: 0}}}",
            "selectors.s.settings.spillover must be >= 1",
        ),
        (
            "{s: {strategy: spillover, targets: [a, alias-a]}}",
            'selectors.s.targets contains duplicate resolved model "a"',
        ),
        (
            "{s: {strategy: spillover, targets: [remote-model, remote/remote-model]}}",
            'duplicate resolved model "remote/remote-model"',
        ),
        (
            "{s: {strategy: spillover, targets: [a, b]}}",
            "selectors.s spillover targets must share a group with swap: false",
        ),
    ],
)
def test_s20_83_selector_errors(selectors: str, expected: str) -> None:
    assert expected in error(NAMES + f"selectors: {selectors}")


def test_s20_84_selector_id_may_equal_bare_peer_name() -> None:
    config = load(
        NAMES + "selectors: {remote-model: {strategy: pin, targets: [remote/remote-model]}}"
    )
    assert config.selectors["remote-model"].targets == ("remote/remote-model",)


def test_s20_85_spillover_coexistence() -> None:
    group_ok = NAMES + "groups: {pair: {swap: false, members: [a, b]}}\n"
    load(group_ok + "selectors: {s: {strategy: spillover, targets: [a, b]}}")
    assert "must share one routing group" in error(
        NAMES
        + "groups: {x: {swap: false, members: [a]}, y: {swap: false, members: [b]}}\n"
        + "selectors: {s: {strategy: spillover, targets: [a, b]}}"
    )
    load(
        NAMES
        + "matrix: {sets: {both: 'a & b'}}\nselectors: {s: {strategy: spillover, targets: [a, b]}}"
    )
    assert "must all appear together in one expanded matrix set" in error(
        NAMES
        + "matrix: {sets: {either: 'a | b'}}\n"
        + "selectors: {s: {strategy: spillover, targets: [a, b]}}"
    )
    load(NAMES + "selectors: {s: {strategy: spillover, targets: [remote-model]}}")
    load(NAMES + "selectors: {s: {strategy: spillover, targets: [a, remote-model]}}")


def test_s20_85_large_matrix_is_checked_quickly() -> None:
    dims = [[f"m{d}_{i}" for i in range(11)] for d in range(4)]
    model_lines = "\n".join(f"  {m}: {{cmd: 'x ${{PORT}}'}}" for dim in dims for m in dim)
    dsl = " & ".join("(" + " | ".join(dim) + ")" for dim in dims)
    text = (
        f"models:\n{model_lines}\n"
        f"matrix: {{sets: {{big: '{dsl}'}}}}\n"
        "selectors: {s: {strategy: spillover, targets: [m0_3, m1_7, m2_10, m3_0]}}\n"
    )
    started = time.perf_counter()
    config = load(text)
    assert config.selectors["s"].targets[0] == "m0_3"
    assert time.perf_counter() - started < 5.0


def test_s20_86_profile_pin_to_selector() -> None:
    config = load(
        NAMES
        + "selectors: {pick: {strategy: pin, targets: [a]}}\n"
        + "profiles: {p: {pins: {chat: pick}}}"
    )
    assert config.profiles["p"].pins == {"chat": "pick"}
