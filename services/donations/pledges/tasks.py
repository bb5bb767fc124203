"""The pledges' tasks and event handlers: periodic work scheduled by beat, and the
donations half of the allocation saga (reservations, and shipments moving reserved
quantity to shipped and delivered)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from services.donations.pledges import service as pledges
from shared.db import utcnow
from shared.events import Event
from shared.inbox import BatchHandler, Handler, Inbox
from shared.outbox import Outbox
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


def register_pledge_tasks(rt: ServiceRuntime) -> None:
    @rt.celery.task(name="donations.expire_perishables", shared=False, time_limit=300)
    def expire_perishables() -> int:
        """Close perishable lines past their best-before date and release what they
        had not shipped."""
        with rt.unit_of_work() as session:
            expired = pledges.expire_perishables(session, rt.outbox, utcnow().date())
        if expired:
            log.info("%d perishable line(s) expired", expired)
        return expired

    @rt.celery.task(name="donations.release_overdue_reservations", shared=False, time_limit=300)
    def release_overdue_reservations() -> int:
        """Release reservations not shipped by their deadline, each in its own
        transaction, so one failure does not hold back the rest."""
        released = 0
        with rt.session_factory() as session:
            overdue = [r.id for r in pledges.overdue_reservations(session, utcnow())]
        for reservation_id in overdue:
            with rt.unit_of_work() as session:
                from services.donations.models import Reservation

                reservation = session.get(Reservation, reservation_id)
                if reservation is not None and pledges.release_reservation(
                    session, rt.outbox, reservation, "not shipped by its deadline"
                ):
                    released += 1
        if released:
            log.info("released %d overdue reservation(s)", released)
        return released


def proposals_of(session: Session, inbox: Inbox, events: list[Event]) -> list[dict[str, Any]]:
    """The allocations ``allocation.proposed`` events propose, in order: one an event
    in version 1 (the inbox kept its allocation's events in order), many in version 2,
    of which those whose allocation had a later event applied first (a cancellation
    that overtook its proposal) are left out, as the inbox leaves out a stale event."""
    proposals: list[dict[str, Any]] = []
    for event in events:
        data = event.data()
        if event.version == 1:
            proposals.append(data)
            continue
        carried = {str(each["allocation_id"]): each for each in data["allocations"]}
        heard = inbox.first_heard(session, list(carried))
        if len(heard) < len(carried):
            log.info(
                "%d allocation(s) of %s were cancelled before they were proposed here",
                len(carried) - len(heard),
                event.id,
            )
        proposals.extend(carried[key] for key in heard)
    return proposals


def saga_batch_handlers(outbox: Outbox, inbox: Inbox) -> dict[str, BatchHandler]:
    """The saga's handlers of several events at once: a matching run's proposals
    arrive together, and so do the shipments its reservations were planned on (and a
    scanner's batch of status changes)."""

    def on_allocations_proposed(session: Session, events: list[Event]) -> None:
        pledges.reserve_many(session, outbox, proposals_of(session, inbox, events), utcnow())

    def on_shipments(session: Session, events: list[Event]) -> None:
        # In their order, in one savepoint: the inbox's bookkeeping is done once.
        for event in events:
            pledges.apply_shipment(session, outbox, event.data())

    return {
        "allocation.proposed": on_allocations_proposed,
        "shipment.created": on_shipments,
        "shipment.status_changed": on_shipments,
    }


def saga_handlers(outbox: Outbox, inbox: Inbox) -> dict[str, Handler]:
    def on_allocation_proposed(session: Session, event: Event) -> None:
        if event.version == 1:
            pledges.reserve(session, outbox, event.data(), utcnow())
        else:
            pledges.reserve_many(session, outbox, proposals_of(session, inbox, [event]), utcnow())

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
