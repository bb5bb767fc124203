"""Help from people's time under the data-protection model: what the community service
holds of a person as a helper (their record, qualifications, the notes they wrote) and
as a seeker who signed in (their requests), in their organisation's personal-data
export; erased with the person; a member who leaves withdrawn as a helper; and notes
deleted once their retention period is over.

In an export each reader gets what they may read anyway: the helper records to the
organisation's members and coordinators (the helper, their admins and coordinators
for the qualifications), requests with their text and contact to the person who made
them (topic and status only to a coordinator answering the person's request), notes
to their writer and the organisation's admins; the operator's command gets all of it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from services.community.models import (
    HelpConnection,
    Helper,
    HelpRequest,
    HelpSession,
    HelpSessionNote,
)
from services.community.sessions.service import requeue
from shared.identity import ORG_ADMIN, Identity

log = logging.getLogger(__name__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def personal_data(
    session: Session, org_id: uuid.UUID, reader: Identity | None = None
) -> dict[str, Any]:
    """The help records of the organisation's people, as ``reader`` may read them
    (None: the operator, everything)."""
    everything = reader is None or reader.via == "system"
    admin = reader is not None and reader.org_id == org_id and ORG_ADMIN in reader.roles
    me = reader.user_id if reader is not None else None
    helpers = list(
        session.scalars(
            select(Helper).where(Helper.org_id == org_id).order_by(Helper.created_at, Helper.id)
        )
    )
    mine = {h.id for h in helpers if everything or admin or h.user_id == me}
    notes = list(
        session.scalars(
            select(HelpSessionNote)
            .where(HelpSessionNote.org_id == org_id)
            .order_by(HelpSessionNote.written_at, HelpSessionNote.id)
        )
    )
    requests = list(
        session.scalars(
            select(HelpRequest)
            .where(HelpRequest.org_id == org_id)
            .order_by(HelpRequest.created_at, HelpRequest.id)
        )
    )
    coordinator = reader is not None and reader.is_coordinator
    return {
        "helpers": [
            {
                "id": str(h.id),
                "user_id": str(h.user_id),
                "name": h.name,
                "kinds": h.kinds,
                "topics": h.topics,
                "languages": h.languages,
                "daily_limit": h.daily_limit,
                "timezone": h.timezone,
                "availability": h.availability,
                "qualifications": h.qualifications if (h.id in mine or coordinator) else None,
                "status": h.status,
                "decision_reason": h.decision_reason,
                "created_at": _iso(h.created_at),
            }
            for h in helpers
        ],
        "help_session_notes": [
            {
                "session_id": str(n.session_id),
                "helper_id": str(n.helper_id),
                "note": n.note,
                "follow_up": n.follow_up,
                "written_at": _iso(n.written_at),
            }
            for n in notes
            if n.helper_id in mine
        ],
        "help_requests": [
            {
                "id": str(r.id),
                "user_id": str(r.user_id) if r.user_id else None,
                "topic": r.topic,
                "urgency": r.urgency,
                "priority_group": r.priority_group,
                "languages": r.languages,
                "status": r.status,
                "created_at": _iso(r.created_at),
                **(
                    {"text": r.text, "contact": r.contact}
                    if everything or (me is not None and r.user_id == me)
                    else {}
                ),
            }
            for r in requests
            if everything or coordinator or (me is not None and r.user_id == me)
        ],
    }


def _withdraw(session: Session, helpers: list[Helper], now: datetime) -> int:
    """The helpers scheduled no more, their personal fields cleared, and the sessions
    booked ahead of them declined, each request back in the queue first in line."""
    if not helpers:
        return 0
    ids = [h.id for h in helpers]
    for h in helpers:
        h.status = "withdrawn"
        h.name = None
        h.qualifications = []
        h.decision_reason = None
        h.version += 1
    ahead = list(
        session.execute(
            select(HelpSession, HelpRequest)
            .join(HelpRequest, HelpRequest.id == HelpSession.request_id)
            .where(
                HelpSession.helper_id.in_(ids),
                HelpSession.status.in_(("booked", "confirmed")),
                HelpSession.ends_at > now,
            )
        )
    )
    for found, asked in ahead:
        found.status = "declined"
        found.held_start = None
        found.decided_at = now
        found.version += 1
        if asked.status == "scheduled":
            requeue(session, asked)
    session.flush()
    return len(ahead)


def withdraw_member(session: Session, org_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> int:
    """A member removed from their organisation: their helper record there withdrawn
    (name and qualifications cleared, no longer scheduled), their sessions booked
    ahead back to the queue. Their notes stay with the organisation's supervisors
    until their retention period ends."""
    helpers = list(
        session.scalars(select(Helper).where(Helper.org_id == org_id, Helper.user_id == user_id))
    )
    moved = _withdraw(session, helpers, now)
    log.info("withdrew %d helper record(s) of a removed member; %d session(s)", len(helpers), moved)
    return moved


def erase_people(
    session: Session,
    org_id: uuid.UUID,
    now: datetime,
    *,
    user_ids: Collection[uuid.UUID] = (),
    helpers_too: bool = True,
) -> None:
    """The help data of the organisation's people erased: (``helpers_too``) its
    helpers withdrawn and the notes they wrote deleted; its requests (and those of
    ``user_ids``) without their text, contact or follow token, those still waiting
    closed and their sessions ahead cancelled, the notes on their sessions deleted.
    Sessions held and their minutes stay, for the counts."""
    if helpers_too:
        helpers = list(session.scalars(select(Helper).where(Helper.org_id == org_id)))
        _withdraw(session, helpers, now)
        session.execute(
            delete(HelpSessionNote)
            .where(HelpSessionNote.org_id == org_id)
            .execution_options(synchronize_session=False)
        )
    whose = or_(HelpRequest.org_id == org_id, HelpRequest.user_id.in_(list(user_ids)))
    request_ids = list(session.scalars(select(HelpRequest.id).where(whose)))
    if not request_ids:
        return
    session_ids = select(HelpSession.id).where(HelpSession.request_id.in_(request_ids))
    session.execute(
        delete(HelpSessionNote)
        .where(HelpSessionNote.session_id.in_(session_ids))
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(HelpConnection)
        .where(HelpConnection.session_id.in_(session_ids))
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(HelpSession)
        .where(
            HelpSession.request_id.in_(request_ids),
            HelpSession.status.in_(("booked", "confirmed")),
        )
        .values(status="cancelled", held_start=None, version=HelpSession.version + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(HelpRequest)
        .where(HelpRequest.id.in_(request_ids))
        .values(text=None, contact=None, follow_token_hash=None, version=HelpRequest.version + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(HelpRequest)
        .where(HelpRequest.id.in_(request_ids), HelpRequest.status.in_(("open", "scheduled")))
        .values(status="closed")
        .execution_options(synchronize_session=False)
    )
    log.info("erased the help data of %d request(s) of %s", len(request_ids), org_id)


def delete_expired_notes(session: Session, now: datetime, retention_days: int) -> int:
    """Notes written more than ``retention_days`` ago, deleted."""
    gone = session.execute(
        delete(HelpSessionNote)
        .where(HelpSessionNote.written_at < now - timedelta(days=retention_days))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(gone, "rowcount", 0) or 0)
