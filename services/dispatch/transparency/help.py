"""Help from people's time on the public ledger: sessions held, people helped and hours
given, by week and city, as counts only (never a person, a helper or a note).

The community service reports each session held (``community.help_session_held``,
its id, an opaque key shared by one person's follow-ups, the helper organisation's
region, the session's week and its minutes). A session is counted once however often
its event is delivered: the row is keyed by the session. ``people_helped`` counts the
keys, so a person seen three times in a week is one person helped and three
sessions; over several weeks or cities the totals count each person once.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from services.dispatch.models import HelpGiven
from services.dispatch.transparency.totals import city, moved_at_commit
from shared.events import Event
from shared.inbox import Handler


def on_help_session_held(session: Session, event: Event) -> None:
    data = event.data()
    session_id = uuid.UUID(str(data["session_id"]))
    if session.get(HelpGiven, session_id) is not None:
        return  # counted already
    week = data["week"]
    session.add(
        HelpGiven(
            session_id=session_id,
            person_key=uuid.UUID(str(data["person_key"])),
            region=city(str(data["region"])),
            week=week if isinstance(week, date) else date.fromisoformat(str(week)),
            minutes=int(data["minutes"]),
        )
    )
    session.flush()
    # The public ledger shows it: its answers (and ETag) move.
    moved_at_commit(session)


def help_handlers() -> dict[str, Handler]:
    return {"community.help_session_held": on_help_session_held}


def _hours(minutes: int | None) -> float:
    return round((minutes or 0) / 60, 1)


def ledger_help(
    session: Session,
    *,
    region: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, Any]:
    """The counts in a region (a code prefix) and for the weeks that overlap the dates:
    in all, and one row per week and city, earliest week first."""
    conditions: list[Any] = []
    if region is not None:
        conditions.append(HelpGiven.region.startswith(region[:4], autoescape=True))
    if start is not None:
        # A week overlaps the dates if it ends on or after the first day (from the
        # calendar's first day on: a week cannot start before it).
        conditions.append(HelpGiven.week >= date.fromordinal(max(1, start.toordinal() - 6)))
    if end is not None:
        conditions.append(HelpGiven.week <= end)
    figures = (
        func.count(),
        func.count(distinct(HelpGiven.person_key)),
        func.sum(HelpGiven.minutes),
    )
    sessions, people, minutes = session.execute(select(*figures).where(*conditions)).one()
    rows = session.execute(
        select(HelpGiven.week, HelpGiven.region, *figures)
        .where(*conditions)
        .group_by(HelpGiven.week, HelpGiven.region)
        .order_by(HelpGiven.week, HelpGiven.region)
    ).all()
    return {
        "sessions_held": int(sessions or 0),
        "people_helped": int(people or 0),
        "hours_given": _hours(minutes),
        "by_week": [
            {
                "week": week,
                "region": row_region,
                "sessions_held": int(held),
                "people_helped": int(helped),
                "hours_given": _hours(given),
            }
            for week, row_region, held, helped, given in rows
        ],
    }
