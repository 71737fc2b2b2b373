"""Pure parts of modelswap.process: transition table, TTL rule, launch building.

Synchronous: no event loop, no sockets, no sleeps, no child processes.
"""

from __future__ import annotations

import itertools

import pytest

from modelswap.errors import IllegalTransitionError, UpstreamStartError
from modelswap.process import readiness
from modelswap.process.spec import (
    ProcessSpec,
    build_env,
    format_duration,
    join_url,
    parse_proxy_url,
    prepare_launch,
)
from modelswap.process.state import (
    TRANSITIONS,
    ProcessState,
    check_transition,
    ttl_expired,
)

S = ProcessState

LEGAL = {
    (S.STOPPED, S.STARTING),
    (S.STOPPED, S.SHUTDOWN),
    (S.STARTING, S.READY),
    (S.STARTING, S.STOPPED),
    (S.STARTING, S.SHUTDOWN),
    (S.READY, S.STOPPING),
    (S.READY, S.STOPPED),
    (S.READY, S.SHUTDOWN),
    (S.STOPPING, S.STOPPED),
    (S.STOPPING, S.SHUTDOWN),
}
ALL_PAIRS = list(itertools.product(ProcessState, repeat=2))


def test_table_is_exactly_the_spec_edges() -> None:
    assert set(TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL, key=str))
def test_legal_transition_is_a_real_change(old: ProcessState, new: ProcessState) -> None:
    assert check_transition(old, new) is True


@pytest.mark.parametrize("state", list(ProcessState))
def test_same_state_is_a_silent_no_op(state: ProcessState) -> None:
    assert check_transition(state, state) is False


@pytest.mark.parametrize(
    ("old", "new"), [(o, n) for o, n in ALL_PAIRS if o is not n and (o, n) not in LEGAL]
)
def test_illegal_transition_raises(old: ProcessState, new: ProcessState) -> None:
    with pytest.raises(IllegalTransitionError, match=f"{old} -> {new}"):
        check_transition(old, new)


def test_shutdown_is_terminal() -> None:
    assert not [new for old, new in TRANSITIONS if old is S.SHUTDOWN]


def test_one_cycle_is_four_events() -> None:
    cycle = [S.STOPPED, S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    assert all(check_transition(a, b) for a, b in itertools.pairwise(cycle))


# --- ttl_expired -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "last_use", "in_flight", "ttl", "expired"),
    [
        (10.0, 0.0, 0, 0, False),  # ttl 0 never unloads
        (1e9, 0.0, 0, 0, False),
        (10.0, 0.0, 0, -1, False),  # negative: disabled as well
        (10.0, 0.0, 0, 10, False),  # exactly ttl idle: not yet (strictly greater)
        (10.001, 0.0, 0, 10, True),
        (301.0, 0.0, 0, 300, True),
        (301.0, 0.0, 1, 300, False),  # a request (or stream) in flight holds it
        (301.0, 0.0, 5, 300, False),
        (301.0, 200.0, 0, 300, False),  # recent use
        (0.5, 0.0, 0, 1, False),
    ],
)
def test_ttl_expired(
    now: float, last_use: float, in_flight: int, ttl: float, expired: bool
) -> None:
    assert ttl_expired(now, last_use, in_flight, ttl) is expired


# --- env and launch ------------------------------------------------------------------


def test_env_appends_and_model_wins() -> None:
    base = {"PATH": "/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0"}
    env = build_env(base, ("CUDA_VISIBLE_DEVICES=1", "NEW=a=b", "EMPTY="))
    assert env == {
        "PATH": "/bin",
        "HOME": "/root",
        "CUDA_VISIBLE_DEVICES": "1",
        "NEW": "a=b",
        "EMPTY": "",
    }
    assert base["CUDA_VISIBLE_DEVICES"] == "0"  # the base is not modified


def test_env_later_entry_wins() -> None:
    assert build_env({}, ("A=1", "A=2")) == {"A": "2"}


def spec(**changes: object) -> ProcessSpec:
    fields: dict[str, object] = {
        "model_id": "m1",
        "cmd": "server --port 5801",
        "proxy": "http://127.0.0.1:5801",
    }
    fields.update(changes)
    return ProcessSpec(**fields)  # type: ignore[arg-type]


def test_prepare_launch_builds_argv_env_and_health_url() -> None:
    launch = prepare_launch(
        spec(cmd='llama-server \\\n  -m "my model.gguf"\n  # comment\n  --port 5801', env=("X=1",)),
        {"PATH": "/bin"},
    )
    assert launch.argv == ("llama-server", "-m", "my model.gguf", "--port", "5801")
    assert launch.env == {"PATH": "/bin", "X": "1"}
    assert launch.health_url == "http://127.0.0.1:5801/health"


def test_check_endpoint_none_disables_health_check() -> None:
    assert prepare_launch(spec(check_endpoint="  none "), {}).health_url is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"proxy": ""}, "upstream proxy missing"),
        ({"proxy": "  "}, "upstream proxy missing"),
        ({"proxy": "", "cmd": ""}, "upstream proxy missing"),  # proxy is checked first
        ({"cmd": ""}, "unable to get sanitized command: empty command"),
        ({"cmd": "# only a comment"}, "unable to get sanitized command: empty command"),
        ({"cmd": "", "proxy": "http://h:bad"}, "unable to get sanitized command: empty command"),
        ({"proxy": "http://h:bad"}, 'invalid proxy URL "http://h:bad": '),
        ({"proxy": "ftp://h:1"}, 'invalid proxy URL "ftp://h:1": unsupported scheme'),
        ({"proxy": "http://"}, 'invalid proxy URL "http://": '),
    ],
)
def test_launch_errors_in_spec_order(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UpstreamStartError) as info:
        prepare_launch(spec(**changes), {})
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("proxy", "endpoint", "url"),
    [
        ("http://h:1", "/health", "http://h:1/health"),
        ("http://h:1/", "/health", "http://h:1/health"),
        ("http://h:1/base", "/health", "http://h:1/base/health"),
        ("http://h:1/base/", "health", "http://h:1/base/health"),
        ("http://h:1/b?k=v", "/health?x=1", "http://h:1/b/health?k=v&x=1"),
        ("http://h:1", "/health/5801", "http://h:1/health/5801"),
    ],
)
def test_join_url(proxy: str, endpoint: str, url: str) -> None:
    assert str(join_url(parse_proxy_url(proxy), endpoint)) == url


def test_spec_port_and_flags() -> None:
    assert spec().port == 5801
    assert spec(proxy="http://localhost").port == 80
    assert spec(proxy="http://h:bad").port is None
    assert spec().health_check_enabled
    assert not spec(check_endpoint="none").health_check_enabled


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (1, "1s"),
        (5, "5s"),
        (1.5, "1.5s"),
        (120, "2m0s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
    ],
)
def test_format_duration_like_llama_swap(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- readiness schedule (pure) --------------------------------------------------------


def test_poll_interval_backs_off_to_caps() -> None:
    interval, seen = readiness.FIRST_INTERVAL, []
    for _ in range(20):
        interval = readiness.next_interval(interval, elapsed=0.1)
        seen.append(interval)
    assert seen == sorted(seen)
    assert max(seen) == readiness.FAST_MAX_INTERVAL <= 0.02
    assert readiness.next_interval(readiness.FAST_MAX_INTERVAL, elapsed=60) > 0.02
    assert readiness.next_interval(1.0, elapsed=60) == readiness.SLOW_MAX_INTERVAL <= 0.05
