"""The allocations' event handlers: dispatch's half of the reservation saga."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from services.dispatch.allocations.service import (
    apply_pledge,
    on_accepted,
    on_accepted_many,
    on_rejected,
    on_rejected_many,
    on_released,
    on_released_many,
)
from services.dispatch.models import Allocation
from shared.events import Event
from shared.inbox import BatchHandler, Handler


def saga_batch_handlers(
    on_reserved_many: Callable[[Session, list[Allocation]], None] | None = None,
    on_change: Callable[[Session, str], None] | None = None,
) -> dict[str, BatchHandler]:
    """The saga's handlers of several events at once (see ``Inbox.batch_handlers``):
    a matching run's reservations come back together, and so may its refusals, or a
    cancelled pledge's releases; ``on_change(session, item)`` asks for matching of the
    items whose quantity went back to it."""

    def accepted(session: Session, events: list[Event]) -> None:
        reserved = on_accepted_many(session, [event.data() for event in events])
        if reserved and on_reserved_many is not None:
            on_reserved_many(session, reserved)

    def back_to_matching(
        step: Callable[[Session, list[dict[str, Any]]], list[Allocation]],
    ) -> BatchHandler:
        def handle(session: Session, events: list[Event]) -> None:
            moved = step(session, [event.data() for event in events])
            if on_change is not None:
                for item in sorted({allocation.item for allocation in moved}):
                    on_change(session, item)

        return handle

    return {
        "reservation.accepted": accepted,
        "reservation.rejected": back_to_matching(on_rejected_many),
        "reservation.released": back_to_matching(on_released_many),
    }


def saga_handlers(
    on_change: Callable[[Session, str], None],
    on_reserved: Callable[[Session, Allocation], None] | None = None,
) -> dict[str, Handler]:
    """Handlers of the donations events; ``on_change(session, item)`` asks for matching
    of an item whose supply or demand just changed, ``on_reserved(session, allocation)``
    is told of an allocation that has just become reserved (to plan its shipment)."""

    def on_pledge(session: Session, event: Event) -> None:
        data = event.data()
        apply_pledge(session, data, event.aggregate_version)
        for item in {line["item"] for line in data["lines"]}:
            on_change(session, item)

    def reservation(step: Callable[[Session, dict[str, Any]], Allocation | None]) -> Handler:
        def handle(session: Session, event: Event) -> None:
            allocation = step(session, event.data())
            if allocation is not None and allocation.status in ("rejected", "cancelled"):
                on_change(session, allocation.item)
            if allocation is not None and allocation.status == "reserved" and on_reserved:
                on_reserved(session, allocation)

        return handle

    return {
        "pledge.created": on_pledge,
        "pledge.amended": on_pledge,
        "pledge.cancelled": on_pledge,
        "reservation.accepted": reservation(on_accepted),
        "reservation.rejected": reservation(on_rejected),
        "reservation.released": reservation(on_released),
    }
