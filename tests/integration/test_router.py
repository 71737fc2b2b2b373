"""LocalRouter end to end: real fake-upstream children, real HTTP, the real scheduler.

Router spec §8.1 scenarios are named ``test_s81_<n>_…``; cancellation tests
cancel at every await point of the request path and then check that the router
holds nothing for the request (``settled``) and, at teardown, that no child is
left alive (``Lab.close``). Waits are on facts: process state changes
(:class:`Recorder`), the router's change notifications (``until``), the fake's
event log. ``asyncio.timeout`` is only a failure deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelswap.errors import (
    ModelNotFoundError,
    ModelNotLoadedError,
    ModelUnloadedError,
    RouterShuttingDownError,
    ShutdownInProgressError,
    SwapFailedError,
    TooManyRequestsError,
)
from modelswap.process import ProcessState
from tests.integration.router_harness import (
    DEADLINE,
    TOGETHER,
    Lab,
    chat,
    serve,
    settled,
    until,
    waiters,
)

pytestmark = pytest.mark.timeout(60)

SLOW = 0.6  # seconds a "slow" fake stays unhealthy: the window a test acts in


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        await lab.close()


def task(coro: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
    return asyncio.create_task(coro)


# --- §8.1: serving ---------------------------------------------------------------------


async def test_s81_1_running_models_lists_only_live_processes(lab: Lab) -> None:
    lab.model("a")
    lab.model("b", never_healthy=True)
    lab.model("c")
    router, rec = lab.build(TOGETHER.format(members="a, b, c"))
    assert await serve(router, "a") == "Hello from a"
    pending = task(serve(router, "b"))
    await rec.wait("b:starting")
    assert router.running_models() == {"a": "ready", "b": "starting"}
    assert router.state_of("c") == "stopped"
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending


async def test_s81_12_fast_path(lab: Lab) -> None:
    a = lab.model("a")
    router, _ = lab.build()
    assert await serve(router, "a") == "Hello from a"
    assert await serve(router, "a") == "Hello from a"
    assert a.starts == 1
    assert a.requests == 2
    await settled(router)


async def test_s81_13_on_demand_start(lab: Lab) -> None:
    a = lab.model("a")
    router, rec = lab.build()
    assert router.state_of("a") == "stopped"
    assert await serve(router, "a") == "Hello from a"
    assert a.starts == 1
    assert rec.log[:2] == ["a:starting", "a:ready"]
    stats = await settled(router)
    assert stats.processes["a"].starts == 1


async def test_s81_14_concurrent_requests_share_one_start(lab: Lab) -> None:
    a = lab.model("a", startup_delay=0.2)
    router, _ = lab.build()
    results = await asyncio.gather(*(serve(router, "a") for _ in range(5)))
    assert results == ["Hello from a"] * 5
    assert a.starts == 1
    assert a.requests == 5
    await settled(router)


async def test_s81_15_client_cancel_while_waiting(lab: Lab) -> None:
    a = lab.model("a", startup_delay=SLOW)
    router, _ = lab.build()
    r1 = task(serve(router, "a"))
    r2 = task(serve(router, "a"))
    await until(router, lambda s: waiters(s, "a") == 2)
    r1.cancel()
    async with asyncio.timeout(1):
        with pytest.raises(asyncio.CancelledError):
            await r1
    assert waiters(router.statistics(), "a") == 1
    assert router.statistics().reservations == {"a": 1}
    assert await r2 == "Hello from a"
    assert a.starts == 1 and a.requests == 1
    await settled(router)


async def test_s81_16_queued_different_model(lab: Lab) -> None:
    lab.model("a")
    b = lab.model("b")
    router, rec = lab.build()  # the (default) group: a and b evict each other
    hold, serving = asyncio.Event(), asyncio.Event()
    r1 = task(serve(router, "a", hold=hold, serving=serving))
    await serving.wait()
    r2 = task(serve(router, "b"))
    await until(router, lambda s: [m for _, m in s.queue] == ["b"])
    assert b.starts == 0  # never started while a serves
    r1.add_done_callback(lambda _: rec.mark("r1 done"))
    hold.set()
    assert await r1 == "Hello from a"
    assert await r2 == "Hello from b"
    assert rec.index("r1 done") < rec.index("b:starting")
    assert rec.count("a:stopping") == 1
    await settled(router)


async def test_s81_17_collation_abcabc_needs_three_starts(lab: Lab) -> None:
    fakes = [lab.model(m, startup_delay=0.2) for m in "abc"]
    router, rec = lab.build()
    results = await asyncio.gather(*(serve(router, m) for m in "abcabc"))
    assert results == [f"Hello from {m}" for m in "abcabc"]
    assert [f.starts for f in fakes] == [1, 1, 1]
    assert [f.requests for f in fakes] == [2, 2, 2]
    assert [entry for entry in rec.log if entry.endswith(":starting")] == [
        "a:starting",
        "b:starting",
        "c:starting",
    ]
    await settled(router)


async def test_s81_18_disjoint_swaps_load_in_parallel(lab: Lab) -> None:
    lab.model("a", startup_delay=0.3)
    lab.model("b", startup_delay=0.3)
    routing = """
