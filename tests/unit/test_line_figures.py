"""A line's status follows its figures (README: "Line figures"): the furthest step the
whole line has reached, else the furthest any of it has."""

from __future__ import annotations

import pytest

from services.dispatch.needs import domain as needs
from services.donations.pledges import domain as pledges


@pytest.mark.parametrize(
    ("quantity", "reserved", "shipped", "delivered", "status", "available"),
    [
        (1000, 0, 0, 0, "available", 1000),
        (1000, 400, 0, 0, "partially_reserved", 600),
        (1000, 1000, 0, 0, "reserved", 0),
        (1000, 600, 400, 0, "partially_shipped", 0),
        (1000, 0, 400, 0, "partially_shipped", 600),
        (1000, 0, 1000, 0, "shipped", 0),
        (1000, 0, 1000, 400, "partially_delivered", 0),
        (1000, 0, 1000, 1000, "delivered", 0),
        # The scenario's imported disinfectant: 6,500,000 ml delivered, 100,000 left.
        (6_600_000, 0, 6_500_000, 6_500_000, "partially_delivered", 100_000),
    ],
)
def test_a_pledge_line_status_follows_its_figures(
    quantity: int, reserved: int, shipped: int, delivered: int, status: str, available: int
) -> None:
    totals = pledges.LineTotals(quantity, reserved, shipped, delivered)
    assert pledges.line_status(totals) == status
    assert pledges.available(totals, status) == available
    assert pledges.line_status(totals, "cancelled") == "cancelled"


@pytest.mark.parametrize(
    ("proposed", "reserved", "shipped", "received", "status", "open_"),
    [
        (0, 0, 0, 0, "open", 100),
        (30, 0, 0, 0, "partially_allocated", 70),
        (0, 100, 0, 0, "allocated", 0),
        (0, 0, 100, 0, "allocated", 0),  # shipped, not received: still allocated
        (0, 0, 90, 90, "partially_allocated", 10),  # after a short receipt of 10
        (0, 0, 100, 100, "fulfilled", 0),
    ],
)
def test_a_need_line_status_follows_its_figures(
    proposed: int, reserved: int, shipped: int, received: int, status: str, open_: int
) -> None:
    totals = needs.LineTotals(100, proposed, reserved, shipped, received)
    assert needs.line_status(totals) == status
    assert needs.open_quantity(totals, status) == open_
