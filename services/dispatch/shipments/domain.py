"""Rules of shipments, free of Flask, Celery and the database.

Statuses
--------
Movement: ``planned`` -> ``ready_for_pickup`` -> ``picked_up`` -> ``in_transit`` ->
``out_for_delivery`` -> ``delivered`` -> ``received``. Exceptions: ``held`` (at a
checkpoint), ``delayed`` and ``damaged`` are entered and left by a shipment on its way;
``lost``, ``returned`` and ``cancelled`` (only before pickup) end it, as ``received``
does. Scanners miss scans, so a shipment may skip ahead (``planned`` straight to
``in_transit``, ``picked_up`` straight to ``delivered``) but never go back.

``planned`` is set by consolidation alone, ``received`` by the recipient's receipt
alone.

Late updates
------------
An update that happened before the shipment's current status (by ``occurred_at``) is
late: it is kept in the history in its place but does not move the status back, and it
is not checked as a transition. A plan is not an observation: nothing is late against
``planned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.events.supply import (
    SHIPMENT_EXCEPTION_STATUSES,
    SHIPMENT_FINAL_STATUSES,
    SHIPMENT_MOVEMENT_STATUSES,
    SHIPMENT_STATUSES,
)

MOVEMENT_STATUSES = SHIPMENT_MOVEMENT_STATUSES
EXCEPTION_STATUSES = SHIPMENT_EXCEPTION_STATUSES
STATUSES = SHIPMENT_STATUSES
FINAL_STATUSES = SHIPMENT_FINAL_STATUSES
# Not yet left its origin: the allocations are still reserved.
BEFORE_PICKUP = frozenset({"planned", "ready_for_pickup"})
# On its way: may be held, delayed, damaged, lost or returned.
ON_THE_WAY = frozenset(
    {"picked_up", "in_transit", "out_for_delivery", "held", "delayed", "damaged"}
)
# Statuses that mean the goods have left the origin.
LEFT_ORIGIN = ON_THE_WAY | {"delivered", "received", "lost", "returned"}

# Who alone may set a status: the plan, or the recipient's receipt.
SOURCE_ONLY = {"planned": "system", "received": "receipt"}
SOURCES = ("api", "batch", "receipt", "system")

_LEAVING = frozenset({"picked_up", "in_transit", "out_for_delivery", "delivered"})
_MOVING_ON = frozenset(
    {
        "in_transit",
        "out_for_delivery",
        "delivered",
        "held",
        "delayed",
        "damaged",
        "lost",
        "returned",
    }
)

TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"ready_for_pickup", "cancelled"} | _LEAVING),
    "ready_for_pickup": frozenset({"cancelled"} | _LEAVING),
    # A status repeated at a later moment (another checkpoint) is a new update.
    "picked_up": _MOVING_ON | {"picked_up"},
    "in_transit": _MOVING_ON,
    # A failed delivery attempt goes back to the depot.
    "out_for_delivery": _MOVING_ON,
    "held": _MOVING_ON,
    "delayed": _MOVING_ON,
    "damaged": _MOVING_ON,
    "delivered": frozenset({"received"}),
    "received": frozenset(),
    "lost": frozenset(),
    "returned": frozenset(),
    "cancelled": frozenset(),
}

# What an applied status does to the shipment's allocations (and need lines).
SHIP = "ship"  # reserved -> shipped: the goods left
DELIVER = "deliver"  # shipped -> delivered
LOSE = "lose"  # shipped -> lost: back to matching
RETURN = "return"  # shipped -> returned: back to matching, and to the donor
CANCEL = "cancel"  # reserved -> cancelled (before pickup): back to matching


def refusal(current: str, requested: str, source: str) -> str | None:
    """Why ``requested`` cannot follow ``current`` (None when it can)."""
    if requested not in TRANSITIONS:
        return f"{requested!r} is not a shipment status."
    only = SOURCE_ONLY.get(requested)
    if only is not None and source != only:
        if requested == "received":
            return "A shipment is received only through the recipient's receipt."
        return "A shipment is planned only by consolidation."
    if current in FINAL_STATUSES:
        return f"The shipment is {current}; nothing follows that."
    if requested == "cancelled" and current not in BEFORE_PICKUP:
        return f"The shipment is {current}; only a shipment not yet picked up can be cancelled."
    if requested not in TRANSITIONS[current]:
        return f"A shipment that is {current} cannot become {requested}."
    return None


def is_late(current: str, status_at: datetime, occurred_at: datetime) -> bool:
    """Did this update happen before the current status did? (Nothing is late
    against a plan.)"""
    return current != "planned" and occurred_at < status_at


@dataclass(frozen=True)
class Decision:
    """What to do with one update: ``apply`` it, keep it as ``late``, or refuse it
    (``refused`` says why)."""

    outcome: str
    refused: str | None = None


def decide(
    current: str, status_at: datetime, requested: str, occurred_at: datetime, source: str
) -> Decision:
    """Apply, keep as late, or refuse an update (duplicates are found before this)."""
    only = SOURCE_ONLY.get(requested)
    if requested not in TRANSITIONS or (only is not None and source != only):
        return Decision("refused", refusal(current, requested, source))
    if is_late(current, status_at, occurred_at):
        return Decision("late")
    why = refusal(current, requested, source)
    return Decision("refused", why) if why else Decision("apply")


def effects(previous: str, new: str) -> tuple[str, ...]:
    """What applying ``new`` after ``previous`` does to the shipment's allocations."""
    done: list[str] = []
    if previous in BEFORE_PICKUP and new in LEFT_ORIGIN:
        done.append(SHIP)
    if new in ("delivered", "received") and previous != "delivered":
        done.append(DELIVER)
    if new == "lost":
        done.append(LOSE)
    elif new == "returned":
        done.append(RETURN)
    elif new == "cancelled":
        done.append(CANCEL)
    return tuple(done)


def too_far_ahead(occurred_at: datetime, now: datetime, skew: timedelta) -> bool:
    """An update from the future, beyond a scanner clock's usual drift."""
    return occurred_at > now + skew


def before_it_existed(occurred_at: datetime, created_at: datetime, skew: timedelta) -> bool:
    """An update dated before the shipment was created, beyond a clock's usual drift:
    nothing can have happened to it yet."""
    return occurred_at < created_at - skew


# Overdue ------------------------------------------------------------------------------

STALE = "stale"
PAST_ETA = "past_eta"


def overdue_reason(
    status: str,
    last_event_at: datetime,
    eta: datetime | None,
    now: datetime,
    stale_after: timedelta,
) -> str | None:
    """Why a shipment is overdue now (None when it is not): past its ETA and not yet
    delivered, or no update for ``stale_after``. Finished shipments never are."""
    if status in FINAL_STATUSES:
        return None
    if eta is not None and eta < now and status not in ("delivered", "received"):
        return f"{PAST_ETA}: expected by {eta.isoformat()}, still {status}"
    if last_event_at <= now - stale_after:
        return f"{STALE}: no update since {last_event_at.isoformat()}"
    return None
