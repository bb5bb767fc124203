"""Every event of the whole saga delivered twice and out of order, by every process
that publishes: each takes effect once, and the saga ends as it would have."""

from __future__ import annotations

from services.donations.models import Reservation
from shared.config import SERVICES
from tests.support.faults import (
    Saga,
    arrived_out_of_order,
    assert_accounted,
    deliveries_of,
    inbox_outcomes,
    install,
    post,
    start_workers,
)
from tests.support.stack import Stack, eventually


def test_every_event_twice_and_out_of_order_takes_effect_once(stack: Stack) -> None:
    chaos = {"publish": "twice_out_of_order"}
    for service in SERVICES:
        install(stack.runtime(service), chaos)
    start_workers(stack, chaos)

    saga = Saga.begin(stack)
    saga.submit()
    eventually(saga.supply_known, timeout=60)
    saga.match()
    eventually(lambda: saga.decided(sweep=False), timeout=90)

    # A coordinator cancels a reserved allocation: allocation.cancelled and the
    # reservation.released it causes cross the chaos too; the freed quantity is
    # matched again.
    reserved = [a for a in saga.allocations() if a.status == "reserved"]
    assert reserved
    doomed = reserved[0]
    post(
        stack.client(),
        f"/api/v1/allocations/{doomed.id}/cancel",
        {"reason": "road closed"},
        saga.chief,
        status=200,
    )

    def released() -> bool:
        with stack.runtime("donations").session_factory() as session:
            found = session.query(Reservation).filter_by(allocation_id=doomed.id).one()
            return found.status == "released"

    eventually(released, timeout=60)
    saga.match(first=False)
    assert_accounted(saga)

    # Every event reached each subscriber at least twice and was applied once.
    def all_twice() -> bool:
        return all(
            min(deliveries_of(stack, service).values(), default=2) >= 2 for service in SERVICES
        )

    eventually(all_twice, timeout=60)
    for service in SERVICES:
        assert set(inbox_outcomes(stack, service)) <= {"applied", "stale", "ignored"}
    # And they did arrive out of order.
    assert arrived_out_of_order(stack, "donations") + arrived_out_of_order(stack, "dispatch") > 0
