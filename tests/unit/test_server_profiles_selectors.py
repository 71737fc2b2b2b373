"""Profiles, selectors and the peer route table (server spec §7, §8; router spec §6): pure."""

from __future__ import annotations

import textwrap

import pytest

from modelswap.config import Config, PeerConfig, load_config_text
from modelswap.errors import ClientError, ModelNotFoundError
from modelswap.server.peers import PeerRoute, build_peer_routes
from modelswap.server.profiles import (
    ProfileState,
    parse_active_request,
    pin_upstream_path,
    pinned_target,
)
from modelswap.server.selectors import SelectorError, Selectors

CMD = "srv --port ${PORT}"


def config(text: str) -> Config:
    return load_config_text(textwrap.dedent(text)).config


# --- profiles ------------------------------------------------------------------------------


@pytest.fixture
def profiles() -> Config:
    return config(
        f"""
        models:
          real:
            cmd: {CMD}
            filters:
              setParamsByID:
                variant: {{thinking: true}}
          hidden:
            cmd: {CMD}
        profiles:
          coding:
            description: for code
            pins: {{public: variant, disabled: ""}}
          zeta:
            pins: {{public: real}}
        """
    )


def test_profile_api_scenario_38(profiles: Config) -> None:
    state = ProfileState(profiles.profiles)
    changes: list[str | None] = []
    state.observers.append(changes.append)
    assert state.view() == {
        "active": None,
        "profiles": [
            {
                "id": "coding",
                "description": "for code",
                "pins": {"public": "variant", "disabled": ""},
            },
            {"id": "zeta", "description": "", "pins": {"public": "real"}},
        ],
    }
    assert state.pins == {}
    assert state.set_active("coding") is True
    assert state.set_active("coding") is False  # same value: no event
    with pytest.raises(ModelNotFoundError, match='profile "missing" not found'):
        state.set_active("missing")
    assert state.active == "coding"
    assert state.pins == {"public": "variant", "disabled": ""}
    assert state.set_active("") is True
    assert state.active is None
    assert changes == ["coding", None]


