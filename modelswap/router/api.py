"""The contract between the HTTP layer and the local model router.

The server never touches a process or a queue: it asks the router for a
model, waits for the grant, forwards bytes to the upstream the grant names,
and tells the router when it is done by leaving the grant's context. This
module is that conversation, as Protocols, so the server and the router can
be built and tested apart.

A request's life, as the server sees it::

    ticket = await router.admit(model_id)        # 404 / 429 / shutting down raise here
    # ... optionally start a loading stream, reading ticket.position ...
    async with ticket.granted() as upstream:      # waits for the grant; errors raise here
        ...forward to upstream.base_url...       # leaving the block = "serve done"

If the client goes away while waiting, the handler's task is cancelled inside
``granted()`` (or the server calls ``ticket.cancel()``); the router then
forgets the request and, if a grant was already on its way, never counts it
as in flight.

A handler that may fail or be cancelled *between* ``admit`` and ``granted()``
(a loading stream being set up, say) must call ``ticket.cancel()`` in a
``finally``: it is idempotent and a no-op once ``granted()`` was entered, and
without it the ticket's reservation (and any grant already delivered) is
never given back::

    ticket = await router.admit(model_id)
    try:
        ...
        async with ticket.granted() as upstream:
            ...
    finally:
        ticket.cancel()

Ignored websockets (router spec §3.13) bypass the scheduler entirely:
``router.loaded_upstream(model_id)`` returns the upstream of a ready model or
raises 404 / 409, and never starts anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Upstream(Protocol):
    """What a granted request may use: where to send bytes, and activity accounting."""

    @property
    def model_id(self) -> str: ...

    @property
    def base_url(self) -> str:
        """The upstream's base URL (the model's ``proxy``), e.g. ``http://127.0.0.1:5800``."""
        ...

    @property
    def fifo_priority(self) -> str:
        """The model's FIFO priority as a decimal string, for activity metadata (§3.4)."""
        ...


class Ticket(Protocol):
    """An admitted request that holds a reservation and waits for its grant."""

    @property
    def model_id(self) -> str: ...

    @property
    def position(self) -> int | None:
        """Latest 1-based queue position, or None while not queued (e.g. joined a swap)."""
        ...

    async def wait_position_change(self) -> int | None:
        """Wait until ``position`` changes (for the loading stream) and return it."""
        ...

    def granted(self) -> AbstractAsyncContextManager[Upstream]:
        """Wait for the grant; the context's exit reports the request served.

        Raises the grant's error (a ``ModelswapError``: swap failed, model
        unloaded, shutting down). Cancellation while waiting withdraws the
        request.
        """
        ...

    def cancel(self) -> None:
        """Withdraw the request if it was not granted yet (idempotent)."""
        ...


class ModelRouter(Protocol):
    """The local router: one scheduler, one set of managed processes."""

    @property
    def name(self) -> str:
        """``group`` or ``matrix``: used in error texts (``group is shutting down``)."""
        ...

    def handles(self, model_id: str) -> bool: ...

    def state_of(self, model_id: str) -> str:
        """Advisory snapshot: stopped / starting / ready / stopping / shutdown."""
        ...

    def running_models(self) -> Mapping[str, str]:
        """{model id: state} of every process that is neither stopped nor shut down."""
        ...

    async def admit(self, model_id: str) -> Ticket:
        """Reserve a slot for one request (404 unknown, 429 over the limit, or shutting down)."""
        ...

    def loaded_upstream(self, model_id: str) -> Upstream:
        """A ready model's upstream without scheduling (ignored websockets, §3.13).

        No reservation, no in-flight slot, no TTL activity; never starts a
        model. 404 ``no local server found for requested model`` for a model
        not served here, 409 ``model <id> is not loaded; ignored websocket
        requests cannot start it`` if it is not ready.
        """
        ...

    async def unload(self, models: Sequence[str] | None = None, timeout: float = 0) -> None:
        """Stop the named models (all when None); return once they are stopped."""
        ...

    async def shutdown(self, timeout: float = 0) -> None:
        """Fail every waiter, stop every process, refuse new requests."""
        ...
