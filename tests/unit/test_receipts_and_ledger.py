"""Rules of receipts and of the ledger's filters, without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from services.dispatch.receipts.service import Counted, check_lines, receipt_status
from services.dispatch.transparency.service import Filters, city, month

A, B = uuid.uuid4(), uuid.uuid4()
QUANTITIES = {A: 100, B: 40}


def _line(line_id: uuid.UUID, accepted: int, damaged: int = 0, short: int = 0) -> dict:
    return {"shipment_line_id": line_id, "accepted": accepted, "damaged": damaged, "short": short}


def test_every_line_once_with_figures_that_add_up() -> None:
    counted, errors = check_lines(QUANTITIES, [_line(A, 90, 6, 4), _line(B, 40)])
    assert errors == {}
    assert counted == {A: Counted(90, 6, 4), B: Counted(40, 0, 0)}
    assert counted[A].back_to_matching == 10


def test_errors_name_the_line_and_field() -> None:
    _, errors = check_lines(
        QUANTITIES, [_line(A, 90, 6, 5), _line(A, 100), _line(uuid.uuid4(), 1), _line(B, 41, -1)]
    )
    assert set(errors) == {
        "lines.0",
        "lines.1.shipment_line_id",
        "lines.2.shipment_line_id",
        "lines.3.damaged",
    }
    assert "carried 100" in errors["lines.0"][0]


def test_a_missing_line_is_named() -> None:
    _, errors = check_lines(QUANTITIES, [_line(A, 100)])
    assert list(errors) == ["lines"]
    assert str(B) in errors["lines"][0]


def test_receipt_status_follows_the_latest_sequence() -> None:
    assert receipt_status([]) == "pending"

    class R:
        def __init__(self, sequence: int) -> None:
            self.sequence = sequence

    assert receipt_status([R(1)]) == "confirmed"  # type: ignore[list-item]
    assert receipt_status([R(1), R(2)]) == "corrected"  # type: ignore[list-item]


def test_ledger_filters_and_groups() -> None:
    when = datetime(2020, 2, 3, 23, 30, tzinfo=UTC)
    assert (city("420103"), city("42"), month(when)) == ("4201", "42", "2020-02")
    assert Filters().admits("mask", "420103", when)
    assert Filters(item="mask", region="4201").admits("mask", "420103", when)
    assert not Filters(region="4403").admits("mask", "420103", when)
    assert not Filters(item="fruit").admits("mask", "420103", when)
    # Both ends are included.
    assert Filters(start=date(2020, 2, 3), end=date(2020, 2, 3)).admits("mask", "42", when)
    assert not Filters(start=date(2020, 2, 4)).admits("mask", "42", when)
    assert not Filters(end=date(2020, 2, 2)).admits("mask", "42", when)
