"""Times as people here read them: Beijing time (UTC+8), and said so wherever a time
is shown, on pages, in messages and in printed documents."""

# ruff: noqa: RUF002 (the Chinese mark is written with Chinese punctuation)

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from flask import has_request_context
from flask_babel import gettext

LOCAL = timezone(timedelta(hours=8))


def clock_time(value: str | None) -> str:
    """An ISO time from the API as ``YYYY-MM-DD HH:MM`` in Beijing time, unmarked: for
    a form's field, or where the page says what the times are in beside it."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LOCAL).strftime("%Y-%m-%d %H:%M")


def local_time(value: str | None) -> str:
    """An ISO time from the API in Beijing time, marked as such: "2020-02-03 17:20
    (Beijing time)", "2020-02-03 17:20（北京时间）"."""
    shown = clock_time(value)
    if not shown or shown == value:
        return shown
    if not has_request_context():
        return f"{shown} (Beijing time)"
    return gettext("%(time)s (Beijing time)", time=shown)


def local_date(value: str | None) -> str:
    """The day, in Beijing time, of an ISO time from the API: ``YYYY-MM-DD`` (a need
    posted at 20:00 UTC is the next day's in Wuhan)."""
    day = local_day(value)
    return day.isoformat() if day else (value or "")[:10]


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
