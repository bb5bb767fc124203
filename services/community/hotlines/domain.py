"""Hotlines: what a call is, which day it counts for, which communities a hotline may
act for, and the figures of a day.

An operator logs each call in a few keystrokes: its category, the caller's community
(or region) and the minutes it took. A call carries nothing of the caller: an
emergency request for goods becomes a household delivery or a case in the caller's
community, a counselling call a request for help, and what the person said of
themself lives there, under those records' rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from services.community.sessions.domain import BEIJING as BEIJING

CATEGORIES = ("information", "counselling", "emergency", "other")
# What a call may become, and from which category.
BECAME = ("delivery", "case", "booking")
EMERGENCY_AS = ("delivery", "case")
MAX_MINUTES = 600
# A call may be dated a little ahead of the server's clock, not more.
CLOCK_SKEW = timedelta(minutes=10)

# An emergency call's urgency as a case: every emergency is urgent.
CASE_URGENCY = "urgent"


def beijing_day(at: datetime) -> date:
    """The Beijing day a moment falls on: days are Beijing days, the operators' day
    and the seeds report's."""
    return at.astimezone(BEIJING).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The Beijing day ``day`` in UTC: from its midnight to the next (exclusive).
    ValueError for a day at the calendar's very ends, whose bounds are not dates."""
    start = datetime.combine(day, time(0), tzinfo=BEIJING)
    try:
        return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{day} is out of range") from None


def in_range(at: datetime) -> bool:
    """Whether a moment is one a call may carry: it has a date in UTC and in Beijing."""
    try:
        at.astimezone(UTC)
        at.astimezone(BEIJING)
    except OverflowError:
        return False
    return True


def serves(hotline_region: str, hotline_org: str, community_region: str, community: str) -> bool:
    """Whether a hotline may act in a community: the community runs it, or the
    community lies in the region the hotline serves (GB/T 2260 codes nest: 4201 holds
    420102)."""
    return hotline_org == community or community_region.startswith(hotline_region)


@dataclass(frozen=True)
class CallFacts:
    """What a day's figures need to know of one call."""

    category: str
    minutes: int
    became: str | None
    # The delivery was delivered, or the case closed.
    fulfilled: bool


def figures(calls: Iterable[CallFacts]) -> dict[str, object]:
    """A day's figures: callers served (every call logged), by category, minutes on
    the line, emergency requests (emergency calls), how many became a delivery or a
    case and how many of those were fulfilled (the delivery delivered, the case
    closed), and the counselling calls booked into a session."""
    by_category = dict.fromkeys(CATEGORIES, 0)
    minutes = 0
    served = 0
    emergency = {"requests": 0, "deliveries": 0, "cases": 0, "fulfilled": 0}
    bookings = 0
    for call in calls:
        served += 1
        by_category[call.category] = by_category.get(call.category, 0) + 1
        minutes += call.minutes
        if call.category == "emergency":
            emergency["requests"] += 1
        if call.became == "delivery":
            emergency["deliveries"] += 1
        elif call.became == "case":
            emergency["cases"] += 1
        elif call.became == "booking":
            bookings += 1
        if call.became in EMERGENCY_AS and call.fulfilled:
            emergency["fulfilled"] += 1
    return {
        "calls": served,
        "by_category": by_category,
        "minutes": minutes,
        "emergency": emergency,
        "bookings": bookings,
    }
