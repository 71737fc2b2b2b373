"""Explain: where a request's time went, and the Server-Timing header it becomes (pure)."""

from __future__ import annotations

import pytest

from modelswap.observability.records import Explain, build_explain
from modelswap.router.facts import SwapFinished


def swap(
    started: float, evicted: float, finished: float, evict: tuple[str, ...] = ()
) -> SwapFinished:
    return SwapFinished(7, "qwen", evict, "group", started, evicted, finished, None)


def test_fast_path_is_all_queue() -> None:
    explain = build_explain(10.0, 10.002, None, headers_at=10.012, ended=10.5)
    assert explain.queue_ms == pytest.approx(2.0)
    assert explain.swap_model is None and not explain.waited_for_swap
    assert explain.ttfb_ms == pytest.approx(10.0)
    assert explain.gen_ms == pytest.approx(488.0)
    assert explain.server_timing() == "queue;dur=2.0, ttfb;dur=10.0"


def test_request_that_started_the_swap_waits_only_for_it() -> None:
    explain = build_explain(
        10.0, 13.0, swap(10.0, 10.5, 13.0, ("llama",)), headers_at=13.1, ended=14.0
    )
    assert explain.queue_ms == pytest.approx(0.0)
    assert explain.evicted == ("llama",) and explain.evict_reason == "group"
    assert explain.evict_ms == pytest.approx(500.0)
    assert explain.load_ms == pytest.approx(2500.0)
    assert explain.server_timing() == (
        'queue;dur=0.0, evict;dur=500.0;desc="llama", load;dur=2500.0;desc="qwen", ttfb;dur=100.0'
    )


def test_request_that_joined_late_counts_only_its_own_overlap_as_swap_time() -> None:
    # Arrived 2 s into a 3 s swap, granted 1 s after it finished: 1 s of queue.
    explain = build_explain(12.0, 14.0, swap(10.0, 10.0, 13.0))
    assert explain.queue_ms == pytest.approx(1000.0)
    assert explain.load_ms == pytest.approx(3000.0)  # the swap's own load time, in full
    assert explain.evict_reason is None and explain.evict_ms is None
    assert explain.ttfb_ms is None and explain.gen_ms is None


def test_queued_before_the_swap_started() -> None:
    explain = build_explain(5.0, 13.0, swap(10.0, 10.0, 13.0))
    assert explain.queue_ms == pytest.approx(5000.0)


def test_as_json_keys_are_stable() -> None:
    assert Explain().as_json() == {
        "queue_ms": 0.0,
        "waited_for_swap": False,
        "swap_model": None,
        "evicted": [],
        "evict_reason": None,
        "evict_ms": None,
        "load_ms": None,
        "ttfb_ms": None,
        "gen_ms": None,
    }
