"""§2.3 normalisation and validation on plain trees, and name resolution.

These tests skip YAML and macros: a plain dict is decoded and validated, so
each case shows exactly which check fires and in which order.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelswap.config import DEFAULT_GROUP, Config, NameIndex, ResolvedModel
from modelswap.config.decode import decode_document
from modelswap.config.urlcheck import url_parse_error
from modelswap.config.validate import Validated, normalise_session_ids, validate_document
from modelswap.errors import ConfigError


def run(data: dict[str, Any]) -> Validated:
    return validate_document(decode_document(data))


def config(data: dict[str, Any]) -> Config:
    return run(data).config


def failure(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        run(data)
    (problem,) = info.value.problems
    return problem.message


def model(**fields: Any) -> dict[str, Any]:
    return {"cmd": "serve", "proxy": "http://127.0.0.1:9000", **fields}


# --- §2.3 order: the first failing check wins ------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"performance": {"every": "1s"}, "startPort": 0},
            "performance: every must be at least 5s, got 1s",
        ),
        ({"startPort": 0, "globalTTL": -1}, "startPort must be greater than 1"),
        ({"globalTTL": -1, "unloadTimeout": -1}, "globalTTL must be >= 0"),
        ({"unloadTimeout": -1, "store": {"path": " "}}, "unloadTimeout must be >= 0"),
        (
            {"store": {"path": ""}, "upstream": {"ignorePaths": ["("]}},
            "store.path must not be empty",
        ),
        (
            {"upstream": {"ignorePaths": ["("]}, "logToStdout": "x"},
            'upstream.ignorePaths: invalid regular expression "("',
        ),
        (
            {
                "logToStdout": "stdout",
                "models": {"a": model(aliases=["x"]), "b": model(aliases=["x"])},
            },
            "logToStdout must be one of: proxy, upstream, both, none",
        ),
        (
            {"models": {"a": model(aliases=["x"]), "b": model(aliases=["x"], ttl=-5)}},
            "duplicate alias x found in model: b",
        ),
        (
            {"models": {"b": model(ttl=-5), "a": model(unloadTimeout=-1)}},
            "model a: invalid unloadTimeout value -1",
        ),
        (
            {"models": {"a": model(ttl=-5)}, "routing": {"router": {"use": "bogus"}}},
            "model a: invalid TTL value -5",
        ),
        (
            {"routing": {"router": {"use": "bogus"}, "scheduler": {"use": "lifo"}}},
            'routing.router.use: unknown router "bogus"',
        ),
        (
            {"routing": {"scheduler": {"use": "lifo"}}, "apiKeys": [""]},
            'routing.scheduler.use: unknown scheduler "lifo" (valid: fifo)',
        ),
        ({"apiKeys": [""], "peers": {"p": {"models": ["m"]}}}, "empty api key found in apiKeys"),
        (
            {"peers": {"p": {"models": ["m"]}}, "selectors": {"s": {}}},
            "peers.p: proxy is required",
        ),
        (
            {"selectors": {"s": {}}, "profiles": {"p": {}}},
            "selectors.s.strategy is required",
        ),
        ({"profiles": {"p": {}}}, "profiles.p.pins must contain at least one entry"),
    ],
)
def test_checks_run_in_spec_order(data: dict[str, Any], expected: str) -> None:
    assert failure(data).startswith(expected)


def test_per_model_checks_in_order() -> None:
    bad_everything = model(
        ttl=-2,
        unloadTimeout=-1,
        capabilities={"out": ["smell"]},
        proxy="://x",
    )
    assert failure({"models": {"m": bad_everything}}) == "model m: invalid TTL value -2"
    del bad_everything["ttl"]
    assert failure({"models": {"m": bad_everything}}) == "model m: invalid unloadTimeout value -1"
    del bad_everything["unloadTimeout"]
    assert failure({"models": {"m": bad_everything}}).startswith("model m: capabilities.out:")
    del bad_everything["capabilities"]
    assert failure({"models": {"m": bad_everything}}) == (
        'model m: invalid proxy URL: parse "://x": missing protocol scheme'
    )


def test_negative_performance_every_is_reported_as_go_duration() -> None:
    assert failure({"performance": {"every": "-1m30s"}}) == (
        "performance: every must be at least 5s, got -1m30s"
    )


# --- normalisation --------------------------------------------------------------------


def test_session_id_normalisation() -> None:
    assert normalise_session_ids((" X-Trace-ID ", "", "x-trace-id", "X-Session-ID")) == (
        "X-Trace-ID",
        "X-Session-ID",
    )


def test_models_keep_yaml_order_after_sorted_validation() -> None:
    assert list(config({"models": {"b": model(), "a": model()}}).models) == ["b", "a"]


def test_set_params_by_id_aliases_follow_explicit_aliases() -> None:
    loaded = config(
        {
            "models": {
                "m": model(
                    aliases=["first"],
                    filters={"setParamsByID": {"m": {}, "first": {}, "zeta": {}, "beta": {}}},
                )
            }
        }
    )
    assert loaded.models["m"].aliases == ("first", "beta", "zeta")


def test_set_params_by_id_key_taken_by_a_later_models_explicit_alias() -> None:
    assert failure(
        {
            "models": {
                "a": model(filters={"setParamsByID": {"shared": {}}}),
                "b": model(aliases=["shared"]),
            }
        }
    ) == ("duplicate alias 'shared' in model a filters.setParamsByID, already used by model b")


# --- routing: deliberate differences ----------------------------------------------------


def test_group_member_that_is_an_alias_is_rejected_with_the_real_id() -> None:
    message = failure(
        {"models": {"model1": model(aliases=["m1"])}, "groups": {"g": {"members": ["m1"]}}}
    )
    assert message == (
        'group g: member "m1" is not a model ID (it is an alias of "model1"; groups list '
        'model IDs, write "model1")'
    )


def test_group_member_that_is_unknown_is_rejected() -> None:
    message = failure({"routing": {"router": {"settings": {"groups": {"g": {"members": ["x"]}}}}}})
    assert message == 'group g: member "x" is not a model ID (no model config for "x")'


def test_user_default_group_is_ignored_with_a_warning() -> None:
    result = run(
        {
            "models": {"a": model(), "b": model()},
            "groups": {DEFAULT_GROUP: {"swap": False, "members": ["a"]}, "g": {"members": ["b"]}},
        }
    )
    groups = result.config.routing.groups
    assert groups[DEFAULT_GROUP].members == ("a",)
    assert groups[DEFAULT_GROUP].swap is True
    (warning,) = result.warnings
    assert warning.path == "groups.(default)"
    assert "reserved" in warning.message


def test_default_group_is_last_and_always_present() -> None:
    groups = config({"models": {"a": model()}, "groups": {"g": {"members": ["a"]}}}).routing.groups
    assert list(groups) == ["g", DEFAULT_GROUP]
    assert groups[DEFAULT_GROUP].members == ()


def test_matrix_mode_has_no_groups() -> None:
    routing = config(
        {
            "models": {"a": model()},
            "routing": {"router": {"use": "matrix", "settings": {"matrix": {"sets": {"s": "a"}}}}},
        }
    ).routing
    assert routing.router_use == "matrix"
    assert routing.groups == {}
    assert routing.group_of("a") is None


def test_priority_by_alias_applies_to_the_real_model() -> None:
    models = {"real": model(aliases=["nick"]), "other": model(aliases=["o"])}
    fifo = {"priority": {"nick": 3, "real": 7, "o": 2}}
    routing = config(
        {"models": models, "routing": {"scheduler": {"settings": {"fifo": fifo}}}}
    ).routing
    assert routing.priority == {"real": 7, "other": 2}


def test_explicit_fifo_scheduler() -> None:
    assert config({"routing": {"scheduler": {"use": "fifo"}}}).routing.scheduler_use == "fifo"


# --- spillover coexistence edge cases -------------------------------------------------------


def test_single_local_spillover_target_needs_no_shared_group() -> None:
    loaded = config(
        {
            "models": {"a": model()},
            "peers": {"p": {"proxy": "http://h", "models": ["r"]}},
            "selectors": {"s": {"strategy": "spillover", "targets": ["a", "r"]}},
        }
    )
    assert loaded.selectors["s"].targets == ("a", "r")


# --- name resolution (§10.2, §16) -----------------------------------------------------------


def test_resolution_precedence() -> None:
    loaded = config(
        {
            "models": {"shared": model(aliases=["nick"])},
            "peers": {
                "p1": {"proxy": "http://h1", "models": ["shared", "org/model"]},
                "p2": {"proxy": "http://h2", "models": ["shared", "unique"]},
            },
        }
    )
    assert loaded.resolve_base_model("p1/shared") == ResolvedModel(
        peer_id="p1", peer_model="shared"
    )
    assert loaded.resolve_base_model("p1/org/model") == ResolvedModel(
        peer_id="p1", peer_model="org/model"
    )
    assert loaded.resolve_base_model("unique") == ResolvedModel(peer_id="p2", peer_model="unique")
    assert loaded.resolve_base_model("shared") == ResolvedModel(model_id="shared")
    assert loaded.resolve_base_model("nick") == ResolvedModel(model_id="shared")
    assert loaded.resolve_base_model("nope") is None
    assert loaded.resolve_model_id("nick") == "shared"
    assert loaded.resolve_model_id("unique") is None


def test_fqn_wins_over_bare_name_that_looks_like_one() -> None:
    index = NameIndex.build({}, {"p1": ["model"], "p2": ["p1/model"]})
    found = index.resolve_base_model("p1/model")
    assert found is not None and (found.peer_id, found.peer_model) == ("p1", "model")
    found = index.resolve_base_model("p2/p1/model")
    assert found is not None and (found.key, found.is_local) == ("p2/p1/model", False)


def test_ambiguous_bare_peer_name_does_not_resolve() -> None:
    index = NameIndex.build({}, {"p1": ["m"], "p2": ["m"]})
    assert index.resolve_base_model("m") is None


def test_model_id_wins_over_another_models_alias() -> None:
    index = NameIndex.build({"a": ["b"], "b": []}, {})
    assert index.resolve_model_id("b") == "b"


# --- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost:5800", None),
        ("http://127.0.0.1:8999/api", None),
        ("http://[::1]:8080", None),
        ("localhost:8080", None),
        ("://invalid", "missing protocol scheme"),
        ("http://host:abc", 'invalid port ":abc" after host'),
        ("http://[::1", "missing ']' in host"),
        ("http://a b", 'invalid character " " in host name'),
        ("http://h/%zz", 'invalid URL escape "%zz"'),
        ("http://h/\n", "invalid control character in URL"),
        ("127.0.0.1:8080", "first path segment in URL cannot contain colon"),
    ],
)
def test_url_parse_errors(url: str, problem: str | None) -> None:
    error = url_parse_error(url)
    if problem is None:
        assert error is None
    else:
        assert error is not None and problem in error


def test_config_defaults_construct_without_loading() -> None:
    empty = Config()
    assert empty.routing.groups[DEFAULT_GROUP].members == ()
    assert empty.resolve_model_id("x") is None


def test_copies_do_not_keep_stale_cached_values() -> None:
    loaded = config({"models": {"a": model(aliases=["n"], filters={"stripParams": "x"})}})
    assert loaded.resolve_model_id("n") == "a"
    assert loaded.model_copy(update={"models": {}}).resolve_model_id("n") is None
    filters = loaded.models["a"].filters
    assert filters.strip_params_list == ("x",)
    assert filters.model_copy(update={"strip_params": "y"}).strip_params_list == ("y",)
