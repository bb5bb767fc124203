"""``shared.db.columns_of`` refuses an object that leaves a column with a default
unset: written as built, the row would hold NULL where the ORM gave the default."""

from __future__ import annotations

import uuid

import pytest

from services.donations.models import PledgeLine
from shared.db import columns_of


def _line(**values: object) -> PledgeLine:
    return PledgeLine(
        **{
            "id": uuid.uuid4(),
            "pledge_id": uuid.uuid4(),
            "line_no": 1,
            "item": "mask",
            "standard": None,
            "quantity": 100,
            "entered_quantity": "100",
            "entered_unit": "piece",
            "pack_size": None,
            "best_before": None,
            "restrictions": {},
            "reserved": 0,
            "shipped": 0,
            "delivered": 0,
            "status": "available",
            **values,
        }
    )


def test_every_column_of_an_object_built_whole_is_given() -> None:
    line = _line()
    values = columns_of(line)
    assert values["quantity"] == 100 and values["restrictions"] == {}
    assert set(values) == {c.key for c in PledgeLine.__table__.columns}


def test_a_column_with_a_default_left_unset_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"pledge_lines\.restrictions has a default"):
        columns_of(_line(restrictions=None))
