"""Load estimates (median of the last 5 loads) and loadProgress events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelswap.observability.load_eta import LoadEstimate, LoadEstimates, LoadProgress
from modelswap.router.facts import SwapFinished, SwapStarted


def finished(model: str, load: float, error: str | None = None) -> SwapFinished:
    return SwapFinished(1, model, (), "group", 0.0, 0.0, load, error)


def test_no_history_no_estimate() -> None:
    assert LoadEstimates().expected("qwen") is None


def test_median_of_the_last_five_successful_loads() -> None:
    estimates = LoadEstimates()
    for load in (100.0, 4.0, 5.0, 6.0, 7.0, 30.0):
        estimates.observe(finished("qwen", load))
    estimates.observe(finished("qwen", 999.0, error="boom"))  # failures do not count
    assert estimates.expected("qwen") == LoadEstimate(6.0, 5)  # 100 fell out


def test_seeded_from_store_history_newest_first() -> None:
    estimates = LoadEstimates({"qwen": [12.0, 11.0, 13.0, 50.0, 10.0, 1.0]})
    assert estimates.expected("qwen") == LoadEstimate(12.0, 5)


@pytest.mark.parametrize(
    ("estimate", "text"),
    [
        (LoadEstimate(12.4, 5), "~12 s, from the last 5 loads"),
        (LoadEstimate(2.25, 1), "~2.2 s, from the last load"),
    ],
)
def test_describe(estimate: LoadEstimate, text: str) -> None:
    assert estimate.describe() == text


async def test_progress_events_from_start_to_ready() -> None:
    published: list[tuple[str, Any]] = []
    now = [100.0]
    estimates = LoadEstimates({"qwen": [4.0]})
    progress = LoadProgress(
        estimates, lambda kind, data: published.append((kind, data)), clock=lambda: now[0]
    )
    progress.observe(SwapStarted(3, "qwen", ("llama",), "group", 100.0))
    assert progress.snapshot() == [SwapStarted(3, "qwen", ("llama",), "group", 100.0)]
    progress.observe(SwapFinished(3, "qwen", ("llama",), "group", 100.0, 100.5, 104.5, None))
    await asyncio.sleep(0)  # let the cancelled ticker finish
    assert [data["phase"] for _, data in published] == ["evicting", "ready"]
    assert published[0] == (
        "loadProgress",
        {
            "model": "qwen",
            "swap_id": 3,
            "phase": "evicting",
            "evicting": ["llama"],
            "elapsed_ms": 0,
            "expected_ms": 4000,
            "samples": 1,
        },
    )
    assert published[1][1]["elapsed_ms"] == 4500
    assert progress.snapshot() == []
    await progress.close()