@pytest.mark.parametrize(
    ("body", "result"),
    [({"name": "coding"}, "coding"), ({"name": None}, None), ({"name": ""}, None)],
)
def test_parse_active_request(body: object, result: str | None) -> None:
    assert parse_active_request(body) == result


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "invalid profile request"),
        ("coding", "invalid profile request"),
        ({}, "profile name is required"),
        ({"name": 3}, "profile name must be a string or null"),
    ],
)
def test_parse_active_request_errors(body: object, message: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_active_request(body)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_pinned_target_is_exact() -> None:
    pins = {"public": "variant", "disabled": ""}
    assert pinned_target(pins, "public") == "variant"
    assert pinned_target(pins, "disabled") == ""
    assert pinned_target(pins, "Public") is None


@pytest.mark.parametrize(
    ("rest", "result"),
    [
        ("public/v1/chat/completions", "real/v1/chat/completions"),
        ("public", "real"),
        ("author/public/v1/x", "target/v1/x"),  # the longest pin wins
        ("author/other/v1", "short/other/v1"),
        ("author%2Fpublic/api/x%2Fy", "target/api/x%2Fy"),  # encoded rest preserved
        ("off/v1/chat", ""),  # disabled → /upstream/
        ("publicity/v1", None),  # a prefix must end at a "/"
        ("unpinned/v1", None),
    ],
)
def test_pin_upstream_path_scenario_41(rest: str, result: str | None) -> None:
    pins = {"public": "real", "author": "short", "author/public": "target", "off": ""}
    assert pin_upstream_path(pins, rest) == result


# --- selectors ------------------------------------------------------------------------------


def selectors_config(spillover: int = 2) -> Config:
    return config(
        f"""
        models:
          a:
            cmd: {CMD}
          b:
            cmd: {CMD}
          c:
            cmd: {CMD}
            aliases: [c-alias]
        groups:
          all:
            swap: false
            members: [a, b, c]
        peers:
          remote:
            proxy: http://example.invalid
            models: [a, b]
        selectors:
          first: {{strategy: pin, targets: [b, a]}}
          warm: {{strategy: warm, targets: [a, b, c]}}
          spill:
            strategy: spillover
            targets: [a, b, c-alias]
            settings: {{spillover: {spillover}}}
          remote:
            strategy: spillover
            targets: [remote/a, remote/b]
        """
    )


def states(**given: str) -> dict[str, str]:
    return {"a": "stopped", "b": "stopped", "c": "stopped", **given}


def test_pin_scenario_46() -> None:
    sel = Selectors(selectors_config())
    assert sel.choose("first", states().__getitem__).target == "b"
    assert sel.is_selector("first") and not sel.is_selector("a")


@pytest.mark.parametrize(
    ("given", "target"),
    [
        ({"a": "starting", "c": "ready"}, "c"),
        ({"b": "ready", "c": "ready"}, "b"),
        ({"a": "starting", "b": "starting"}, "a"),
        ({}, "a"),
        ({"a": "stopping", "b": "shutdown"}, "a"),
    ],
)
def test_warm_scenario_46(given: dict[str, str], target: str) -> None:
    sel = Selectors(selectors_config())
    assert sel.choose("warm", states(**given).__getitem__).target == target


def test_spillover_scenario_47() -> None:
    sel = Selectors(selectors_config(spillover=2))
    view = states()
    first = sel.choose("spill", view.__getitem__)
    second = sel.choose("spill", view.__getitem__)
    third = sel.choose("spill", view.__getitem__)
    assert [first.target, second.target, third.target] == ["a", "a", "b"]
    assert sel.reservations("spill") == {"a": 2, "b": 1}
    first.release()
    first.release()  # idempotent
    assert sel.reservations("spill") == {"a": 1, "b": 1}
    ready = states(a="ready", b="ready", c="ready")
    fourth = sel.choose("spill", ready.__getitem__)
    assert fourth.target == "c-alias"  # configured spelling; reserved under the real id
    assert sel.reservations("spill") == {"a": 1, "b": 1, "c": 1}
    gone = {"a": "stopping", "b": "shutdown", "c": "stopping"}
    with pytest.raises(SelectorError) as caught:
        sel.choose("spill", gone.__getitem__)
    assert caught.value.status == 503
    assert caught.value.message == 'selector "spill" has no available spillover targets'


def test_spillover_remote_targets_scenario_48() -> None:
    sel = Selectors(selectors_config())
    view = states()
    one = sel.choose("remote", view.__getitem__)
    two = sel.choose("remote", view.__getitem__)
    assert (one.target, two.target) == ("remote/a", "remote/b")
    one.release()
    two.release()
    assert sel.choose("remote", view.__getitem__).target == "remote/a"


def test_spillover_concurrent_requests_spread_scenario_51() -> None:
    sel = Selectors(selectors_config(spillover=1))
    ready = states(a="ready", b="ready", c="ready")
    one = sel.choose("spill", ready.__getitem__)
    two = sel.choose("spill", ready.__getitem__)
    assert one.target != two.target


def test_spillover_round_robin_without_lasting_reservation_scenario_52() -> None:
    sel = Selectors(selectors_config(spillover=1))
    ready = states(a="ready", b="ready")
    picks = []
    for _ in range(2):
        choice = sel.choose("spill", ready.__getitem__)
        choice.release()  # an ignored websocket releases at once
        picks.append(choice.target)
    assert picks == ["a", "b"]


def test_spillover_full_active_and_no_cold_uses_least_reserved() -> None:
    sel = Selectors(selectors_config(spillover=1))
    ready = states(a="ready", b="ready", c="ready")
    picks = [sel.choose("spill", ready.__getitem__).target for _ in range(4)]
    assert sorted(picks[:3]) == ["a", "b", "c-alias"]
    assert picks[3] in ("a", "b", "c-alias")
    assert sum(sel.reservations("spill").values()) == 4


# --- peer routes ---------------------------------------------------------------------------


def peers(**models: list[str]) -> dict[str, PeerConfig]:
    return {pid: PeerConfig(proxy="http://h", models=tuple(ms)) for pid, ms in models.items()}


def test_peer_routes_scenarios_138_to_142() -> None:
    assert build_peer_routes({}) == {}
    one = build_peer_routes(peers(peer1=["model-a", "model-b", "model-a"]))
    assert one == {
        "peer1/model-a": PeerRoute("peer1", "model-a"),
        "peer1/model-b": PeerRoute("peer1", "model-b"),
        "model-a": PeerRoute("peer1", "model-a"),
        "model-b": PeerRoute("peer1", "model-b"),
    }
    assert len(build_peer_routes(peers(p1=["a", "b"], p2=["c", "d"]))) == 8
    shared = build_peer_routes(peers(cuda=["shared"], strix=["shared"]))
    assert set(shared) == {"cuda/shared", "strix/shared"}
    clash = build_peer_routes(peers(p1=["model"], p2=["p1/model"]))
    assert clash["p1/model"] == PeerRoute("p1", "model")
    assert clash["p2/p1/model"] == PeerRoute("p2", "p1/model")
    assert clash["model"] == PeerRoute("p1", "model")
