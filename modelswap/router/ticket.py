"""One admitted request as the HTTP layer holds it: :class:`LocalTicket`.

A ticket is the handler's side of a two-future handshake with the router's
loop (:mod:`modelswap.router.runtime`): the loop *delivers* admission and the
grant by resolving futures; the handler *reports* what it did with them by
posting events. Neither side ever waits on the other while holding state, so
the exactly-once rules of the scheduler (router spec §3.1) come down to three
facts about futures, all checked synchronously:

* the loop delivers a grant only into a future that is still pending; if the
  handler has already gone (future cancelled) delivery fails and the loop
  reports ``GrantUndelivered`` itself;
* a handler that leaves (cancellation, :meth:`cancel`) looks at its own grant
  future: still pending → it cancels it and posts ``Cancelled``; already holds
  a serve grant → the grant *was* delivered, so it posts ``ServeDone``;
* a handler that entered the granted context posts ``ServeDone`` from the
  context's ``finally`` — also when it is cancelled mid-serve.

Outcomes travel as future *results* (a grant, or the error to raise), never as
future exceptions, so an outcome nobody reads cannot log "exception never
retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

from modelswap.core.events import Cancelled, Event, ServeDone
from modelswap.errors import (
    ModelNotFoundError,
    ModelswapError,
    ModelUnloadedError,
    RouterError,
    RouterShuttingDownError,
    SwapFailedError,
    TooManyRequestsError,
)
from modelswap.process import ManagedProcess
from modelswap.router.facts import SwapFinished

__all__ = ["GrantedUpstream", "LocalTicket", "ServeGrant", "outcome_error"]

Phase = Literal["arriving", "admitted", "waiting", "serving", "finished"]


@dataclass(frozen=True, slots=True)
class ServeGrant:
    """The loop's "serve it" answer; ``fifo_priority`` goes into activity metadata.

    ``process`` is the one in place when the grant was given: after a config
    reload replaced the model, a request granted before keeps its old process
    and one granted after gets the new one — never half of each.
    """

    model_id: str
    fifo_priority: str
    process: ManagedProcess


GrantOutcome = ServeGrant | ModelswapError


def outcome_error(
    router_name: str,
    status: int,
    message: str,
    retry_after: int | None = None,
    *,
    swap: bool = False,
) -> ModelswapError:
    """A scheduler status and bare text → the exception the HTTP layer maps (§3.15).

    ``swap``: the text is a failed start's error (a ``GrantError``), not a
    rejection at admission.
    """
    if status == 404:
        return ModelNotFoundError(message)
    if status == 429:
        return TooManyRequestsError(message, retry_after or 1)
    if message == f"{router_name} is shutting down":
        return RouterShuttingDownError(message)
    if message == f"{router_name}: model unloaded":
        return ModelUnloadedError(message)
    error = SwapFailedError(message) if swap else RouterError(message)
    error.status = status
    return error


@dataclass(frozen=True, slots=True)
class GrantedUpstream:
    """What a granted handler forwards to (implements :class:`~.api.Upstream`)."""

    model_id: str
    base_url: str
    fifo_priority: str = "0"


class LocalTicket:
    """An admitted request waiting for, holding, or done with its grant (:class:`~.api.Ticket`).

    Created by :meth:`LocalRouter.admit`; the ``resolve_*``/``deliver``/
    ``set_position`` methods are called only by the router's loop, everything
    else only by the handler that owns the ticket.
    """

    def __init__(
        self,
        request_id: int,
        model_id: str,
        post: Callable[[Event], None],
        clock: Callable[[], float],
    ) -> None:
        loop = asyncio.get_running_loop()
        self.request_id = request_id
        self._model_id = model_id
        self._post = post
        self._clock = clock
        self._admitted: asyncio.Future[ModelswapError | None] = loop.create_future()
        self._grant: asyncio.Future[GrantOutcome] = loop.create_future()
        self._phase: Phase = "arriving"
        self._position: int | None = None
        self._position_waiters: list[asyncio.Future[int | None]] = []
        self.admitted_by_router = False  # set by the loop when it applied Admit
        # The request's own timeline, for the explain record (router clock):
        self.arrived = clock()
        """When the request reached the router."""
        self.granted_at: float | None = None
        """When its serve grant was delivered."""
        self.swap: SwapFinished | None = None
        """The swap whose completion granted it, if it waited for one."""

    def __repr__(self) -> str:
        return (
            f"<LocalTicket #{self.request_id} {self._model_id!r} {self._phase} "
            f"position={self._position}>"
        )

    # --- the Ticket protocol (handler side) ---------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def phase(self) -> Phase:
        """arriving → admitted → waiting → serving → finished (errors jump to finished)."""
        return self._phase

    @property
    def position(self) -> int | None:
        return self._position

    async def wait_position_change(self) -> int | None:
        """Return the next position the loop sets (None: left the queue)."""
        waiter: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._position_waiters.append(waiter)
        try:
            return await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._position_waiters.remove(waiter)

    @contextlib.asynccontextmanager
    async def granted(self) -> AsyncIterator[GrantedUpstream]:
        """Wait for the grant, then serve; leaving the block reports the request done.

        While serving, the process counts the request for TTL
        (:meth:`ManagedProcess.track_request`); a process that crashed between
        the grant and now answers 503 ``[<id>] process is not ready`` (§3.9).
        """
        if self._phase != "admitted":
            raise RuntimeError(f"granted() needs an admitted ticket; this one is {self._phase}")
        self._phase = "waiting"
        try:
            outcome = await self._grant
        except asyncio.CancelledError:
            self.cancel()
            raise
        if isinstance(outcome, ModelswapError):
            self._phase = "finished"
            raise outcome
        self._phase = "serving"
        try:
            async with outcome.process.track_request() as url:
                yield GrantedUpstream(self._model_id, url, outcome.fifo_priority)
        finally:
            self._finish_serving()

    def cancel(self) -> None:
        """Withdraw the request unless it is being served (idempotent).

        Safe to call from any ``finally``: a handler that never reached
        :meth:`granted` (an exception, a cancellation between ``admit`` and
        ``granted``) must call it, or its reservation stays held.
        """
        if self._phase in ("serving", "finished"):
            return
        was: Phase = self._phase
        self._phase = "finished"
        if was == "arriving" and not self._admission_granted():
            # The loop has not admitted it yet: it will see the cancelled future
            # and drop the arrival as "client gone", with no reservation (§8.2 #29).
            self._admitted.cancel()
            self._grant.cancel()
            return
        if self._grant.done() and not self._grant.cancelled():
            if isinstance(self._grant.result(), ServeGrant):
                # Delivered but never used: it counts as served, so report it done.
                self._post(ServeDone(self.request_id, self._clock()))
            return
        self._grant.cancel()
        self._post(Cancelled(self.request_id))

    # --- admission (router side of admit) ---------------------------------------------

    async def wait_admitted(self) -> None:
        """Wait for Admit/Reject; raise the rejection; cancellation withdraws."""
        try:
            error = await self._admitted
        except asyncio.CancelledError:
            self.cancel()
            raise
        if error is not None:
            self._phase = "finished"
            raise error
        self._phase = "admitted"

    def _admission_granted(self) -> bool:
        done = self._admitted.done() and not self._admitted.cancelled()
        return done and self._admitted.result() is None

    # --- the loop's side ------------------------------------------------------------------

    def admission_abandoned(self) -> bool:
        """Whether the handler left before the loop saw the arrival."""
        return self._admitted.cancelled()

    def resolve_admission(self, error: ModelswapError | None) -> None:
        if error is None:
            self.admitted_by_router = True
        if not self._admitted.done():
            self._admitted.set_result(error)

    def deliver(self, outcome: GrantOutcome) -> bool:
        """Hand the grant over; False if the handler has already gone (not delivered)."""
        self._set_position(None)
        if self._grant.done():
            return False
        if isinstance(outcome, ServeGrant):
            self.granted_at = self._clock()
        self._grant.set_result(outcome)
        return True

    def set_position(self, position: int | None) -> None:
        self._set_position(position)

    def _set_position(self, position: int | None) -> None:
        if position == self._position:
            return
        self._position = position
        waiters, self._position_waiters = self._position_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(position)

    def _finish_serving(self) -> None:
        self._phase = "finished"
        self._post(ServeDone(self.request_id, self._clock()))
