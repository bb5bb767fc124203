"""Pledges and saga events for tests: what a donor posts, what dispatch would send."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.events import new_event
from shared.runtime import ServiceRuntime

MASKS_AND_ORANGES: dict[str, Any] = {
    "lines": [
        {
            "item": "mask",
            "standard": "GB 19083-2010",
            "quantity": "20",
            "unit": "box",
            "pack_size": 50,
            "restrictions": {"note": "frontline medical staff only"},
        },
        {"item": "fruit", "quantity": "1.5", "unit": "t"},
    ],
    "origin": {"address": "Futian District, Shenzhen", "region": "440304"},
    "notes": "collected by the foundation's volunteers",
}


def one_line(quantity: int, item: str = "mask", unit: str = "piece") -> dict[str, Any]:
    return {
        "lines": [{"item": item, "quantity": str(quantity), "unit": unit}],
        "origin": {"region": "420102", "address": "Wuhan"},
    }


def send_as_dispatch(
    dispatch: ServiceRuntime,
    type: str,
    payload: dict[str, Any],
    *,
    aggregate_id: Any,
    aggregate_version: int,
    version: int | None = None,
) -> dict[str, Any]:
    """Write an event into the dispatch service's outbox, as its matcher would; it is
    relayed to the donations queue after the commit (``version``: of the event's type,
    the newest when None). Returns the message."""
    event = new_event(
        type,
        payload,
        producer="dispatch",
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        version=version,
    )
    with dispatch.unit_of_work() as session:
        dispatch.outbox.add(session, event)
    return event.to_message()


def proposal(
    pledge: dict[str, Any],
    quantity: int,
    *,
    line: int = 0,
    allocation_id: uuid.UUID | None = None,
    deadline: datetime | None = None,
) -> dict[str, Any]:
    return {
        "allocation_id": allocation_id or uuid.uuid4(),
        "pledge_id": uuid.UUID(str(pledge["id"])),
        "pledge_line_id": uuid.UUID(str(pledge["lines"][line]["id"])),
        "need_id": uuid.uuid4(),
        "need_line_id": uuid.uuid4(),
        "recipient_org_id": uuid.uuid4(),
        "quantity": quantity,
        "deadline": deadline,
    }
