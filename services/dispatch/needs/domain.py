"""Rules of needs and their lines, free of Flask, Celery and the database.

Urgency
-------
A line's urgency is ``critical``, ``high`` or ``normal``. An urgency the recipient
states wins. Otherwise it is derived from the days of supply left, stock on hand
divided by daily consumption (both in the same unit):

=====================  ==========
days of supply left    urgency
=====================  ==========
less than 2            critical
2 up to (not) 5        high
5 or more              normal
=====================  ==========

Without both facts (or with no consumption) the urgency is ``normal``.

Statuses
--------
A need is ``draft`` until its organisation is verified, then ``open``;
``partially_allocated``, ``allocated`` and ``fulfilled`` follow from its lines'
counters; ``expired`` (not reconfirmed in time) and ``cancelled`` are set by those
events and stay, whatever the counters do afterwards. A line's status follows the same
rules from its own counters, and is ``draft``, ``expired`` or ``cancelled`` when held
there.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

URGENCIES = ("critical", "high", "normal")
# Below this many days of supply left a line is critical; below HIGH_DAYS, high.
CRITICAL_DAYS = 2
HIGH_DAYS = 5

# Statuses a need (or line) keeps whatever its counters say.
HELD_STATUSES = frozenset({"draft", "expired", "cancelled"})
# Line statuses that take nothing more from matching.
CLOSED_LINE_STATUSES = frozenset({"expired", "cancelled"})
# What a need may be in to be changed, reconfirmed, or expire.
AMENDABLE_STATUSES = frozenset({"draft", "open", "partially_allocated", "allocated"})
RECONFIRMABLE_STATUSES = AMENDABLE_STATUSES
EXPIRING_STATUSES = frozenset({"open", "partially_allocated"})
# A need in these states is not cancelled again (cancelled) or any more (fulfilled).
UNCANCELLABLE_STATUSES = frozenset({"fulfilled"})


@dataclass(frozen=True)
class LineTotals:
    quantity: int
    proposed: int
    reserved: int
    shipped: int
    received: int

    @property
    def committed(self) -> int:
        """What allocations have taken of the line: proposed, reserved or shipped."""
        return self.proposed + self.reserved + self.shipped


# Urgency ---------------------------------------------------------------------------------


def days_of_supply(stock_on_hand: int | None, daily_consumption: int | None) -> Decimal | None:
    """Days the stock lasts at the daily consumption, to one decimal place; None when
    either is unknown or nothing is consumed."""
    if stock_on_hand is None or not daily_consumption or daily_consumption <= 0:
        return None
    days = Decimal(stock_on_hand) / Decimal(daily_consumption)
    return days.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def derive_urgency(
    explicit: str | None, stock_on_hand: int | None, daily_consumption: int | None
) -> str:
    """The stated urgency if any, else the one the days of supply left call for.

    Compared exactly in whole units (stock < 2 x consumption), never on a rounded ratio.
    """
    if explicit is not None:
        if explicit not in URGENCIES:
            raise ValueError(f"unknown urgency {explicit!r}")
        return explicit
    if stock_on_hand is None or not daily_consumption or daily_consumption <= 0:
        return "normal"
    if stock_on_hand < CRITICAL_DAYS * daily_consumption:
        return "critical"
    if stock_on_hand < HIGH_DAYS * daily_consumption:
        return "high"
    return "normal"


# Statuses --------------------------------------------------------------------------------


def line_status(totals: LineTotals, held: str | None = None) -> str:
    """The status of a need line from its counters; ``held`` (draft, expired or
    cancelled) when the line is held there."""
    if held in HELD_STATUSES:
        return held
    if totals.received >= totals.quantity:
        return "fulfilled"
    if totals.committed >= totals.quantity:
        return "allocated"
    if totals.committed > 0 or totals.received > 0:
        return "partially_allocated"
    return "open"


def need_status(line_statuses: list[str], current: str) -> str:
    """The status of a need from its lines'. A draft, expired or cancelled need keeps
    its status; lines closed (expired, cancelled) do not count."""
    if current in HELD_STATUSES:
        return current
    live = [s for s in line_statuses if s not in CLOSED_LINE_STATUSES]
    if not live:
        return current
    if all(s == "fulfilled" for s in live):
        return "fulfilled"
    if all(s in ("allocated", "fulfilled") for s in live):
        return "allocated"
    if any(s != "open" for s in live):
        return "partially_allocated"
    return "open"


def open_quantity(totals: LineTotals, status: str) -> int:
    """What matching may still allocate to the line: nothing once it is closed."""
    if status in CLOSED_LINE_STATUSES:
        return 0
    return max(0, totals.quantity - totals.committed)


def expires_on_expiry(totals: LineTotals, status: str) -> bool:
    """Does the line close when its need expires? Only a line with a remainder still
    open does; allocations it already has stay and go on."""
    return (
        status not in HELD_STATUSES and status != "fulfilled" and open_quantity(totals, status) > 0
    )


# Amendments -----------------------------------------------------------------------------


def amendment_errors(
    totals: LineTotals,
    *,
    status: str,
    new_quantity: int | None,
    item_changed: bool,
    standards_changed: bool,
) -> dict[str, str]:
    """What is wrong with changing a line so; empty when the change is allowed.

    A recipient may raise a quantity at any time and lower it only down to what is
    already proposed, reserved or shipped; a line with allocations keeps its item and
    acceptable standards.
    """
    errors: dict[str, str] = {}
    if status in CLOSED_LINE_STATUSES:
        errors["status"] = f"The line is {status}; it cannot be changed."
        return errors
    committed = totals.committed
    if new_quantity is not None and new_quantity < committed:
        errors["quantity"] = (
            f"{committed} are already allocated or shipped; the quantity cannot go below that."
        )
    if committed and item_changed:
        errors["item"] = "The line has allocations; its item cannot change."
    if committed and standards_changed:
        errors["standards"] = "The line has allocations; its standards cannot change."
    return errors
