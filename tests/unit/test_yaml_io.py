"""YAML dialect, locations, ${env.X} substitution and multi-file merging (§2.1, §7, §17).

Files are written under tmp_path and the environment is always passed in as a
dict, so nothing here depends on the machine running the tests.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelswap.config.locations import Locations, format_path
from modelswap.config.macros import expand_document
from modelswap.config.sources import load_sources
from modelswap.config.yaml_io import (
    YamlLoader,
    load_text,
    parse_yaml,
    substitute_env,
)
from modelswap.errors import ConfigError


def parse(text: str) -> Any:
    return parse_yaml(textwrap.dedent(text), "config.yaml").data


def parse_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_yaml(textwrap.dedent(text), "config.yaml")
    return info.value


def expand(text: str, environ: dict[str, str]) -> dict[str, Any]:
    doc = load_text(textwrap.dedent(text), "config.yaml", environ)
    return expand_document(doc.data, doc.locations)


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def sources_error(config: str | None, config_dir: str | None, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_sources(config, config_dir, env)
    return info.value.problems[0].message


# --- the YAML 1.2-style dialect (§2.1) --------------------------------------------------


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF"])
def test_yaml_1_1_bool_words_stay_strings(word: str) -> None:
    assert parse(f"value: {word}") == {"value": word}


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("FALSE", False)],
)
def test_only_true_false_spellings_are_booleans(text: str, value: bool) -> None:
    assert parse(f"value: {text}")["value"] is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-7", -7),
        ("+3", 3),
        ("0777", 511),  # Go base-0 rules: a leading zero means octal, as in yaml.v3
        ("089", 89.0),  # not octal, not an int: yaml.v3 falls through to float
        ("1_000", 1000),  # underscores are dropped before parsing
        ("0b101", 5),
        ("-0b101", -5),
        ("99999999999999999999", 1e20),  # beyond uint64: a float
        ("18446744073709551615", 18446744073709551615),  # uint64 max
        ("0o17", 15),
        ("0x1F", 31),
        ("0.7", 0.7),
        ("1e3", 1000.0),
        ("-1.5E-2", -0.015),
        (".5", 0.5),
    ],
)
def test_numbers_follow_yaml_v3(text: str, value: Any) -> None:
    parsed = parse(f"value: {text}")["value"]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["2024-01-01", "1:30", "=", "1.2.3", "0x", "12e", "TrUe", "0b2"])
def test_yaml_1_1_only_forms_stay_strings(text: str) -> None:
    assert parse(f"value: {text}") == {"value": text}


@pytest.mark.parametrize("text", ["~", "null", "Null", "NULL", ""])
def test_null_spellings(text: str) -> None:
    assert parse(f"value: {text}") == {"value": None}


def test_quoted_scalars_are_strings_and_special_floats_parse() -> None:
    data = parse("a: \"true\"\nb: '5'\nc: .inf\nd: -.Inf\ne: !!str 12\nf: !!float 3")
    assert data["a"] == "true" and data["b"] == "5" and data["e"] == "12"
    assert data["c"] == float("inf") and data["d"] == float("-inf") and data["f"] == 3.0


def test_yaml_loader_class_works_with_plain_yaml_load() -> None:
    data = yaml.load("a: yes\nb: 2024-01-01\nc: 010\nd: true", Loader=YamlLoader)
    assert data == {"a": "yes", "b": "2024-01-01", "c": 8, "d": True}


def test_all_mapping_keys_are_strings() -> None:
    assert parse("1: a\ntrue: b\n~: c\n1.5: d") == {"1": "a", "true": "b", "~": "c", "1.5": "d"}


def test_empty_and_comment_only_documents_are_empty_mappings() -> None:
    assert parse("") == {}
    assert parse("# nothing here\n\n   # still nothing\n") == {}
    assert parse("~\n") == {}


def test_top_level_must_be_a_mapping() -> None:
    for text in ("- a\n- b\n", "just text\n", "42\n"):
        err = parse_error(text)
        assert err.problems[0].message == "config config.yaml: top-level YAML must be a mapping"


def test_syntax_error_names_file_and_line() -> None:
    err = parse_error("models:\n  a: [1, 2\nother: x\n")
    problem = err.problems[0]
    assert problem.message.startswith("failed to parse config config.yaml: ")
    assert problem.file == "config.yaml" and problem.line is not None


def test_only_the_first_document_is_read() -> None:
    assert parse("a: 1\n---\nb: 2\n") == {"a": 1}


# --- duplicate keys ---------------------------------------------------------------------


def test_duplicate_key_is_an_error_with_both_lines() -> None:
    err = parse_error(
        """
        models:
          qwen:
            cmd: a
            ttl: 5
            ttl: 10
        """
    )
    problem = err.problems[0]
    assert problem.line == 6
    assert 'mapping key "ttl" already defined at line 5' in problem.message
    assert problem.message.startswith("failed to parse config config.yaml")


def test_duplicate_keys_in_flow_mappings_and_model_ids() -> None:
    assert parse_error("a: {x: 1, x: 2}").problems[0].line == 1
    err = parse_error("models:\n  m: {}\n  m: {}\n")
    assert 'mapping key "m" already defined at line 2' in err.problems[0].message


def test_keys_provided_by_a_merge_are_not_duplicates() -> None:
    data = parse(
        """
        base: &b {cmd: a, ttl: 5}
        model:
          <<: *b
          ttl: 10
        """
    )
    assert data["model"] == {"cmd": "a", "ttl": 10}


def test_two_merge_keys_in_one_mapping_are_duplicates() -> None:
    err = parse_error("a: &a {x: 1}\nb:\n  <<: *a\n  <<: *a\n")
    assert 'mapping key "<<" already defined at line 3' in err.problems[0].message


# --- anchors and merge keys -------------------------------------------------------------


def test_aliases_are_independent_deep_copies() -> None:
    data = parse(
        """
        defs: &d {env: [A=1], meta: {x: 1}}
        one: *d
        two: *d
        """
    )
    data["one"]["env"].append("B=2")
    data["one"]["meta"]["x"] = 99
    assert data["two"] == {"env": ["A=1"], "meta": {"x": 1}}
    assert data["defs"] == {"env": ["A=1"], "meta": {"x": 1}}


def test_merge_sequence_earlier_wins_and_explicit_keys_win_over_all() -> None:
    data = parse(
        """
        a: &a {x: a, y: a}
        b: &b {x: b, z: b}
        m:
          w: own
          <<: [*a, *b]
          y: own
        """
    )
    assert data["m"] == {"w": "own", "x": "a", "z": "b", "y": "own"}
    assert list(data["m"]) == ["w", "x", "z", "y"]


def test_nested_merges_and_non_mapping_merge_values() -> None:
    data = parse("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b, z: 3}\n")
    assert data["c"] == {"x": 1, "y": 2, "z": 3}
    err = parse_error("a: &a [1]\nb: {<<: *a}\n")
    assert "map merge requires map or sequence of maps" in err.problems[0].message


def test_recursive_alias_is_rejected() -> None:
    err = parse_error("a: &a\n  b: *a\n")
    assert "recursively" in err.problems[0].message


# --- locations --------------------------------------------------------------------------


def test_locations_cover_keys_and_list_items() -> None:
    doc = parse_yaml(
        "models:\n  qwen:\n    ttl: 5\n    aliases:\n      - q1\n      - q2\n", "c.yaml"
    )
    locs = doc.locations
    assert locs.lookup(("models",)) == ("c.yaml", 1)
    assert locs.lookup(("models", "qwen", "ttl")) == ("c.yaml", 3)
    assert locs.lookup(("models", "qwen", "aliases", 1)) == ("c.yaml", 6)
    assert locs.lookup(("models", "qwen", "ttl", "deeper")) == ("c.yaml", 3)
    assert locs.lookup(("nope",)) == ("c.yaml", None)
    assert locs.get(("models", "qwen", "missing")) is None


def test_merged_keys_point_at_the_anchor_lines() -> None:
    doc = parse_yaml("base: &b\n  cmd: x\n  ttl: 1\nm:\n  <<: *b\n  ttl: 2\n", "c.yaml")
    assert doc.locations.lookup(("m", "cmd")) == ("c.yaml", 2)
    assert doc.locations.lookup(("m", "ttl")) == ("c.yaml", 6)


def test_format_path_and_problem() -> None:
    assert format_path(("peers", "p", "models", 0)) == "peers.p.models[0]"
    assert format_path(("apiKeys", 1)) == "apiKeys[1]"
    locs = Locations("f.yaml")
    locs.add(("a",), "f.yaml", 3)
    assert str(locs.problem(("a", "b"), "bad")) == "f.yaml:3: a.b: bad"


# --- ${env.X} (48–53) -------------------------------------------------------------------

ENV_CONFIG = """
    macros:
      root: ${env.TEST_MODEL_PATH}
    models:
      m:
        macros: {local: "${env.TEST_MODEL_PATH}/local"}
        cmd: ${env.TEST_MODEL_PATH}/llama-server --port ${PORT} ${local}
        cmdStop: ${env.TEST_MODEL_PATH}/stop ${PID}
        proxy: http://${env.TEST_HOST}:${PORT}
        checkEndpoint: /${env.TEST_HOST}/health
        metadata: {deep: {path: "${env.TEST_MODEL_PATH}", list: ["${root}"]}}
        filters: {stripParams: "${env.TEST_STRIP}"}
    """
ENV = {"TEST_MODEL_PATH": "/opt/models", "TEST_HOST": "box", "TEST_STRIP": "top_k"}


def test_s20_48_env_macros_everywhere() -> None:
    model = expand(ENV_CONFIG, ENV)["models"]["m"]
    assert model["cmd"] == "/opt/models/llama-server --port 5800 /opt/models/local"
    assert model["cmdStop"] == "/opt/models/stop ${PID}"
    assert model["proxy"] == "http://box:5800"
    assert model["checkEndpoint"] == "/box/health"
    assert model["metadata"] == {"deep": {"path": "/opt/models", "list": ["/opt/models"]}}
    assert model["filters"] == {"stripParams": "top_k"}
    assert model["macros"] == {"local": "/opt/models/local"}


def test_s20_48_substitute_env_works_on_raw_text() -> None:
    text = "cmd: ${env.A}/bin\nkey_${env.A}: 1\n"
    assert substitute_env(text, "c.yaml", {"A": "x"}) == "cmd: x/bin\nkey_x: 1\n"


@pytest.mark.parametrize(
    "where",
    [
        "models: {m: {cmd: '${env.MISSING_VAR}'}}",
        "macros: {g: '${env.MISSING_VAR}'}",
        "models: {m: {macros: {l: '${env.MISSING_VAR}'}}}",
        "models: {m: {metadata: {a: {b: '${env.MISSING_VAR}'}}}}",
        "apiKeys: ['${env.MISSING_VAR}']",
        "peers: {p: {proxy: 'http://x', apiKey: '${env.MISSING_VAR}'}}",
    ],
)
def test_s20_49_unset_env_var_anywhere(where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(where, "c.yaml", {})
    problem = info.value.problems[0]
    assert problem.message == "environment variable 'MISSING_VAR' is not set"
    assert (problem.file, problem.line) == ("c.yaml", 1)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b"])
def test_s20_50_env_values_with_newlines_are_rejected(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        substitute_env("cmd: ${env.BAD_VALUE}\n", "c.yaml", {"BAD_VALUE": value})
    assert info.value.problems[0].message == (
        "environment variable 'BAD_VALUE' contains newlines or null bytes "
        "which are not allowed in YAML substitution"
    )


def test_s20_51_quotes_and_backslashes_survive_in_double_quoted_scalars() -> None:
    environ = {"X": 'value with "quotes"', "WIN": "C:\\models\\llama"}
    data = load_text(
        'cmd: "server --arg \\"${env.X}\\""\npath: "${env.WIN}"\n', "c.yaml", environ
    ).data
    assert data["cmd"] == 'server --arg "value with "quotes""'
    assert data["path"] == "C:\\models\\llama"


YAML_TEXT_CHARS = st.characters(
    blacklist_categories=["Cs", "Cc"], blacklist_characters="\ufffe\uffff"
) | st.sampled_from(["\t", "\x85"])  # YAML forbids other control characters in text


@given(st.text(YAML_TEXT_CHARS))
def test_s20_51_any_allowed_value_survives_a_double_quoted_scalar(value: str) -> None:
    data = load_text('v: "${env.V}"\n', "c.yaml", {"V": value}).data
    assert data["v"] == value


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"])
def test_yaml_1_1_line_breaks_are_ordinary_characters(char: str) -> None:
    data = parse_yaml(f'a: "x{char}y"\nb: x{char}y\n{char}k: 1\n', "c.yaml")
    assert data.data == {"a": f"x{char}y", "b": f"x{char}y", f"{char}k": 1}
    assert data.locations.lookup((f"{char}k",)) == ("c.yaml", 3)


def test_s20_51_escapes_stay_literal_in_plain_scalars() -> None:
    data = load_text("path: ${env.WIN}\n", "c.yaml", {"WIN": "C:\\m"}).data
    assert data["path"] == "C:\\\\m"


def test_s20_52_env_refs_in_comments_are_ignored() -> None:
    text = textwrap.dedent(
        """
        # ${env.FULL_LINE_COMMENT}
        models:
          m:
            # ${env.INDENTED_COMMENT}
            cmd: run ${env.ACTIVE} --port ${PORT}  # ${env.TRAILING_COMMENT}
        """
    )
    data = load_text(text, "c.yaml", {"ACTIVE": "yes"}).data
    assert data["models"]["m"]["cmd"] == "run yes --port ${PORT}"


def test_s20_52_unparseable_text_is_scanned_raw() -> None:
    with pytest.raises(ConfigError, match="'IN_COMMENT' is not set"):
        substitute_env("# ${env.IN_COMMENT}\nkeys: [${env.K}]\n", "c.yaml", {"K": "v"})


def test_s20_53_empty_env_value_is_allowed() -> None:
    data = load_text('apiKeys: ["${env.EMPTY}"]\n', "c.yaml", {"EMPTY": ""}).data
    assert data["apiKeys"] == [""]  # the typed validation rejects the empty key later


def test_s20_54_flow_list_env_in_merged_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "apiKeys: [${env.TEST_API_KEY}]\n")
    write(tmp_path, "b.yaml", "models:\n  m: {cmd: 's ${PORT}'}\n")
    doc = load_sources(None, str(tmp_path), {"TEST_API_KEY": "sk-123"})
    assert doc.data["apiKeys"] == ["sk-123"]
    assert "m" in doc.data["models"]


# --- multiple sources (87–96) -----------------------------------------------------------


def test_s20_87_neither_flag() -> None:
    msg = sources_error(None, None, {})
    assert msg == "at least one of -config or -config-dir must be provided"


def test_s20_88_directory_sources_merge(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "models:\n  alpha: {cmd: 'a ${PORT}'}\n")
    write(tmp_path, "b.yml", "models:\n  beta: {cmd: 'b ${PORT}'}\n")
    write(tmp_path, "notes.txt", "models: {ignored: {}}\n")
    (tmp_path / "sub.yaml").mkdir()
    doc = load_sources(None, str(tmp_path), {})
    assert list(doc.data["models"]) == ["alpha", "beta"]
    assert doc.locations.lookup(("models", "beta")) == (str(tmp_path / "b.yml"), 2)


def test_s20_88_config_file_plus_separate_dir_is_additive(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    config = write(tmp_path, "main.yaml", "models:\n  main: {cmd: 'a ${PORT}'}\n")
    write(tmp_path / "d", "extra.yaml", "models:\n  extra: {cmd: 'b ${PORT}'}\n")
    doc = load_sources(config, str(tmp_path / "d"), {})
    assert list(doc.data["models"]) == ["main", "extra"]


def test_s20_88_config_file_inside_the_dir(tmp_path: Path) -> None:
    config = write(tmp_path, "a.yaml", "globalTTL: 1\n")
    msg = sources_error(config, str(tmp_path), {})
    assert msg == (
        f"-config path {config} is also present in -config-dir {tmp_path}; remove it from one"
    )


@pytest.mark.parametrize(
    ("section", "first", "second", "expected"),
    [
        ("models", "models: {dup: {cmd: a}}", "models: {dup: {cmd: b}}", 'duplicate models "dup"'),
        ("groups", "groups: {g1: {}}", "groups: {g1: {}}", 'duplicate groups "g1"'),
        (
            "peers",
            "peers: {remote: {proxy: a}}",
            "peers: {remote: {proxy: b}}",
            'duplicate peers "remote"',
        ),
        (
            "selectors",
            "selectors: {public: {}}",
            "selectors: {public: {}}",
            'duplicate selectors "public"',
        ),
        (
            "routing groups",
            "routing: {router: {settings: {groups: {g: {}}}}}",
            "routing: {router: {settings: {groups: {g: {}}}}}",
            'duplicate groups "g"',
        ),
    ],
)
def test_s20_89_same_identity_in_two_files(
    tmp_path: Path, section: str, first: str, second: str, expected: str
) -> None:
    write(tmp_path, "a.yaml", first)
    second_path = write(tmp_path, "b.yaml", second)
    msg = sources_error(None, str(tmp_path), {})
    assert msg == f"{expected} found in {second_path} (already defined in another config source)"


def test_s20_90_scalar_conflicts(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "globalTTL: 100\n")
    b = write(tmp_path, "b.yaml", "globalTTL: 200\n")
    msg = sources_error(None, str(tmp_path), {})
    assert msg == f'conflict at "globalTTL": {b} sets a different value than a previous source'


def test_s20_90_equal_values_and_null_sides_are_fine(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "globalTTL: 100\nlogLevel: ~\nrouting: {scheduler: {use: fifo}}\n")
    write(
        tmp_path, "b.yaml", "globalTTL: 100\nlogLevel: debug\nrouting: {scheduler: {use: fifo}}\n"
    )
    doc = load_sources(None, str(tmp_path), {})
    assert doc.data == {
        "globalTTL": 100,
        "logLevel": "debug",
        "routing": {"scheduler": {"use": "fifo"}},
    }
    assert doc.locations.lookup(("logLevel",)) == (str(tmp_path / "b.yaml"), 2)


def test_s20_90_same_text_different_type_conflicts(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "globalTTL: 100\n")
    write(tmp_path, "b.yaml", 'globalTTL: "100"\n')
    assert 'conflict at "globalTTL"' in sources_error(None, str(tmp_path), {})


def test_s20_91_macros_and_api_keys_combine(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "macros: {LOW: 1}\napiKeys: [key-a]\n")
    write(tmp_path, "b.yaml", "macros: {HIGH: 2}\napiKeys:\n  - key-b\n")
    doc = load_sources(None, str(tmp_path), {})
    assert doc.data["macros"] == {"LOW": 1, "HIGH": 2}
    assert doc.data["apiKeys"] == ["key-a", "key-b"]
    assert doc.locations.lookup(("apiKeys", 1)) == (str(tmp_path / "b.yaml"), 3)
    assert doc.locations.lookup(("apiKeys", 0)) == (str(tmp_path / "a.yaml"), 2)


def test_s20_92_routing_groups_from_two_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "routing: {router: {settings: {groups: {groupA: {members: [x]}}}}}")
    write(tmp_path, "b.yaml", "routing: {router: {settings: {groups: {groupB: {members: [y]}}}}}")
    doc = load_sources(None, str(tmp_path), {})
    assert list(doc.data["routing"]["router"]["settings"]["groups"]) == ["groupA", "groupB"]


def test_s20_93_incompatible_kinds(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "startPort: 5800\n")
    b = write(tmp_path, "b.yaml", "startPort: [5800, 5801]\n")
    msg = sources_error(None, str(tmp_path), {})
    assert (
        msg
        == f'conflict at "startPort": incompatible YAML node kinds (kind 8 vs 2) introduced by {b}'
    )


def test_s20_94_routing_only_in_one_file_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "globalTTL: 5\n")
    write(tmp_path, "b.yaml", "routing: {router: {settings: {groups: {g: {members: [m]}}}}}")
    doc = load_sources(None, str(tmp_path), {})
    assert doc.data["routing"] == {"router": {"settings": {"groups": {"g": {"members": ["m"]}}}}}


def test_s20_95_empty_dir_alone_is_an_error(tmp_path: Path) -> None:
    assert sources_error(None, str(tmp_path), {}) == "no configuration sources found"


def test_s20_95_empty_dir_with_config_is_fine(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    config = write(tmp_path, "c.yaml", "globalTTL: 3\n")
    assert load_sources(config, str(tmp_path / "d"), {}).data == {"globalTTL": 3}


def test_s20_95_empty_files_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "# nothing\n")
    write(tmp_path, "b.yaml", "")
    doc = load_sources(None, str(tmp_path), {})
    assert doc.data == {}


def test_s20_96_macro_from_another_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "macros: {SHARED: /opt/shared}\n")
    write(tmp_path, "b.yaml", "models:\n  m: {cmd: '${SHARED}/server --port ${PORT}'}\n")
    doc = load_sources(None, str(tmp_path), {})
    expanded = expand_document(doc.data, doc.locations)
    assert expanded["models"]["m"]["cmd"] == "/opt/shared/server --port 5800"


def test_source_errors_name_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "a.yaml", "cmd: ${env.NOPE}\n")
    msg = sources_error(bad, None, {})
    assert msg == f"config {bad}: environment variable 'NOPE' is not set"
    missing = str(tmp_path / "missing.yaml")
    assert sources_error(missing, None, {}).startswith(f"failed to read config {missing}: ")
    assert sources_error(None, str(tmp_path / "nodir"), {}).startswith("-config-dir ")
    top = write(tmp_path, "list.yaml", "- a\n")
    assert sources_error(top, None, {}) == f"config {top}: top-level YAML must be a mapping"


def test_merged_text_is_env_substituted_once_more(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", 'apiKeys: ["${env.OUTER}"]\n')
    write(tmp_path, "b.yaml", "globalTTL: 1\n")
    environ = {"OUTER": "${env.INNER}", "INNER": "sk"}
    assert load_sources(None, str(tmp_path), environ).data["apiKeys"] == ["sk"]
    with pytest.raises(ConfigError, match="'INNER' is not set"):
        load_sources(None, str(tmp_path), {"OUTER": "${env.INNER}"})


def test_merged_duplicate_error_points_at_the_later_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "models:\n  dup: {cmd: a}\n")
    b = write(tmp_path, "b.yaml", "globalTTL: 1\nmodels:\n  dup: {cmd: b}\n")
    with pytest.raises(ConfigError) as info:
        load_sources(None, str(tmp_path), {})
    assert (info.value.problems[0].file, info.value.problems[0].line) == (b, 3)
