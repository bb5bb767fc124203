"""Use cases of helpers' time. In this slice: a helper's weekly availability, stated in
their own time zone, as the UTC slots of one week, and what is left of it once booked
sessions are taken out (the scheduler's input). Storage, the requests API and the
coordinator's approval come with the next slices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.community.sessions.domain import Helper, Slot

SESSION = timedelta(minutes=50)


def week_slots(
    week_of: date,
    availability: Iterable[tuple[int, time, time]],
    timezone: str,
    *,
    session: timedelta = SESSION,
    step: timedelta = timedelta(hours=1),
) -> tuple[Slot, ...]:
    """The slots of the week beginning on Monday ``week_of``, in UTC: for each
    (weekday, from, to) of the helper's availability in local time (0 is Monday), one
    slot of ``session`` every ``step`` from ``from`` that ends by ``to``. A local time
    that a clock change skips or repeats is taken as the zone's rules resolve it."""
    if week_of.weekday() != 0:
        raise ValueError("week_of must be a Monday")
    zone = ZoneInfo(timezone)
    slots: set[Slot] = set()
    for weekday, start, end in availability:
        if not 0 <= weekday <= 6:
            raise ValueError("weekday must be from 0 (Monday) to 6")
        day = week_of + timedelta(days=weekday)
        at = datetime.combine(day, start, tzinfo=zone)
        until = datetime.combine(day, end, tzinfo=zone)
        while at + session <= until:
            begin = at.astimezone(UTC)
            slots.add(Slot(begin, begin + session))
            at += step
    return tuple(sorted(slots, key=lambda s: s.start))


def free_time(helper: Helper, booked: Iterable[Slot]) -> Helper:
    """The helper as the scheduler takes them: their slots less any that overlaps a
    booked session, and the booked sessions counted per day against the limit."""
    sessions = list(booked)
    free = tuple(
        s for s in helper.slots if not any(b.start < s.end and s.start < b.end for b in sessions)
    )
    per_day = Counter(helper.day_of(b) for b in sessions)
    per_day.update(dict(helper.booked))
    return replace(helper, slots=free, booked=tuple(sorted(per_day.items())))
