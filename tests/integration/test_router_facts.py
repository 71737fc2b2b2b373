"""The router's facts: each swap is published when committed and when it ends, with its reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelswap.config import load_config_text
from modelswap.errors import ModelUnloadedError, SwapFailedError
from modelswap.router.build import build_router
from modelswap.router.facts import SWAP_CANCELLED, RouterFact, SwapFinished, SwapStarted
from modelswap.router.runtime import LocalRouter
from modelswap.testing.fake_process import fake_upstream_env
from tests.integration.router_harness import Lab, serve, until

pytestmark = pytest.mark.timeout(60)

STARVATION = "routing: {scheduler: {settings: {fifo: {maxWait: 30, minResidency: 0}}}}"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        await lab.close()


def build(lab: Lab, now: list[float]) -> tuple[LocalRouter, list[RouterFact]]:
    """a and b evict each other (the default group); the router's clock is ``now[0]``."""
    lab.model("a")
    lab.model("b")
    config = load_config_text(lab.config_text(STARVATION), "test.yaml", environ={}).config
    router = build_router(config, base_env=fake_upstream_env(), clock=lambda: now[0])
    lab.routers.append(router)
    facts: list[RouterFact] = []
    router.subscribe_facts(facts.append)
    return router, facts


async def swap_to_b_after(lab: Lab, waited: float) -> tuple[list[RouterFact], LocalRouter]:
    """b queues behind a busy a for ``waited`` seconds (router clock), then a finishes."""
    now = [1000.0]
    router, facts = build(lab, now)
    hold, serving = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(serve(router, "a", hold=hold, serving=serving))
    await serving.wait()
    second = asyncio.create_task(serve(router, "b"))
    await until(router, lambda s: len(s.queue) == 1)
    now[0] += waited
    hold.set()
    assert await first == "Hello from a"
    assert await second == "Hello from b"
    return facts, router


async def test_swaps_are_published_with_the_policy_as_reason(lab: Lab) -> None:
    facts, _ = await swap_to_b_after(lab, waited=5.0)
    started = [f for f in facts if isinstance(f, SwapStarted)]
    finished = [f for f in facts if isinstance(f, SwapFinished)]
    assert [(f.model, f.evict, f.reason) for f in started] == [
        ("a", (), "group"),
        ("b", ("a",), "group"),
    ]
    assert [(f.model, f.evict, f.error) for f in finished] == [("a", (), None), ("b", ("a",), None)]
    assert [f.swap_id for f in finished] == [f.swap_id for f in started]
    assert all(f.finished >= f.evicted >= f.started for f in finished)


async def test_a_swap_for_a_request_past_max_wait_says_so(lab: Lab) -> None:
    facts, _ = await swap_to_b_after(lab, waited=40.0)
    (swap,) = [f for f in facts if isinstance(f, SwapStarted) and f.model == "b"]
    assert (swap.evict, swap.reason) == (("a",), "maxWait")


async def test_a_failed_start_is_published_with_its_error(lab: Lab) -> None:
    lab.model("x", exit_at_start=3)
    config = load_config_text(lab.config_text(), "test.yaml", environ={}).config
    router = build_router(config, base_env=fake_upstream_env())
    lab.routers.append(router)
    facts: list[RouterFact] = []
    router.subscribe_facts(facts.append)
    with pytest.raises(SwapFailedError) as failed:
        await serve(router, "x")
    (done,) = [f for f in facts if isinstance(f, SwapFinished)]
    assert done.model == "x" and done.error == failed.value.reason


async def test_a_swap_cancelled_by_an_unload_finishes_as_cancelled(lab: Lab) -> None:
    lab.model("slow", startup_delay=30)
    config = load_config_text(lab.config_text(), "test.yaml", environ={}).config
    router = build_router(config, base_env=fake_upstream_env())
    lab.routers.append(router)
    facts: list[RouterFact] = []
    router.subscribe_facts(facts.append)
    waiting = asyncio.create_task(serve(router, "slow"))
    await until(router, lambda s: len(s.scheduler.swaps) == 1)
    await router.unload(["slow"])
    with pytest.raises(ModelUnloadedError):
        await waiting
    (done,) = [f for f in facts if isinstance(f, SwapFinished)]
    assert (done.model, done.error) == ("slow", SWAP_CANCELLED)
