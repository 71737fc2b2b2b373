"""The starvation bound's clock (core/residency.py): pure, times are inputs."""

from __future__ import annotations

from modelswap.core.residency import Residency


def test_clock_accumulates_only_resident_time() -> None:
    r = Residency()
    r.start("a", 0.0)
    snap = r.snapshot(1.0)  # a request arrives at 1
    assert snap == {"a": 1.0}
    r.stop(["a"], 21.0)  # evicted at 21: 20 s counted
    assert r.waited_on("a", snap, 30.0) == 20.0
    r.start("a", 25.0)  # back at 25
    assert r.waited_on("a", snap, 34.0) == 29.0
    assert r.waited_on("a", snap, 40.0) == 35.0
    assert r.waited_on("b", snap, 40.0) == 0.0  # never resident


def test_start_twice_keeps_the_first_and_stop_of_a_stranger_is_harmless() -> None:
    r = Residency()
    r.start("a", 0.0)
    r.start("a", 5.0)
    r.stop(["ghost"], 6.0)
    assert r.clock("a", 10.0) == 10.0


def test_sweep_ends_models_the_view_shows_not_ready() -> None:
    r = Residency()
    r.start("a", 0.0)
    r.start("b", 0.0)
    r.sweep({"a": "ready", "b": "stopping"}, 4.0)
    assert (r.clock("a", 10.0), r.clock("b", 10.0)) == (10.0, 4.0)
    assert repr(r) == "<Residency resident=['a']>"
