"""Help from people's time under the data-protection model: what the community service
holds of a person as a helper (their record, qualifications, which notes they wrote) and
as a seeker who signed in (their requests), in their organisation's personal-data
export; erased with the person; a member who leaves withdrawn as a helper; and notes
deleted once their retention period is over.

In an export each reader gets what they may read anyway: the helper records to the
organisation's members and coordinators (the helper, their admins and coordinators
for the qualifications), requests with their text and contact to the person who made
them (topic and status only to a coordinator answering the person's request), which
notes are kept (never their text: a note is in no export) to their writer and the
organisation's admins; the operator's command gets all of it.
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
    HotlineCall,
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
    # As GET .../helpers answers them: coordinators every one, the organisation's
    # admins theirs, anyone else only themself.
    helpers = [h for h in helpers if h.id in mine or coordinator]
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
                "qualifications": h.qualifications,
                "status": h.status,
                "decision_reason": h.decision_reason,
                "created_at": _iso(h.created_at),
            }
            for h in helpers
        ],
        # Notes are never in an export, this one included: only that they are kept,
        # on which sessions and since when (read at GET .../sessions/{id}/notes).
        "help_session_notes": [
            {
                "session_id": str(n.session_id),
                "helper_id": str(n.helper_id),
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
            )
        )
    )
    for found, asked in ahead:
        # Sessions ahead declined; those already over but never closed, which the
        # helper can close no more, missed by the helper: either way the person is
        # back in the queue, first in line.
        if found.ends_at > now:
            found.status = "declined"
        else:
            found.status = "missed"
            found.missed_by = "helper"
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
) -> None:
    """The help data of the organisation's people erased: its helpers withdrawn and the
    notes they wrote deleted; the requests of its members (and of ``user_ids``), and
    those booked from hotline calls from it if it is a community, erased as
    :func:`_erase_requests` says."""
    helpers = list(session.scalars(select(Helper).where(Helper.org_id == org_id)))
    _withdraw(session, helpers, now)
    session.execute(
        delete(HelpSessionNote)
        .where(HelpSessionNote.org_id == org_id)
        .execution_options(synchronize_session=False)
    )
    whose = or_(HelpRequest.org_id == org_id, HelpRequest.user_id.in_(list(user_ids)))
    members = session.scalars(select(HelpRequest.id).where(whose))
    request_ids = {*members, *_callers(session, org_id)}
    _erase_requests(session, sorted(request_ids, key=str), org_id)


def erase_callers(session: Session, org_id: uuid.UUID) -> None:
    """A community's residents erased: the requests for help booked from hotline calls
    from the community (its residents calling), erased as :func:`_erase_requests`
    says. Requests its own members made signed in are theirs, not its residents'."""
    _erase_requests(session, _callers(session, org_id), org_id)


def _callers(session: Session, org_id: uuid.UUID) -> list[uuid.UUID]:
    """The requests booked from hotline calls from the community ``org_id``."""
    return list(
        session.scalars(
            select(HotlineCall.help_request_id).where(
                HotlineCall.community_org_id == org_id,
                HotlineCall.help_request_id.is_not(None),
            )
        )
    )


def _erase_requests(
    session: Session, request_ids: Collection[uuid.UUID], org_id: uuid.UUID
) -> None:
    """Requests without their text, contact, follow token or who made them (the
    labels they keep, topic, urgency, group, tie to no one), those still waiting
    closed and their sessions ahead cancelled, the notes and connections of their
    sessions deleted. Sessions held and their minutes stay, for the counts."""
    request_ids = list(request_ids)
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
        .values(
            text=None,
            contact=None,
            follow_token_hash=None,
            user_id=None,
            org_id=None,
            version=HelpRequest.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(HelpRequest)
        .where(HelpRequest.id.in_(request_ids), HelpRequest.status.in_(("open", "scheduled")))
        .values(status="closed")
        .execution_options(synchronize_session=False)
    )
    log.info("erased the help data of %d request(s) of %s", len(request_ids), org_id)


def clear_expired_requests(session: Session, now: datetime, retention_days: int) -> int:
    """Requests closed more than ``retention_days`` ago (their session held) without
    what the person wrote or how to reach them; their topic, urgency and status stay,
    for the counts."""
    cleared = session.execute(
        update(HelpRequest)
        .where(
            HelpRequest.status == "closed",
            HelpRequest.updated_at < now - timedelta(days=retention_days),
            or_(HelpRequest.text.is_not(None), HelpRequest.contact.is_not(None)),
        )
        .values(text=None, contact=None, version=HelpRequest.version + 1)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(cleared, "rowcount", 0) or 0)


def delete_expired_notes(session: Session, now: datetime, retention_days: int) -> int:
    """Notes written more than ``retention_days`` ago, deleted."""
    gone = session.execute(
        delete(HelpSessionNote)
        .where(HelpSessionNote.written_at < now - timedelta(days=retention_days))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(gone, "rowcount", 0) or 0)
