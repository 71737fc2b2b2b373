"""Refuse to start an upstream whose port another process already holds.

If a stale server (an upstream left over from an earlier run, another
modelswap) already listens on the port a model's ``cmd`` is told to bind, the
new upstream fails to bind and exits — but the health check may be answered
by the stale server first, and the model would be marked ready and served by
the wrong process. llama-swap has the same weakness. So before spawning, when
the ``cmd`` names the proxy's port (``--port 5800``, ``-p 5800:8080``) and
something already accepts connections there, the start fails with a clear
error. A ``cmd`` that does not name the port (a wrapper around a server that
is already running elsewhere) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence

from yarl import URL

from modelswap.errors import UpstreamStartError

#: How long a connection attempt may take before the port counts as free.
#: On loopback a closed port refuses at once; this only bounds odd hosts.
PROBE_TIMEOUT = 0.25


def claimed_port(argv: Sequence[str], proxy: str) -> tuple[str, int] | None:
    """(host, port) of the proxy when ``argv`` names that port as a whole number."""
    try:
        url = URL(proxy)
    except (ValueError, TypeError):
        return None
    if url.host is None or url.explicit_port is None:
        return None
    number = re.compile(rf"(?<!\d){url.explicit_port}(?!\d)")
    if any(number.search(arg) for arg in argv):
        return url.host, url.explicit_port
    return None


async def accepts_connections(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether something already listens on ``host:port``."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def ensure_port_free(argv: Sequence[str], proxy: str) -> None:
    """Raise :class:`UpstreamStartError` if the port ``argv`` must bind is taken."""
    claim = claimed_port(argv, proxy)
    if claim is None:
        return
    host, port = claim
    if await accepts_connections(host, port):
        raise UpstreamStartError(
            f"port {port} is already in use by another process, so the upstream could not "
            "bind it and its health check would be answered by that process "
            "(a stale upstream from an earlier run?)"
        )
