"""Health polling: notice an upstream turning healthy within milliseconds.

llama-swap sleeps 250 ms before the first probe and then polls once a second,
so a model that is ready is on average detected ~0.5 s late, on every swap.
We poll adaptively instead: the first probe goes out at once, the interval
starts at :data:`FIRST_INTERVAL` (5 ms) and grows by :data:`BACKOFF` up to
:data:`FAST_MAX_INTERVAL` (15 ms); after :data:`SLOW_AFTER` seconds of loading
(a big model, where 30 ms more do not matter) the cap rises to
:data:`SLOW_MAX_INTERVAL` (50 ms). Probes reuse one keep-alive connection, so a
probe against a 503-ing upstream costs well under a millisecond on loopback.

Two weaknesses of the original are fixed here (router.md §9.6): every single
probe has its own timeout (:data:`REQUEST_TIMEOUT`), and the whole poll runs
under the overall deadline, so an endpoint that accepts the connection and
never answers cannot hold a start past ``healthCheckTimeout``.

Probes go through :func:`probe_session`, whose connections re-arm
``TCP_QUICKACK`` (:mod:`modelswap.quickack`): an upstream that leaves Nagle on
and sends headers and body apart (Python's ``http.server``) would otherwise
answer every probe on the kept-alive connection ~40 ms late, and readiness
would be noticed that much later on every start.

Racing the poll against the child's exit is the caller's job (the process's
controller waits on both), which keeps this module about HTTP only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from modelswap.quickack import QuickAckConnector

FIRST_INTERVAL = 0.005
BACKOFF = 1.5
FAST_MAX_INTERVAL = 0.015
SLOW_AFTER = 5.0
SLOW_MAX_INTERVAL = 0.05
REQUEST_TIMEOUT = 2.0


def probe_session() -> aiohttp.ClientSession:
    """A small pool for one start's probes: keep-alive, quick ACKs, no proxy from env."""
    return aiohttp.ClientSession(connector=QuickAckConnector(limit=2), trust_env=False)


def next_interval(interval: float, elapsed: float) -> float:
    """The pause after a failed probe, given the previous pause and time spent loading."""
    cap = FAST_MAX_INTERVAL if elapsed < SLOW_AFTER else SLOW_MAX_INTERVAL
    return min(cap, interval * BACKOFF)


async def probe(session: aiohttp.ClientSession, url: str, timeout: float = REQUEST_TIMEOUT) -> bool:
    """One health request: True only for HTTP 200. Connection trouble is just "not yet"."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as resp:
            await resp.read()  # finish the body so the connection is reused
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def wait_healthy(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Poll ``url`` until it answers 200. Raises TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        started = clock()
        interval = FIRST_INTERVAL
        while not await probe(session, url):
            await asyncio.sleep(interval)
            interval = next_interval(interval, clock() - started)
