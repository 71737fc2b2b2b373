"""The starvation bound (core/starvation.py): pure, times are inputs."""

from __future__ import annotations

import pytest

from modelswap.core.starvation import StarvationBound


def _evicts_everything(model: str) -> bool:
    return True


def test_off_never_blocks_and_remembers_nothing_at_arrival() -> None:
    b = StarvationBound()
    b.became_ready("a", 0.0)
    assert not b.enabled and b.arrival(5.0) == {}
    assert not b.blocks("a", "x", {}, 1e9, _evicts_everything)


def test_blocks_once_the_anchor_waited_max_wait_while_the_model_was_resident() -> None:
    b = StarvationBound(max_wait=10.0)
    b.became_ready("a", 0.0)
    arrival = b.arrival(2.0)  # the anchor (for model x) arrives at 2
    assert not b.blocks("a", "x", arrival, 12.0, _evicts_everything)  # waited exactly 10
    assert b.blocks("a", "x", arrival, 12.5, _evicts_everything)
    assert not b.blocks("a", "a", arrival, 12.5, _evicts_everything)  # the anchor wants a
    assert not b.blocks("a", "x", arrival, 12.5, lambda m: False)  # x's swap keeps a


def test_time_while_the_model_was_not_resident_does_not_count() -> None:
    b = StarvationBound(max_wait=10.0)
    b.became_ready("a", 0.0)
    arrival = b.arrival(0.0)
    b.stopping(["a"], 5.0)  # evicted: 5 s counted
    b.became_ready("a", 100.0)
    assert not b.blocks("a", "x", arrival, 105.0, _evicts_everything)  # 10 s resident
    assert b.blocks("a", "x", arrival, 106.0, _evicts_everything)


def test_min_residency_protects_a_freshly_loaded_model() -> None:
    b = StarvationBound(max_wait=1.0, min_residency=30.0)
    b.became_ready("a", 0.0)
    arrival = b.arrival(0.0)
    assert not b.blocks("a", "x", arrival, 20.0, _evicts_everything)
    assert b.blocks("a", "x", arrival, 31.0, _evicts_everything)
    b.retired("a")  # a reload replaced a: its ready time is gone, residency is not
    assert b.blocks("a", "x", arrival, 31.0, _evicts_everything)


def test_sweep_ends_residency_only_while_enabled_and_configure_switches() -> None:
    b = StarvationBound()
    b.became_ready("a", 0.0)
    b.sweep({"a": "stopped"}, 1.0)  # off: the clock keeps running
    b.configure(5.0, 0.0)
    arrival = b.arrival(0.0)
    assert arrival == {"a": 0.0}
    b.sweep({"a": "stopped"}, 2.0)  # on: a TTL stop ends the residency at 2
    assert not b.blocks("a", "x", arrival, 100.0, _evicts_everything)


def test_negative_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        StarvationBound(max_wait=-1.0)
