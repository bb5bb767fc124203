"""The donations service's event handlers: its half of the allocation saga, and
shipments moving reserved quantity to shipped and delivered."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.donations.pledges import service as pledges
from shared.db import utcnow
from shared.events import Event
from shared.inbox import BatchHandler, Handler
from shared.outbox import Outbox


def saga_batch_handlers(outbox: Outbox) -> dict[str, BatchHandler]:
    """The saga's handlers of several events at once: a matching run's proposals
    arrive together, and so do the shipments its reservations were planned on (and a
    scanner's batch of status changes)."""

    def on_allocations_proposed(session: Session, events: list[Event]) -> None:
        pledges.reserve_many(session, outbox, [event.data() for event in events], utcnow())

    def on_shipments(session: Session, events: list[Event]) -> None:
        # In their order, in one savepoint: the inbox's bookkeeping is done once.
        for event in events:
            pledges.apply_shipment(session, outbox, event.data())

    return {
        "allocation.proposed": on_allocations_proposed,
        "shipment.created": on_shipments,
        "shipment.status_changed": on_shipments,
    }


def saga_handlers(outbox: Outbox) -> dict[str, Handler]:
    def on_allocation_proposed(session: Session, event: Event) -> None:
        pledges.reserve(session, outbox, event.data(), utcnow())

    def on_allocation_cancelled(session: Session, event: Event) -> None:
        data = event.data()
        pledges.release_allocation(session, outbox, data["allocation_id"], data["reason"])

    def on_shipment(session: Session, event: Event) -> None:
        pledges.apply_shipment(session, outbox, event.data())

    return {
        "allocation.proposed": on_allocation_proposed,
        "allocation.cancelled": on_allocation_cancelled,
        "shipment.created": on_shipment,
        "shipment.status_changed": on_shipment,
    }
