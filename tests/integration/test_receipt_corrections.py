"""A receipt moves each need line once, by what all its shipment lines change together:
a correction that moves damage from one line of a shipment to another line of the same
need line changes nothing on the need line, and is applied whatever order the receipt
lists the lines in, also when matching has allocated the reopened quantity again
meanwhile. Taking back reopened quantity that is allocated again is still refused,
naming the line."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.dispatch.allocations import service as saga
from services.dispatch.models import NeedLine, Shipment
from services.dispatch.needs import service as needs
from services.dispatch.receipts import service as receipts
from services.dispatch.shipments import service as shipments
from shared.config import Settings
from shared.errors import Conflict
from tests.support.world import supply_line


def _delivered_in_two_lines(rt: Any) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A need line of 20 masks carried by one shipment in two lines of 10 (two pledges
    of one donor), delivered. Returns the shipment's, the need line's and the donor's
    ids."""
    donor = uuid.uuid4()
    with rt.unit_of_work() as session:
        need = needs.create_need(
            session,
            rt.outbox,
            org_id=uuid.uuid4(),
            org_verified=True,
            data={
                "lines": [{"item": "mask", "quantity": "20", "unit": "piece", "urgency": "high"}],
                "location": {"region": "420103", "address": "ward 3"},
            },
        )
        need_line_id = need.lines[0].id
        supplies = [supply_line(session, 10, donor), supply_line(session, 10, donor)]
        proposed = saga.propose_many(
            session,
            rt.outbox,
            [saga.Proposal(s, need_line_id, 10, {"tier": 1}) for s in supplies],
            run_id=None,
        )
        reserved = saga.on_accepted_many(
            session,
            [
                {"allocation_id": p.allocation.id, "reason": "test"}
                for p in proposed
                if p.allocation
            ],
        )
        assert len(reserved) == 2
        shipments.plan_allocations(session, rt.outbox, reserved)
    with rt.unit_of_work() as session:
        (shipment,) = session.query(Shipment).all()
        assert len(shipment.lines) == 2
        for status in ("picked_up", "delivered"):
            at = max(datetime.now(UTC), shipment.status_at) + timedelta(seconds=1)
            shipments.record_update(
                session, rt.outbox, shipment, status=status, occurred_at=at, now=at
            )
        return shipment.id, need_line_id, donor


def _receipt(
    rt: Any, shipment_id: uuid.UUID, figures: list[tuple[int, int]], *, reverse: bool = False
) -> None:
    """A receipt (a correction once there is one) of (accepted, damaged) per line in
    line order, listed backwards with ``reverse``."""
    with rt.unit_of_work() as session:
        shipment = session.get(Shipment, shipment_id, with_for_update=True)
        assert shipment is not None
        ordered = sorted(shipment.lines, key=lambda line: line.line_no)
        lines = [
            {
                "shipment_line_id": line.id,
                "accepted": accepted,
                "damaged": damaged,
                "short": line.quantity - accepted - damaged,
            }
            for line, (accepted, damaged) in zip(ordered, figures, strict=True)
        ]
        latest = receipts.latest_receipt(session, shipment.id)
        receipts.confirm_receipt(
            session,
            rt.outbox,
            shipment,
            lines=lines[::-1] if reverse else lines,
            corrects=latest.id if latest is not None else None,
            org_id=shipment.recipient_org_id,
        )


def _counters(rt: Any, need_line_id: uuid.UUID) -> tuple[int, int, int, int]:
    with rt.session_factory() as session:
        line = session.get_one(NeedLine, need_line_id)
        return line.proposed, line.reserved, line.shipped, line.received


@pytest.mark.parametrize("reverse", [False, True], ids=["in-line-order", "backwards"])
def test_damage_moved_between_two_lines_of_one_need_line_is_applied_in_any_order(
    settings: Settings, reverse: bool
) -> None:
    from services.dispatch.app import create_app

    rt = create_app(settings).extensions["aidlink"]
    shipment_id, need_line_id, donor = _delivered_in_two_lines(rt)
    # 5 of the first line damaged: 5 back to matching, which allocates them again.
    _receipt(rt, shipment_id, [(5, 5), (10, 0)])
    assert _counters(rt, need_line_id) == (0, 0, 15, 15)
    with rt.unit_of_work() as session:
        (again,) = saga.propose_many(
            session,
            rt.outbox,
            [saga.Proposal(supply_line(session, 5, donor), need_line_id, 5, {"tier": 1})],
            run_id=None,
        )
        assert again.allocation is not None, again.refused
    assert _counters(rt, need_line_id) == (5, 0, 15, 15)

    # The damage was on the second line, not the first: the need line's figures do not
    # change, whichever line is applied first (applied line by line, the first line's
    # taking back was refused when it came first).
    _receipt(rt, shipment_id, [(10, 0), (5, 5)], reverse=reverse)
    assert _counters(rt, need_line_id) == (5, 0, 15, 15)

    # Taking back the reopened quantity that matching allocated again is refused, and
    # the error names the line that would take it back.
    with pytest.raises(Conflict) as refused:
        _receipt(rt, shipment_id, [(10, 0), (10, 0)], reverse=reverse)
    assert refused.value.slug == "receipt-quantity-reallocated"
    index = 0 if reverse else 1
    assert refused.value.errors == {f"lines.{index}.accepted": ["At most 5 can be accepted now."]}
    assert _counters(rt, need_line_id) == (5, 0, 15, 15)
    rt.dispose()
