"""Replaying a request whose upstream died before answering (issue 13 item 2).

Without this, every request already granted to an upstream that then crashes
gets a 502 — in the soak, 26–30 per crash, although none of them had received
a byte. The dispatcher (:func:`modelswap.server.dispatch.serve_local`) asks
:func:`replayable` after a failed attempt; when it says yes, the request leaves
its grant (serve done), waits until the router has seen the crash
(:func:`wait_crash_noticed`), is re-admitted — the router restarts the model as
for any request — and is sent once more with the same body.

What may be replayed, and why:

* only a failure **before any response byte**: the connection was refused,
  reset or closed before the status line
  (:class:`~modelswap.server.proxy.UpstreamConnectionLostError`), or the
  process was found not ready when the granted request went to use it (the
  503 ``process is not ready``: nothing was sent at all). A response-header
  *timeout* is not replayed: the upstream may still be working on it. A
  stream that had started cannot be replayed; it ends with an SSE error event
  instead (:mod:`modelswap.server.proxy`);
* only a body **in memory**: a client body streamed through is spent;
* only **once**, and only when the model's ``retryOnCrash`` allows it (default
  true): a request that kills its upstream every time must not loop.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from modelswap.errors import ServiceUnavailableError
from modelswap.router.runtime import LocalRouter
from modelswap.server.proxy import UpstreamConnectionLostError
from modelswap.server.recording import observation

log = logging.getLogger("modelswap.server.dispatch")

CRASH_NOTICE_GRACE = 2.0
"""Longest wait for the router to see the upstream's exit before re-admitting.

The connection breaks the moment the upstream exits, its process is noticed
(pidfd) a moment later: re-admitting in between would be granted the dead
upstream again. An upstream that is still alive (it only dropped the
connection) never changes state, so after this grace the request is replayed
to it as it is.
"""


def replayable(
    error: BaseException,
    *,
    serving: bool,
    relayed: bool,
    body: bytes | None,
    enabled: bool,
) -> bool:
    """Whether a failed attempt may be re-admitted (see module docstring).

    ``serving``: the attempt had entered its grant (a 503 before that is not
    the process's "not ready"); ``relayed``: upstream bytes reached the client.
    """
    if not enabled or body is None or relayed:
        return False
    if isinstance(error, UpstreamConnectionLostError):
        return True
    # The process crashed between the grant and its use: nothing was sent.
    return not serving and type(error) is ServiceUnavailableError


async def wait_crash_noticed(
    router: LocalRouter, model_id: str, grace: float = CRASH_NOTICE_GRACE
) -> bool:
    """Return once the router no longer sees ``model_id`` ready (False: grace ran out)."""
    try:
        async with asyncio.timeout(grace):
            await router.wait_for(lambda stats: stats.state(model_id) != "ready")
    except TimeoutError:
        return False
    return True


def announce_replay(request: web.Request, model_id: str, error: BaseException) -> None:
    """Log, count (Prometheus) and mark (activity metadata) one replay."""
    # Imported here: metrics_routes builds on the server modules that import us.
    from modelswap.server.metrics_routes import METRICS

    log.warning(
        "[%s] upstream died before answering; re-admitting the request once (%s)",
        model_id,
        error,
    )
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.on_replay(model_id)
    seen = observation(request)
    if seen is not None:
        seen.metadata["replayed"] = "1"
