"""Goods in a community's stock for tests of what happens inside it, without a whole
supply chain before it: a receipt of a shipment to the community, as dispatch announces
it, taken in by the community service's own handler (the seed story in
tests/integration/test_community.py proves the chain itself)."""

from __future__ import annotations

import uuid

from shared.db import utcnow
from shared.events import new_event
from tests.support.community import Community
from tests.support.stack import Stack


def receive(stack: Stack, place: Community, items: dict[str, int]) -> None:
    """``items`` (relief item -> base units) accepted by the community from one shipment."""
    from services.community.distribution.service import on_receipt_confirmed

    shipment_id = uuid.uuid4()
    event = new_event(
        "receipt.confirmed",
        {
            "receipt_id": uuid.uuid4(),
            "shipment_id": shipment_id,
            "sequence": 1,
            "recipient_org_id": uuid.UUID(place.committee.org_id),
            "confirmed_at": utcnow(),
            "lines": [
                {
                    "shipment_line_id": uuid.uuid4(),
                    "allocation_id": uuid.uuid4(),
                    "pledge_line_id": uuid.uuid4(),
                    "need_line_id": uuid.uuid4(),
                    "item": item,
                    "quantity": quantity,
                    "accepted": quantity,
                    "damaged": 0,
                    "short": 0,
                }
                for item, quantity in items.items()
            ],
        },
        producer="dispatch",
        aggregate_id=shipment_id,
        aggregate_version=1,
    )
    with stack.runtime("community").unit_of_work() as session:
        on_receipt_confirmed(session, event)
