"""Startup preload (router spec §7.1): load listed models one after another.

Each model is an ordinary request through the router, so every eviction rule
applies (preloading two members of one swap group leaves only the last one
loaded). A delivered grant counts as loaded: no synthetic ``GET /`` is sent,
because the grant already proves the process became ready, and entering the
grant still refreshes the process's TTL clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from modelswap.errors import ModelswapError
from modelswap.router.api import Ticket

__all__ = ["PreloadListener", "preload_models"]

log = logging.getLogger("modelswap.router")

PreloadListener = Callable[[str, bool], None]
"""Called after each preloaded model with (model id, success): the "model preloaded" event."""


class _Admitting(Protocol):
    def handles(self, model_id: str) -> bool: ...

    async def admit(self, model_id: str) -> Ticket: ...


async def preload_models(
    router: _Admitting, models: Sequence[str], on_preloaded: PreloadListener | None = None
) -> None:
    """Preload ``models`` in order; failures are logged, never raised."""
    for model in models:
        if not router.handles(model):
            log.warning("preload: model %s is not a local model, skipping", model)
            continue
        try:
            ticket = await router.admit(model)
            async with ticket.granted():
                pass
        except ModelswapError as error:
            log.warning("failed to preload model %s: %s", model, error.message)
            success = False
        else:
            log.info("model preloaded: %s", model)
            success = True
        if on_preloaded is not None:
            on_preloaded(model, success)
