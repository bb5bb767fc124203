"""The hotlines' rules: which Beijing day a call counts for, which communities a
hotline acts in, and the figures of a day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.community.hotlines import domain
from services.community.hotlines.domain import CallFacts


def test_a_call_after_midnight_in_beijing_counts_for_the_next_day() -> None:
    late = datetime(2020, 2, 3, 16, 30, tzinfo=UTC)  # 00:30 on 4 February in Beijing
    assert domain.beijing_day(late) == date(2020, 2, 4)
    start, end = domain.day_bounds(date(2020, 2, 4))
    assert start == datetime(2020, 2, 3, 16, 0, tzinfo=UTC) and end - start == timedelta(days=1)
    assert start <= late < end


def test_days_and_times_at_the_calendars_ends_are_refused_not_crashed_on() -> None:
    with pytest.raises(ValueError):
        domain.day_bounds(date.max)
    with pytest.raises(ValueError):
        domain.day_bounds(date.min)
    assert not domain.in_range(datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=8))))
    assert not domain.in_range(datetime(9999, 12, 31, 23, tzinfo=UTC))
    assert domain.in_range(datetime(2020, 2, 3, tzinfo=UTC))


def test_a_hotline_acts_in_the_communities_of_its_region_or_its_own() -> None:
    assert domain.serves("4201", "station", "420102", "community")
    assert domain.serves("42", "station", "420102", "community")
    assert not domain.serves("4403", "station", "420102", "community")
    # A community that runs its own hotline, whatever region it gave it.
    assert domain.serves("4403", "community", "420102", "community")


def test_a_days_figures_count_callers_emergencies_fulfilled_and_bookings() -> None:
    calls = [
        CallFacts("information", 3, None, False),
        CallFacts("information", 2, None, False),
        CallFacts("counselling", 25, "booking", False),
        CallFacts("counselling", 10, None, False),
        CallFacts("emergency", 6, "delivery", True),
        CallFacts("emergency", 4, "delivery", False),
        CallFacts("emergency", 8, "case", True),
        CallFacts("emergency", 1, None, False),
        CallFacts("other", 0, None, False),
    ]
    assert domain.figures(calls) == {
        "calls": 9,
        "by_category": {"information": 2, "counselling": 2, "emergency": 4, "other": 1},
        "minutes": 59,
        "emergency": {"requests": 4, "deliveries": 2, "cases": 1, "fulfilled": 2},
        "bookings": 1,
    }
    assert domain.figures([])["calls"] == 0
