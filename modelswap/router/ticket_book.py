"""The loop's tickets by request ID: delivering admissions, grants and queue positions.

A :class:`~.ticket.LocalTicket` is the handler's side of one request; this
book is the loop's side. It records the ticket when ``RequestArrived`` is
handled, turns the scheduler's ``Admit``/``Reject``/``GrantServe``/
``GrantError``/``Positions`` into calls on the right ticket, and forgets a
ticket when the event that ends its story has been handled. A grant whose
handler has already gone is *undelivered*: the book counts it and the loop
reports it back to the scheduler as ``GrantUndelivered`` so the slot is freed.

Owned by the loop like everything else it registers (design.md rule 2); kept
apart from :mod:`.runtime` so the request bookkeeping reads in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping

from modelswap.core import events as e
from modelswap.router.facts import SwapFinished
from modelswap.router.ticket import LocalTicket, ServeGrant, outcome_error

__all__ = ["TicketBook"]


class TicketBook:
    """Tickets the loop still follows; ``undelivered`` counts grants nobody took."""

    def __init__(self, router_name: str) -> None:
        self._name = router_name
        self._tickets: dict[int, LocalTicket] = {}
        self._positioned: set[int] = set()
        self.undelivered = 0

    def __len__(self) -> int:
        return len(self._tickets)

    def arrived(self, request_id: int) -> float | None:
        """When the request arrived (router clock); None if it is not followed."""
        ticket = self._tickets.get(request_id)
        return ticket.arrived if ticket is not None else None

    def register(self, event: e.RequestArrived, ticket: LocalTicket) -> e.RequestArrived:
        """Follow ``ticket``; the event to handle (``client_gone`` if admission was abandoned)."""
        self._tickets[event.request_id] = ticket
        if ticket.admission_abandoned():
            return dataclasses.replace(event, client_gone=True)
        return event

    def forget(self, event: e.Event) -> None:
        """Drop tickets whose story this event ended."""
        if isinstance(event, e.RequestArrived):
            ticket = self._tickets.get(event.request_id)
            if ticket is not None and not ticket.admitted_by_router:
                del self._tickets[event.request_id]
        elif isinstance(event, e.Cancelled | e.ServeDone | e.GrantUndelivered):
            self._tickets.pop(event.request_id, None)

    # --- decisions, delivered --------------------------------------------------------------

    def admit(self, request_id: int) -> None:
        self._tickets[request_id].resolve_admission(None)

    def reject(self, request_id: int, status: int, message: str, retry_after: int | None) -> None:
        ticket = self._tickets.pop(request_id, None)
        if ticket is not None:
            ticket.resolve_admission(outcome_error(self._name, status, message, retry_after))

    def grant(self, request_id: int, grant: ServeGrant, swap: SwapFinished | None) -> bool:
        """Hand ``grant`` over; False (and counted) if its handler has gone.

        ``swap`` is the swap whose completion granted it, if it loaded this
        model: the ticket keeps it so the request can tell what it waited for.
        """
        ticket = self._tickets.get(request_id)
        if ticket is not None and swap is not None and swap.model == grant.model_id:
            ticket.swap = swap
        if ticket is None or not ticket.deliver(grant):
            self.undelivered += 1
            return False
        return True

    def grant_error(self, request_id: int, status: int, message: str) -> None:
        ticket = self._tickets.pop(request_id, None)
        if ticket is not None:
            ticket.deliver(outcome_error(self._name, status, message, swap=True))

    def set_positions(self, positions: Mapping[int, int]) -> None:
        for request_id, position in positions.items():
            ticket = self._tickets.get(request_id)
            if ticket is not None:
                ticket.set_position(position)
                self._positioned.add(request_id)

    def refresh_positions(self, queued: Callable[[], Collection[int]]) -> None:
        """Tell tickets that left the queue (joined or started a swap) they have no position.

        ``queued()`` gives the request IDs still queued; asked only if needed.
        """
        if not self._positioned:
            return
        still = set(queued())
        for request_id in self._positioned - still:
            ticket = self._tickets.get(request_id)
            if ticket is not None:
                ticket.set_position(None)
        self._positioned &= still

    def __repr__(self) -> str:
        return f"<TicketBook tickets={len(self._tickets)} undelivered={self.undelivered}>"
