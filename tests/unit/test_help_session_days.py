"""Which of a helper's sessions the web UI shows on which day: one running across local
midnight is today's, to be closed today."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.gateway.web.help_sessions import shown_days
from services.gateway.web.times import LOCAL


def _session(starts: datetime, minutes: int) -> dict[str, Any]:
    ends = starts + timedelta(minutes=minutes)
    return {
        "id": starts.isoformat(),
        "starts_at": starts.astimezone(UTC).isoformat(),
        "ends_at": ends.astimezone(UTC).isoformat(),
        "contact_visible_from": (starts - timedelta(minutes=10)).isoformat(),
        "contact_visible_until": (ends + timedelta(minutes=10)).isoformat(),
    }


def test_a_session_running_across_midnight_is_todays_and_one_ended_yesterday_is_gone() -> None:
    now = datetime(2026, 12, 6, 0, 28, tzinfo=LOCAL)  # 16:28 UTC the day before
    across = _session(now - timedelta(minutes=45), 50)  # 23:43 to 00:33
    ended = _session(now - timedelta(hours=3), 50)  # 21:28 to 22:18, yesterday
    later = _session(now + timedelta(hours=9), 50)
    days = shown_days([across, ended, later], now)
    assert [(day, [s["id"] for s in shown]) for day, shown in days] == [
        (now.date(), [across["id"], later["id"]])
    ]
    assert across["started"] and across["in_window"] and not across["before_window"]
    assert not later["started"] and later["before_window"]
