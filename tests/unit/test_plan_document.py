"""A plan as a matching run keeps it: each allocation's reason written field by field,
as every other value of the plan is, the floats to three places; a reason with a field
the document leaves out would fail here first."""

from __future__ import annotations

from dataclasses import asdict, fields
from types import SimpleNamespace

import pytest

from services.dispatch.matching.model import Allocation, Reason
from services.dispatch.matching.service import plan_document


@pytest.mark.parametrize(
    "reason",
    [
        Reason(urgency="critical", distance_km=12.34567, need_fill=0.6, days_of_supply=1.23456),
        Reason(urgency="normal", distance_km=0.0, need_fill=1.0, nearest=False),
    ],
)
def test_a_reason_is_written_as_its_fields_with_floats_to_three_places(reason: Reason) -> None:
    # What plan_document reads of a plan: its allocations and what is left unmet.
    plan = SimpleNamespace(
        allocations=(
            Allocation(supply_id="s1", demand_id="d1", item="mask", quantity=5, reason=reason),
        ),
        unmet={"d2": 3, "d3": 0},
    )
    document = plan_document(plan)
    [allocation] = document["allocations"]
    expected = {
        name: round(value, 3) if isinstance(value, float) else value
        for name, value in asdict(reason).items()
    }
    assert allocation["reason"] == expected
    assert list(allocation["reason"]) == [f.name for f in fields(Reason)]
    assert allocation == {
        "pledge_line_id": "s1",
        "need_line_id": "d1",
        "item": "mask",
        "standard": None,
        "quantity": 5,
        "reason": expected,
    }
    assert document["unmet"] == [{"need_line_id": "d2", "quantity": 3}]