groups:
  g1: {swap: false, exclusive: false, members: [a]}
  g2: {swap: false, exclusive: false, members: [b]}
"""
    router, rec = lab.build(routing)
    assert list(await asyncio.gather(serve(router, "a"), serve(router, "b"))) == [
        "Hello from a",
        "Hello from b",
    ]
    first_ready = min(rec.index("a:ready"), rec.index("b:ready"))
    assert rec.index("a:starting") < first_ready
    assert rec.index("b:starting") < first_ready
    assert "a:stopping" not in rec.log and "b:stopping" not in rec.log
    await settled(router)


async def test_s81_19_one_drain_promotes_several_requests(lab: Lab) -> None:
    lab.model("a", startup_delay=SLOW)
    lab.model("b")
    lab.model("c")
    routing = """
groups:
  solo: {swap: true, exclusive: true, members: [a]}
  pair: {swap: false, exclusive: false, members: [b, c]}
"""
    router, rec = lab.build(routing)
    await asyncio.gather(serve(router, "b"), serve(router, "c"))
    r1 = task(serve(router, "a"))  # exclusive: evicts b and c
    await until(router, lambda s: waiters(s, "a") == 1)
    r2, r3 = task(serve(router, "b")), task(serve(router, "c"))
    await until(router, lambda s: [m for _, m in s.queue] == ["b", "c"])
    assert list(await asyncio.gather(r1, r2, r3)) == [
        "Hello from a",
        "Hello from b",
        "Hello from c",
    ]
    # After a's swap, b and c both started before either was ready: one drain.
    tail = rec.log[rec.index("a:ready") :]
    assert tail.index("b:starting") < tail.index("b:ready")
    assert tail.index("c:starting") < min(tail.index("b:ready"), tail.index("c:ready"))
    assert tail.index("b:starting") < tail.index("c:ready")
    assert router.running_models() == {"a": "ready", "b": "ready", "c": "ready"}
    await settled(router)


async def test_s81_21_no_swap_while_serving(lab: Lab) -> None:
    a = lab.model("a", chunks=4)
    lab.model("b")
    router, rec = lab.build()
    assert await serve(router, "a") == "Hello from a"
    ticket = await router.admit("a")
    async with ticket.granted() as upstream, aiohttp.ClientSession() as session:
        body = {"model": "a", "stream": True}
        async with session.post(upstream.base_url + "/v1/chat/completions", json=body) as resp:
            first = await resp.content.readline()
            assert first.startswith(b"data:")
            r2 = task(serve(router, "b"))
            await until(router, lambda s: [m for _, m in s.queue] == ["b"])
            # a is busy, so b waits; a new request for ready a is served meanwhile.
            assert await serve(router, "a") == "Hello from a"
            assert rec.count("a:stopping") == 0
            rest = await resp.read()
        assert b"[DONE]" in rest
        rec.mark("r1 done")
    assert await r2 == "Hello from b"
    assert rec.index("r1 done") < rec.index("a:stopping")
    assert a.requests == 3
    await settled(router)


async def test_s81_22_unknown_model_is_404(lab: Lab) -> None:
    lab.model("a")
    router, _ = lab.build()
    with pytest.raises(ModelNotFoundError) as caught:
        await router.admit("unknown")
    assert caught.value.status == 404
    assert caught.value.message == "no local server found for requested model"
    assert not router.handles("unknown")
    await settled(router)


async def test_concurrency_limit_is_429_with_retry_after(lab: Lab) -> None:
    lab.model("a", never_healthy=True, settings={"concurrencyLimit": 2})
    router, _ = lab.build()
    t1, t2 = await router.admit("a"), await router.admit("a")
    with pytest.raises(TooManyRequestsError) as caught:
        await router.admit("a")
    assert caught.value.status == 429
    assert caught.value.retry_after == 1
    assert caught.value.message == "Too many requests"
    assert router.statistics().reservations == {"a": 2}
    t1.cancel()
    t2.cancel()
    await settled(router, loading=True)


async def test_swap_failure_is_500_unspecific_error(lab: Lab) -> None:
    lab.model("a", exit_at_start=3)
    router, _ = lab.build()
    with pytest.raises(SwapFailedError) as caught:
        await serve(router, "a")
    assert caught.value.status == 500
    assert caught.value.message == "unspecific error: upstream command exited prematurely"
    await settled(router)


async def test_s81_27_request_during_an_outside_stop_restarts(lab: Lab) -> None:
    a = lab.model("a", ignore_sigterm=True)
    router, rec = lab.build()
    assert await serve(router, "a") == "Hello from a"
    outside = asyncio.create_task(router.processes["a"].stop(0.5))  # as a TTL stop would
    await rec.wait("a:stopping")
    assert await serve(router, "a") == "Hello from a"
    await outside
    assert a.starts == 2
    await settled(router)


async def test_crash_of_a_ready_model_then_next_request_restarts_it(lab: Lab) -> None:
    a = lab.model("a", crash_after=1)
    router, rec = lab.build()
    assert await serve(router, "a") == "Hello from a"
    await rec.wait("a:stopped")  # the child exited by itself
    assert router.statistics().processes["a"].crashes == 1
    assert await serve(router, "a") == "Hello from a"
    assert a.starts == 2
    await settled(router)


async def test_loaded_upstream_never_starts_a_model(lab: Lab) -> None:
    lab.model("a")
    router, _ = lab.build()
    with pytest.raises(ModelNotFoundError):
        router.loaded_upstream("nope")
    with pytest.raises(ModelNotLoadedError) as caught:
        router.loaded_upstream("a")
    assert caught.value.status == 409
    assert caught.value.message == (
        "model a is not loaded; ignored websocket requests cannot start it"
    )
    await serve(router, "a")
    upstream = router.loaded_upstream("a")
    assert await chat(upstream) == "Hello from a"
    await settled(router)


# --- §8.1: unload ------------------------------------------------------------------------


async def test_s81_2_unload_all(lab: Lab) -> None:
    lab.model("a")
    lab.model("c")
    router, _ = lab.build(TOGETHER.format(members="a, c"))
    await asyncio.gather(serve(router, "a"), serve(router, "c"))
    await router.unload(timeout=1)
    assert router.running_models() == {}
    await settled(router)


async def test_s81_3_unload_one(lab: Lab) -> None:
    lab.model("a")
    lab.model("c")
    router, _ = lab.build(TOGETHER.format(members="a, c"))
    await asyncio.gather(serve(router, "a"), serve(router, "c"))
    await router.unload(["a"], timeout=1)
    assert router.running_models() == {"c": "ready"}
    await settled(router)


async def test_s81_6_zero_timeout_unloads_smallest_unload_timeout_first(lab: Lab) -> None:
    lab.model("a", settings={"unloadTimeout": 3})
    lab.model("c", settings={"unloadTimeout": 1})
    lab.model("e", settings={"unloadTimeout": 2})
    router, rec = lab.build(TOGETHER.format(members="a, c, e"))
    await asyncio.gather(*(serve(router, m) for m in "ace"))
    await router.unload(["a", "e", "c"])
    stops = [entry for entry in rec.log if entry.endswith(":stopping")]
    assert stops == ["c:stopping", "e:stopping", "a:stopping"]
    # Each bucket is awaited before the next one starts.
    assert rec.index("c:stopped") < rec.index("e:stopping") < rec.index("e:stopped")
    assert rec.index("e:stopped") < rec.index("a:stopping")
    await settled(router)


async def test_s81_9_unload_stops_in_parallel(lab: Lab) -> None:
    for m in "abc":
        lab.model(m, ignore_sigterm=True)
    router, rec = lab.build(TOGETHER.format(members="a, b, c"))
    await asyncio.gather(*(serve(router, m) for m in "abc"))
    await router.unload(["a", "b", "c"], timeout=0.5)
    first_stopped = min(rec.index(f"{m}:stopped") for m in "abc")
    assert all(rec.index(f"{m}:stopping") < first_stopped for m in "abc")
    assert [rec.count(f"{m}:stopping") for m in "abc"] == [1, 1, 1]
    assert router.running_models() == {}
    await settled(router)


async def test_s81_10_unload_releases_swap_waiters(lab: Lab) -> None:
    a = lab.model("a", never_healthy=True)
    router, rec = lab.build()
    r1 = task(serve(router, "a"))
    await rec.wait("a:starting")
    await router.unload(["a"], timeout=1)
    with pytest.raises(ModelUnloadedError) as caught:
        await r1
    assert caught.value.status == 500
    assert caught.value.message == "unspecific error: group: model unloaded"
    assert router.state_of("a") == "stopped"
    assert a.requests == 0
    await settled(router)


async def test_s81_11_unload_drops_queued_requests(lab: Lab) -> None:
    lab.model("a")
    b = lab.model("b")
    router, _ = lab.build()
    hold, serving = asyncio.Event(), asyncio.Event()
    r1 = task(serve(router, "a", hold=hold, serving=serving))
    await serving.wait()
    r2 = task(serve(router, "b"))
    await until(router, lambda s: [m for _, m in s.queue] == ["b"])
    await router.unload(["b"], timeout=1)
    with pytest.raises(ModelUnloadedError):
        await r2
    hold.set()
    assert await r1 == "Hello from a"
    assert b.starts == 0
    await settled(router)


# --- §8.1: shutdown ----------------------------------------------------------------------


async def test_s81_20_shutdown_fails_every_waiter(lab: Lab) -> None:
    lab.model("a", never_healthy=True)
    lab.model("b", never_healthy=True)
    lab.model("c")
    routing = """
