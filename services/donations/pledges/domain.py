"""Rules of pledges and their lines, free of Flask, Celery and the database."""

from __future__ import annotations

from dataclasses import dataclass

TERMINAL_LINE_STATUSES = frozenset({"cancelled", "expired"})
FINAL_LINE_STATUSES = frozenset({"cancelled", "expired", "delivered"})


@dataclass(frozen=True)
class LineTotals:
    quantity: int
    reserved: int
    shipped: int
    delivered: int


def line_status(totals: LineTotals, terminal: str | None = None) -> str:
    """The lifecycle status of a pledge line from its totals.

    ``terminal`` is ``cancelled`` or ``expired`` once the line has been closed; it
    stays so whatever its totals.
    """
    if terminal in TERMINAL_LINE_STATUSES:
        return terminal
    # The furthest step the whole line has reached, else the furthest any of it has:
    # shipped counts what left (delivered included), delivered what arrived.
    if totals.delivered >= totals.quantity:
        return "delivered"
    if totals.delivered > 0:
        return "partially_delivered"
    if totals.shipped >= totals.quantity:
        return "shipped"
    if totals.shipped > 0:
        return "partially_shipped"
    if totals.reserved >= totals.quantity:
        return "reserved"
    if totals.reserved > 0:
        return "partially_reserved"
    return "available"


def available(totals: LineTotals, status: str) -> int:
    """What the line can still give to a new allocation."""
    if status in TERMINAL_LINE_STATUSES:
        return 0
    return max(0, totals.quantity - totals.reserved - totals.shipped)


def pledge_status(line_statuses: list[str], cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    if line_statuses and all(s in FINAL_LINE_STATUSES for s in line_statuses):
        return "closed"
    return "open"


def amendment_errors(
    totals: LineTotals,
    *,
    status: str,
    new_quantity: int | None,
    item_changed: bool,
    standard_changed: bool,
) -> dict[str, str]:
    """What is wrong with changing a line so; empty when the change is allowed.

    A donor may raise a quantity at any time, lower it only down to what is already
    reserved or shipped, and may not change the item or standard of a line that has
    reservations or shipments.
    """
    errors: dict[str, str] = {}
    if status in TERMINAL_LINE_STATUSES:
        errors["status"] = f"The line is {status}; it cannot be changed."
        return errors
    committed = totals.reserved + totals.shipped
    if new_quantity is not None and new_quantity < committed:
        errors["quantity"] = (
            f"{committed} are already reserved or shipped; the quantity cannot go below that."
        )
    if committed and item_changed:
        errors["item"] = "The line has reservations or shipments; its item cannot change."
    if committed and standard_changed:
        errors["standard"] = "The line has reservations or shipments; its standard cannot change."
    return errors
