"""The fake upstream plus ``GET /chatter?lines=N&tag=T``: a burst of output on stdout.

Log tests need a model that writes a lot while it serves. The burst is
written with blocking writes from the fake's event loop before it answers,
so the request only completes if modelswap keeps draining the child's pipe —
exactly what a stalled log reader must never prevent. Each burst ends with
the line ``chatter <T> done``.

Run as ``python -m tests.integration.chatty_upstream`` with the fake's flags.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aiohttp import web

from modelswap.testing import fake_upstream

LINE_BYTES = 1024


class ChattyUpstream(fake_upstream.FakeUpstream):
    async def catch_all(self, request: web.Request) -> web.Response:
        if request.path != "/chatter":
            return await super().catch_all(request)
        lines, tag = int(request.query.get("lines", "1")), request.query.get("tag", "")
        filler = f"chatter {tag} ".encode().ljust(LINE_BYTES - 1, b".") + b"\n"
        out = sys.stdout.buffer
        for _ in range(lines):
            out.write(filler)
        out.write(f"chatter {tag} done\n".encode())
        out.flush()
        return web.Response(text="ok")


def main(argv: Sequence[str] | None = None) -> int:
    # fake_upstream.serve() builds its server from the module's FakeUpstream.
    fake_upstream.FakeUpstream = ChattyUpstream  # type: ignore[misc]
    return fake_upstream.main(argv)


if __name__ == "__main__":
    sys.exit(main())
