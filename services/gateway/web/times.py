"""Times as people here read them: Beijing time (UTC+8)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

LOCAL = timezone(timedelta(hours=8))


def local_time(value: str | None) -> str:
    """An ISO time from the API as ``YYYY-MM-DD HH:MM`` in Beijing time."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LOCAL).strftime("%Y-%m-%d %H:%M")


def local_day(value: str | None) -> date | None:
    """The day, in Beijing time, of an ISO time from the API."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LOCAL).date()