groups:
  pair: {swap: false, exclusive: false, members: [a, b]}
  solo: {swap: true, exclusive: true, members: [c]}
"""
    router, _ = lab.build(routing)
    requests = [task(serve(router, m)) for m in ("a", "a", "b", "b")]
    await until(router, lambda s: waiters(s, "a") == 2 and waiters(s, "b") == 2)
    requests.append(task(serve(router, "c")))
    await until(router, lambda s: [m for _, m in s.queue] == ["c"])
    await router.shutdown(1)
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert all(isinstance(r, RouterShuttingDownError) for r in results), results
    assert {r.message for r in results if isinstance(r, RouterShuttingDownError)} == {
        "unspecific error: group is shutting down"
    }
    stats = router.statistics()
    assert stats.closed and stats.tickets == 0 and stats.reservations == {}


async def test_s81_23_shutdown_stops_all_processes_and_a_second_one_errors(lab: Lab) -> None:
    lab.model("a")
    lab.model("b")
    router, rec = lab.build(TOGETHER.format(members="a, b"))
    await asyncio.gather(serve(router, "a"), serve(router, "b"))
    pids = [p.pid for p in router.processes.values()]
    await router.shutdown(1)
    assert [rec.count(f"{m}:stopping") for m in "ab"] == [1, 1]
    assert {p.state for p in router.processes.values()} == {ProcessState.SHUTDOWN}
    assert all(pid is not None for pid in pids)
    with pytest.raises(RouterShuttingDownError) as caught:
        await router.admit("a")
    assert caught.value.status == 500
    with pytest.raises(ShutdownInProgressError) as second:
        await router.shutdown(0)
    assert second.value.message == "group shutdown already in progress"
    await router.unload()  # after shutdown: returns at once


async def test_shutdown_does_not_wait_for_requests_being_served(lab: Lab) -> None:
    lab.model("a")
    router, _ = lab.build()
    ticket = await router.admit("a")
    async with ticket.granted():
        await router.shutdown(1)
        assert router.statistics().in_flight == {"a": 1}
    # The late ServeDone is applied after the loop has ended.
    stats = router.statistics()
    assert stats.in_flight == {} and stats.reservations == {} and stats.tickets == 0


async def test_concurrent_second_shutdown_errors_while_the_first_runs(lab: Lab) -> None:
    lab.model("a", ignore_sigterm=True)
    router, rec = lab.build()
    await serve(router, "a")
    first = asyncio.create_task(router.shutdown(0.5))
    await rec.wait("a:stopping")
    with pytest.raises(ShutdownInProgressError):
        await router.shutdown()
    await first


# --- preload (§7.1) ------------------------------------------------------------------------


async def test_preload_loads_in_order_and_skips_unknown_models(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    lab.model("a")
    lab.model("b")
    router, rec = lab.build(TOGETHER.format(members="a, b"))
    seen: list[tuple[str, bool]] = []
    done = asyncio.Event()

    def note(model: str, ok: bool) -> None:
        seen.append((model, ok))
        if len(seen) == 2:
            done.set()

    with caplog.at_level(logging.WARNING, logger="modelswap.router"):
        router.preload(["b", "nope", "a"], on_preloaded=note)
        async with asyncio.timeout(DEADLINE):
            await done.wait()
    assert seen == [("b", True), ("a", True)]
    assert rec.index("b:ready") < rec.index("a:starting")
    assert "preload: model nope is not a local model, skipping" in caplog.text
    assert router.running_models() == {"a": "ready", "b": "ready"}
    await settled(router)


async def test_preload_failure_is_logged(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    lab.model("a", exit_at_start=2)
    router, _ = lab.build()
    with caplog.at_level(logging.WARNING, logger="modelswap.router"):
        await router.preload(["a"])
    assert "failed to preload model a: unspecific error: upstream command exited" in caplog.text
    await settled(router)


async def test_preload_is_cancelled_by_shutdown(lab: Lab) -> None:
    lab.model("a", never_healthy=True)
    router, rec = lab.build()
    preloading = router.preload(["a"])
    await rec.wait("a:starting")
    await router.shutdown(1)
    assert preloading.cancelled()
    assert router.statistics().tickets == 0


# --- cancellation at every await point ------------------------------------------------------


async def test_cancel_while_waiting_for_admission(lab: Lab) -> None:
    a = lab.model("a")
    router, _ = lab.build()
    router.start()
    posted = asyncio.Event()

    async def arrive() -> object:
        posted.set()
        return await router.admit("a")

    arriving = asyncio.create_task(arrive())
    await posted.wait()  # it has posted its arrival; the loop has not handled it yet
    arriving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await arriving
    await settled(router)
    assert router.state_of("a") == "stopped"  # dropped as "client gone": no swap
    assert a.starts == 0


async def test_cancel_after_admission_before_waiting_for_the_grant(lab: Lab) -> None:
    a = lab.model("a", startup_delay=SLOW)
    router, rec = lab.build()
    ticket = await router.admit("a")  # admitted; its swap has started
    assert ticket.phase == "admitted"
    assert waiters(router.statistics(), "a") == 1
    ticket.cancel()
    await router.wait_idle()
    stats = router.statistics()
    assert stats.reservations == {} and stats.tickets == 0
    assert waiters(stats, "a") == 0
    await rec.wait("a:ready")
    await until(router, lambda s: not s.scheduler.swaps)
    await settled(router)
    assert a.requests == 0


async def test_cancel_while_queued(lab: Lab) -> None:
    lab.model("a")
    b = lab.model("b")
    router, _ = lab.build()
    hold, serving = asyncio.Event(), asyncio.Event()
    r1 = task(serve(router, "a", hold=hold, serving=serving))
    await serving.wait()
    r2 = task(serve(router, "b"))
    await until(router, lambda s: [m for _, m in s.queue] == ["b"])
    r2.cancel()
    with pytest.raises(asyncio.CancelledError):
        await r2
    await router.wait_idle()
    stats = router.statistics()
    assert stats.queue == () and stats.reservations == {"a": 1} and stats.tickets == 1
    hold.set()
    assert await r1 == "Hello from a"
    await settled(router)
    assert b.starts == 0


async def test_cancel_while_its_swap_loads_keeps_loading(lab: Lab) -> None:
    a = lab.model("a", startup_delay=SLOW)
    router, rec = lab.build()
    r1 = task(serve(router, "a"))
    await rec.wait("a:starting")
    r1.cancel()
    with pytest.raises(asyncio.CancelledError):
        await r1
    await router.wait_idle()
    assert router.statistics().reservations == {}
    await rec.wait("a:ready")  # a swap whose waiters left still completes (§3.10)
    await until(router, lambda s: not s.scheduler.swaps)
    await settled(router)
    assert a.requests == 0


async def test_cancel_right_after_the_grant_was_delivered(lab: Lab) -> None:
    a = lab.model("a", startup_delay=0.2)
    router, _ = lab.build()
    r1 = task(serve(router, "a"))

    def cancel_on_grant() -> None:
        # Runs in the loop right after it applied GrantServe: r1's grant future
        # holds the grant, but r1 has not resumed yet.
        if router.statistics().in_flight.get("a"):
            unsubscribe()
            r1.cancel()

    unsubscribe = router.subscribe(cancel_on_grant)
    with pytest.raises(asyncio.CancelledError):
        await r1
    stats = await settled(router)
    assert stats.undelivered_grants == 0  # it was delivered: reported as served
    assert a.requests == 0


async def test_cancel_when_the_grant_finds_the_waiter_gone(lab: Lab) -> None:
    lab.model("a", startup_delay=0.2)
    router, rec = lab.build()
    r1 = task(serve(router, "a"))
    loop = asyncio.get_running_loop()

    def cancel_after_swap_done_is_posted() -> None:
        r1.cancel()  # after the swap worker has posted SwapDone, before it is handled

    def on_ready(change: object) -> None:
        # The swap worker resumes after this callback (one step) and posts
        # SwapDone; two hops of call_soon put the cancel after that step.
        loop.call_soon(loop.call_soon, cancel_after_swap_done_is_posted)

    rec.callbacks.append(lambda c: on_ready(c) if c.new is ProcessState.READY else None)
    with pytest.raises(asyncio.CancelledError):
        await r1
    stats = await settled(router)
    assert stats.undelivered_grants == 1


async def test_cancel_while_serving_reports_serve_done(lab: Lab) -> None:
    lab.model("a")
    router, _ = lab.build()
    hold, serving = asyncio.Event(), asyncio.Event()
    r1 = task(serve(router, "a", hold=hold, serving=serving))
    await serving.wait()
    assert router.statistics().processes["a"].in_flight == 1
    r1.cancel()
    with pytest.raises(asyncio.CancelledError):
        await r1
    stats = await settled(router)
    assert stats.processes["a"].in_flight == 0  # TTL accounting released too


async def test_abandoned_ticket_with_a_delivered_grant_is_released_by_cancel(lab: Lab) -> None:
    lab.model("a")
    router, _ = lab.build()
    await serve(router, "a")
    ticket = await router.admit("a")  # fast path: admitted and granted in one step
    assert router.statistics().in_flight == {"a": 1}
    ticket.cancel()
    ticket.cancel()  # idempotent
    await settled(router)
    with pytest.raises(RuntimeError):
        async with ticket.granted():
            pass


async def test_positions_follow_the_queue(lab: Lab) -> None:
    lab.model("a")
    lab.model("b")
    lab.model("c")
    router, _ = lab.build()
    hold, serving = asyncio.Event(), asyncio.Event()
    r1 = task(serve(router, "a", hold=hold, serving=serving))
    await serving.wait()
    tb = await router.admit("b")
    tc = await router.admit("c")
    assert (tb.position, tc.position) == (1, 2)
    change = asyncio.create_task(tc.wait_position_change())
    tb.cancel()
    async with asyncio.timeout(DEADLINE):
        assert await change == 1
    hold.set()
    await r1
    async with asyncio.timeout(DEADLINE), tc.granted() as upstream:
        assert tc.position is None
        assert await chat(upstream) == "Hello from c"
    await settled(router)


async def test_repr_and_statistics(lab: Lab) -> None:
    lab.model("a")
    router, _ = lab.build()
    assert repr(router).startswith("<LocalRouter group models=1 running={}")
    await serve(router, "a")
    assert "running={'a': 'ready'}" in repr(router)
    stats = await settled(router)
    assert stats.name == "group" and stats.state("a") == "ready"


async def test_matrix_router_evicts_what_cannot_coexist(lab: Lab) -> None:
    for m in "abc":
        lab.model(m)
    routing = """
routing:
  router:
    use: matrix
    settings:
      matrix:
        sets:
          ab: "a & b"
          c_alone: "c"
"""
    router, rec = lab.build(routing)
    assert router.name == "matrix"
    assert list(await asyncio.gather(serve(router, "a"), serve(router, "b"))) == [
        "Hello from a",
        "Hello from b",
    ]
    assert router.running_models() == {"a": "ready", "b": "ready"}
    assert await serve(router, "c") == "Hello from c"
    assert router.running_models() == {"c": "ready"}
    assert rec.count("a:stopping") == rec.count("b:stopping") == 1
    await settled(router)
