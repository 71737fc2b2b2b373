"""A process's TTL inputs (process/ttl.py): accounting and the keep_alive override, no loop."""

from __future__ import annotations

import math

import pytest

from modelswap.process.ttl import IMMEDIATE_TTL, TtlTimer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _never_due(child: object) -> None:
    raise AssertionError("no monitor runs in these tests")


def test_a_request_in_flight_holds_the_model_and_its_end_is_the_last_use() -> None:
    clock = Clock()
    ttl = TtlTimer(10.0, _never_due, clock=clock)
    ttl.touch()  # ready at 0
    with ttl.request():
        clock.now = 50.0
        assert ttl.in_flight == 1 and not ttl.expired()
    assert ttl.in_flight == 0 and ttl.last_use == 50.0
    clock.now = 60.0
    assert not ttl.expired()  # idle exactly ttl: not yet
    clock.now = 60.5
    assert ttl.expired()


def test_request_accounting_survives_an_error_in_the_request() -> None:
    clock = Clock()
    ttl = TtlTimer(10.0, _never_due, clock=clock)
    with pytest.raises(RuntimeError), ttl.request():
        clock.now = 3.0
        raise RuntimeError("stream broke")
    assert (ttl.in_flight, ttl.last_use) == (0, 3.0)


@pytest.mark.parametrize(
    ("keep_alive", "in_force"), [(0.0, IMMEDIATE_TTL), (math.inf, 0.0), (30.0, 30.0), (None, 5.0)]
)
def test_keep_alive_override_and_its_end(keep_alive: float | None, in_force: float) -> None:
    ttl = TtlTimer(5.0, _never_due, clock=Clock())
    ttl.set_override(keep_alive)
    assert ttl.ttl == in_force
    ttl.end_run()
    assert ttl.ttl == 5.0


def test_zero_ttl_never_expires() -> None:
    clock = Clock()
    ttl = TtlTimer(0.0, _never_due, clock=clock)
    ttl.touch()
    clock.now = 1e9
    assert not ttl.expired()
