"""Use cases of helpers' time: a helper's weekly availability, stated in their own time
zone, as the UTC slots of one week, and what is left of it once booked sessions are
taken out (the scheduler's input); helpers registered through their organisation and
verified by a coordinator; requests for help (a crisis flagged by its words); a
coordinator's scheduling runs, previewed then approved into sessions the helper
confirms or declines; and the seeker's contact shown to the helper only within the
session's window, each reveal recorded.

Nothing here sends an event or logs a request's text or contact: at INFO a line names
ids, topics, urgencies and statuses only.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.community.models import (
    AccessRecord,
    HelpConnection,
    HelpRequest,
    HelpRule,
    HelpRun,
    HelpSession,
    HelpSessionNote,
    Organisation,
)
from services.community.models import Helper as HelperRow
from services.community.sessions import domain, scheduling
from services.community.sessions.contact import (
    ConnectionAsked,
    ContactProvider,
    ContactProviderError,
)
from services.community.sessions.domain import Helper, SessionRequest, Slot
from shared.db import move_once
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken, Unavailable
from shared.events import new_event
from shared.identity import ORG_ADMIN, Identity
from shared.outbox import Outbox

log = logging.getLogger(__name__)

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


# Helpers ---------------------------------------------------------------------------------


def _require_member(identity: Identity) -> tuple[uuid.UUID, uuid.UUID]:
    if identity.user_id is None or identity.org_id is None:
        raise Forbidden("Sign in as a member of an organisation.", slug="forbidden")
    return identity.user_id, identity.org_id


def _is_helper_admin(identity: Identity, helper: HelperRow) -> bool:
    return identity.org_id == helper.org_id and ORG_ADMIN in identity.roles


def _supervises(identity: Identity, helper: HelperRow) -> bool:
    """The helper themself, or an admin of their organisation."""
    return (
        identity.user_id == helper.user_id and identity.org_id == helper.org_id
    ) or _is_helper_admin(identity, helper)


def _sees_helper(identity: Identity, helper: HelperRow) -> bool:
    return identity.is_coordinator or _supervises(identity, helper)


def _check_availability(weekly: list[tuple[int, time, time]], timezone: str) -> None:
    """Refuse availability whose sessions would overlap (two stretches of one day that
    start off the same hour and cross)."""
    slots = week_slots(_monday(date.today()), weekly, timezone)
    for a, b in itertools.pairwise(slots):
        if b.start < a.end:
            raise RuleBroken(
                "The availability's stretches overlap.",
                slug="invalid-availability",
                errors={"availability": ["Stretches of one day must not overlap."]},
            )


def register_helper(session: Session, identity: Identity, data: dict[str, Any]) -> HelperRow:
    """A member of a verified organisation registered as a helper, by themself or by
    their organisation's admin: ``pending`` until a coordinator verifies them."""
    me, org_id = _require_member(identity)
    if identity.org_status != "verified":
        raise Forbidden(
            "Helpers register through a verified organisation.", slug="organisation-not-verified"
        )
    user_id = data.get("user_id") or me
    if user_id != me and ORG_ADMIN not in identity.roles:
        raise Forbidden(
            "Only the organisation's admins register another member as a helper.",
            slug="forbidden",
        )
    try:
        ZoneInfo(data["timezone"])
    except (KeyError, ValueError, OSError):
        raise RuleBroken(
            f"Unknown time zone {data.get('timezone')!r}.",
            slug="invalid-timezone",
            errors={"timezone": ["An IANA time zone such as Asia/Shanghai."]},
        ) from None
    weekly = [(a["weekday"], a["start"], a["end"]) for a in data.get("availability", [])]
    _check_availability(weekly, data["timezone"])
    fields = {
        "name": data.get("name"),
        "kinds": sorted(set(data["kinds"])),
        "topics": sorted(set(data["topics"])),
        "languages": sorted(set(data["languages"])),
        "daily_limit": data["daily_limit"],
        "timezone": data["timezone"],
        "availability": [
            [a["weekday"], a["start"].strftime("%H:%M"), a["end"].strftime("%H:%M")]
            for a in data.get("availability", [])
        ],
        "qualifications": [
            {"kind": q["kind"], "evidence": q["evidence"]} for q in data["qualifications"]
        ],
        "status": "pending",
        "registered_by": me,
    }
    # A member withdrawn (they left, or were erased) registers again on the same record,
    # which their past sessions name; pending until a coordinator verifies them anew.
    helper = session.scalar(
        select(HelperRow).where(
            HelperRow.org_id == org_id,
            HelperRow.user_id == user_id,
            HelperRow.status == "withdrawn",
        )
    )
    if helper is not None:
        for name, value in fields.items():
            setattr(helper, name, value)
        helper.decided_at = helper.decided_by = None
        helper.version += 1
    else:
        helper = HelperRow(id=uuid.uuid4(), org_id=org_id, user_id=user_id, **fields)
        session.add(helper)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "This member is already registered as a helper.", slug="helper-exists"
        ) from None
    log.info("helper %s registered for organisation %s", helper.id, org_id)
    return helper


def list_helpers(session: Session, identity: Identity) -> list[HelperRow]:
    """Every helper for coordinators; an organisation's admin its own organisation's;
    anyone else themself."""
    stmt = select(HelperRow).order_by(HelperRow.created_at, HelperRow.id)
    if not identity.is_coordinator:
        if identity.org_id is None:
            return []
        stmt = stmt.where(HelperRow.org_id == identity.org_id)
        if ORG_ADMIN not in identity.roles:
            stmt = stmt.where(HelperRow.user_id == identity.user_id)
    return list(session.scalars(stmt))


def get_helper(session: Session, identity: Identity, helper_id: uuid.UUID) -> HelperRow:
    helper = session.get(HelperRow, helper_id)
    if helper is None or not _sees_helper(identity, helper):
        raise NotFound(f"No helper {helper_id}.", slug="helper-not-found")
    return helper


def decide_helper(
    session: Session, identity: Identity, helper_id: uuid.UUID, decision: str, reason: str | None
) -> HelperRow:
    """A coordinator's decision on a helper's qualifications: ``verified`` (scheduled
    from now on) or ``rejected`` with a reason."""
    if not identity.is_coordinator:
        raise Forbidden("Only coordinators verify helpers.", slug="forbidden")
    helper = session.get(HelperRow, helper_id)
    if helper is None:
        raise NotFound(f"No helper {helper_id}.", slug="helper-not-found")
    if helper.status == "withdrawn":
        # They left their organisation, or their data was erased: they register again.
        raise Conflict(
            "This helper was withdrawn; they register again through their organisation.",
            slug="helper-withdrawn",
            current_status=helper.status,
        )
    if decision == "rejected" and not (reason and reason.strip()):
        raise RuleBroken(
            "A rejection says why.",
            slug="reason-required",
            errors={"reason": ["Say why the qualifications are rejected."]},
        )
    helper.status = decision
    helper.decision_reason = (reason or "").strip()[:500] or None
    helper.decided_at = datetime.now(UTC)
    helper.decided_by = identity.user_id
    session.flush()
    log.info("helper %s %s", helper.id, decision)
    return helper


def dump_helper(helper: HelperRow) -> dict[str, Any]:
    return {
        "id": helper.id,
        "org_id": helper.org_id,
        "user_id": helper.user_id,
        "name": helper.name,
        "kinds": helper.kinds,
        "topics": helper.topics,
        "languages": helper.languages,
        "daily_limit": helper.daily_limit,
        "timezone": helper.timezone,
        "availability": [
            {"weekday": w, "start": start, "end": end} for w, start, end in helper.availability
        ],
        "qualifications": helper.qualifications,
        "status": helper.status,
        "decision_reason": helper.decision_reason,
        "decided_at": helper.decided_at,
        "version": helper.version,
        "created_at": helper.created_at,
    }


# Requests for help -----------------------------------------------------------------------


def ask_for_help(session: Session, identity: Identity, data: dict[str, Any]) -> HelpRequest:
    """A request for a session, signed in or not. Its text speaking of self-harm flags
    it ``crisis`` (urgency crisis, whatever was chosen)."""
    crisis = domain.speaks_of_self_harm(data.get("text"))
    try:
        times = [
            (w["start"].astimezone(UTC), w["end"].astimezone(UTC))
            for w in data.get("preferred_times", [])
        ]
    except OverflowError:
        raise RuleBroken(
            "A preferred time is out of range.",
            slug="invalid-times",
            errors={"preferred_times": ["Times between the years 1 and 9999 in UTC."]},
        ) from None
    windows = [[start.isoformat(), end.isoformat()] for start, end in times]
    for start, end in times:
        if end <= start:
            raise RuleBroken(
                "A preferred time ends after it starts.",
                slug="invalid-times",
                errors={"preferred_times": ["Each time's end must be after its start."]},
            )
    asked = HelpRequest(
        id=uuid.uuid4(),
        user_id=identity.user_id,
        topic=data["topic"],
        urgency="crisis" if crisis else data["urgency"],
        priority_group=data.get("priority_group"),
        languages=list(dict.fromkeys(data["languages"])),
        windows=windows,
        crisis=crisis,
        text=data.get("text"),
        contact=data["contact"],
        status="open",
        queued_at=datetime.now(UTC),
        org_id=identity.org_id if identity.user_id is not None else None,
    )
    session.add(asked)
    session.flush()
    log.info("help request %s: %s, %s", asked.id, asked.topic, asked.urgency)
    return asked


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_follow_token(asked: HelpRequest) -> str:
    """A token for a seeker who asked without signing in to follow their request,
    answered once: only its SHA-256 is kept."""
    token = secrets.token_urlsafe(32)
    asked.follow_token_hash = _token_hash(token)
    return token


def follow(session: Session, request_id: uuid.UUID, token: str) -> dict[str, Any]:
    """What the seeker holding the request's follow token may know of it: its status
    and, once scheduled, the session's time (nothing of the helper); for a closed
    request that has a follow-up, that follow-up's id (the same token follows it).
    Another token, or none kept, is answered as a request that does not exist."""
    asked = session.get(HelpRequest, request_id)
    if (
        asked is None
        or asked.follow_token_hash is None
        or not hmac.compare_digest(asked.follow_token_hash, _token_hash(token))
    ):
        raise NotFound(f"No request {request_id}.", slug="request-not-found")
    current = session.scalar(
        select(HelpSession)
        .where(HelpSession.request_id == asked.id)
        .order_by(HelpSession.created_at.desc(), HelpSession.id)
        .limit(1)
    )
    answer: dict[str, Any] = {
        "id": asked.id,
        "status": asked.status,
        "session_status": current.status if current is not None else None,
        "starts_at": None,
        "ends_at": None,
        "follow_up_request_id": None,
    }
    if current is not None and current.status in ("booked", "confirmed", "held"):
        answer["starts_at"], answer["ends_at"] = current.starts_at, current.ends_at
    if asked.status == "closed":
        answer["follow_up_request_id"] = session.scalar(
            select(HelpRequest.id)
            .where(
                HelpRequest.follow_token_hash == asked.follow_token_hash,
                HelpRequest.id != asked.id,
                HelpRequest.created_at >= asked.created_at,
            )
            .order_by(HelpRequest.created_at)
            .limit(1)
        )
    return answer


def _tier(asked: HelpRequest, rule: Sequence[str]) -> tuple[int, datetime]:
    urgency: domain.Urgency = asked.urgency  # type: ignore[assignment]
    return (
        domain.tier_of(urgency, domain.in_priority_group(asked.priority_group, rule)),
        asked.queued_at,
    )


def queue(
    session: Session, identity: Identity, rule: Sequence[str], status: str | None
) -> list[HelpRequest]:
    """Requests in line, first first (most urgent, the priority group, then the longest
    in line): all of them for coordinators; a signed-in seeker their own."""
    if not identity.authenticated:
        raise Forbidden("Sign in to see requests.", slug="forbidden")
    stmt = select(HelpRequest)
    if not identity.is_coordinator:
        if identity.user_id is None:
            return []
        stmt = stmt.where(HelpRequest.user_id == identity.user_id)
    if status:
        stmt = stmt.where(HelpRequest.status == status)
    return sorted(session.scalars(stmt), key=lambda r: (*_tier(r, rule), str(r.id)))


def dump_request(asked: HelpRequest, rule: Sequence[str]) -> dict[str, Any]:
    """A request without what the person wrote or how to reach them."""
    return {
        "id": asked.id,
        "topic": asked.topic,
        "urgency": asked.urgency,
        "priority_group": asked.priority_group,
        "priority": domain.in_priority_group(asked.priority_group, rule),
        "languages": asked.languages,
        "preferred_times": [{"start": s, "end": e} for s, e in asked.windows],
        "crisis": asked.crisis,
        "status": asked.status,
        "queued_at": asked.queued_at,
        "created_at": asked.created_at,
    }


# Scheduling runs -------------------------------------------------------------------------


def _require_coordinator(identity: Identity) -> None:
    if not identity.is_coordinator:
        raise Forbidden("Only coordinators schedule sessions.", slug="forbidden")


# The coordinators' rule ------------------------------------------------------------------

RULE_ID = 1


def priority_rule(session: Session, default: Sequence[str]) -> tuple[str, ...]:
    """The groups served first within an urgency: as the coordinators last set them,
    else ``default`` (the AIDLINK_HELP_PRIORITY_GROUPS setting)."""
    held = session.get(HelpRule, RULE_ID)
    return tuple(held.priority_groups) if held is not None else tuple(default)


def dump_rule(session: Session, default: Sequence[str]) -> dict[str, Any]:
    held = session.get(HelpRule, RULE_ID)
    if held is None:
        return {
            "priority_groups": list(default),
            "set_by": "setting",
            "version": 0,
            "updated_at": None,
        }
    return {
        "priority_groups": list(held.priority_groups),
        "set_by": "coordinators",
        "version": held.version,
        "updated_at": held.updated_at,
    }


def set_priority_rule(
    session: Session,
    identity: Identity,
    groups: Sequence[str],
    default: Sequence[str],
    *,
    based_on: int | None = None,
) -> dict[str, Any]:
    """The coordinators name the groups served first (in the order given, none for no
    group). With ``based_on`` (the version read), a rule changed since is refused
    (:class:`Stale`) rather than overwritten."""
    if not identity.is_coordinator:
        raise Forbidden("Only coordinators set who is served first.", slug="forbidden")
    unknown = [g for g in groups if g not in domain.PRIORITY_GROUPS]
    if unknown:
        raise RuleBroken(
            f"Unknown priority group {unknown[0]!r}.",
            errors={"priority_groups": [f"Each one of {', '.join(domain.PRIORITY_GROUPS)}."]},
        )
    held = session.get(HelpRule, RULE_ID, with_for_update=True)
    version = held.version if held is not None else 0
    if based_on is not None and based_on != version:
        raise Stale(version, "The rule")
    chosen = list(dict.fromkeys(groups))
    if held is None:
        session.add(
            HelpRule(
                id=RULE_ID,
                priority_groups=chosen,
                version=1,
                updated_by=identity.user_id,
                updated_at=datetime.now(UTC),
            )
        )
    else:
        held.priority_groups = chosen
        held.version += 1
        held.updated_by = identity.user_id
        held.updated_at = datetime.now(UTC)
    try:
        session.flush()
    except IntegrityError:
        # Two first rules at the same moment: the other one came first.
        raise Stale(1, "The rule") from None
    log.info("help priority rule set: %s", ",".join(chosen) or "none")
    return dump_rule(session, default)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _stored_helper(row: HelperRow, now: datetime, booked: list[Slot]) -> Helper:
    week = _monday(now.date())
    availability = [
        (int(w), time.fromisoformat(start), time.fromisoformat(end))
        for w, start, end in row.availability
    ]
    slots: list[Slot] = []
    for monday in (week - timedelta(days=7), week, week + timedelta(days=7)):
        slots += week_slots(monday, availability, row.timezone)
    upcoming = tuple(sorted({s for s in slots if s.start >= now}, key=lambda s: s.start))
    helper = Helper(
        id=str(row.id),
        organisation=str(row.org_id),
        topics=tuple(row.topics),
        languages=tuple(row.languages),
        daily_limit=row.daily_limit,
        slots=upcoming,
        timezone=row.timezone,
    )
    return free_time(helper, booked)


def _stored_request(asked: HelpRequest, rule: Sequence[str]) -> SessionRequest:
    urgency: domain.Urgency = asked.urgency  # type: ignore[assignment]
    return SessionRequest(
        id=str(asked.id),
        topic=asked.topic,
        urgency=urgency,
        languages=tuple(asked.languages),
        created_at=asked.queued_at,
        priority=domain.in_priority_group(asked.priority_group, rule),
        windows=tuple(
            Slot(datetime.fromisoformat(s), datetime.fromisoformat(e)) for s, e in asked.windows
        ),
        previous_helper=str(asked.previous_helper_id) if asked.previous_helper_id else None,
    )


def _free_helpers(session: Session, now: datetime) -> list[Helper]:
    """The verified helpers with their free slots from ``now`` on (less the sessions
    that hold a slot)."""
    rows = list(session.scalars(select(HelperRow).where(HelperRow.status == "verified")))
    held: dict[uuid.UUID, list[Slot]] = {}
    for helper_id, starts, ends in session.execute(
        select(HelpSession.helper_id, HelpSession.starts_at, HelpSession.ends_at).where(
            HelpSession.held_start.is_not(None), HelpSession.ends_at > now - timedelta(days=8)
        )
    ):
        held.setdefault(helper_id, []).append(Slot(starts, ends))
    return [_stored_helper(row, now, held.get(row.id, [])) for row in rows]


def preview(
    session: Session, identity: Identity, rule: Sequence[str], now: datetime | None = None
) -> HelpRun:
    """The schedule of the open requests over the verified helpers' free slots from
    now on, kept as a preview a coordinator may approve."""
    _require_coordinator(identity)
    now = now or datetime.now(UTC)
    helpers = _free_helpers(session, now)
    asked = list(session.scalars(select(HelpRequest).where(HelpRequest.status == "open")))
    found = scheduling.schedule(helpers, [_stored_request(r, rule) for r in asked], now=now)
    run = HelpRun(
        id=uuid.uuid4(),
        status="preview",
        run_at=now,
        created_by=identity.user_id,
        assignments=[
            {
                "request_id": a.request_id,
                "helper_id": a.helper_id,
                "starts_at": a.slot.start.astimezone(UTC).isoformat(),
                "ends_at": a.slot.end.astimezone(UTC).isoformat(),
                "urgency": a.reason.urgency,
                "reason": a.reason.describe(),
            }
            for a in found.assignments
        ],
        unassigned=[
            {"request_id": u.request_id, "reason": u.reason, "why": u.describe()}
            for u in found.unassigned
        ],
    )
    session.add(run)
    session.flush()
    log.info(
        "help run %s: %d sessions, %d requests left",
        run.id,
        len(run.assignments),
        len(run.unassigned),
    )
    return run


def get_run(session: Session, identity: Identity, run_id: uuid.UUID) -> HelpRun:
    _require_coordinator(identity)
    run = session.get(HelpRun, run_id)
    if run is None:
        raise NotFound(f"No scheduling run {run_id}.", slug="run-not-found")
    return run


def approve(session: Session, identity: Identity, run_id: uuid.UUID) -> list[HelpSession]:
    """The preview's assignments made sessions, all or none: a request no longer open,
    or a slot another approval took meanwhile, refuses the whole run (409; preview
    again)."""
    run = get_run(session, identity, run_id)
    taken = getattr(
        session.execute(
            update(HelpRun)
            .where(HelpRun.id == run.id, HelpRun.status == "preview")
            .values(status="approved", approved_by=identity.user_id, approved_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        ),
        "rowcount",
        0,
    )
    if not taken:
        raise Conflict("This run is already approved.", slug="run-not-preview")
    # The assignments as they stand now that the run is ours: an edit committed
    # meanwhile is what gets booked.
    session.refresh(run)
    made: list[HelpSession] = []
    for a in run.assignments:
        request_id = uuid.UUID(a["request_id"])
        moved = getattr(
            session.execute(
                update(HelpRequest)
                .where(HelpRequest.id == request_id, HelpRequest.status == "open")
                .values(status="scheduled", version=HelpRequest.version + 1)
                .execution_options(synchronize_session=False)
            ),
            "rowcount",
            0,
        )
        if not moved:
            raise Conflict(
                f"Request {request_id} is no longer in the queue; preview again.",
                slug="schedule-stale",
            )
        starts = datetime.fromisoformat(a["starts_at"])
        held = HelpSession(
            id=uuid.uuid4(),
            helper_id=uuid.UUID(a["helper_id"]),
            request_id=request_id,
            run_id=run.id,
            starts_at=starts,
            ends_at=datetime.fromisoformat(a["ends_at"]),
            held_start=starts,
            status="booked",
            reason=str(a["reason"])[:500],
        )
        session.add(held)
        made.append(held)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "A slot of this run was booked by another approval; preview again.",
            slug="slot-taken",
        ) from None
    session.refresh(run)
    log.info("help run %s approved: %d sessions", run.id, len(made))
    return made


def dump_run(run: HelpRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "run_at": run.run_at,
        "assignments": run.assignments,
        "unassigned": run.unassigned,
        "created_at": run.created_at,
        "approved_at": run.approved_at,
        "edited_at": run.edited_at,
        "revision": run.revision,
    }


# Sessions --------------------------------------------------------------------------------


def _helper_ids_of(session: Session, identity: Identity) -> list[uuid.UUID]:
    if identity.user_id is None or identity.org_id is None:
        return []
    return list(
        session.scalars(
            select(HelperRow.id).where(
                HelperRow.user_id == identity.user_id, HelperRow.org_id == identity.org_id
            )
        )
    )


def list_sessions(
    session: Session,
    identity: Identity,
    *,
    ends_after: datetime | None = None,
    starts_before: datetime | None = None,
) -> list[tuple[HelpSession, HelpRequest]]:
    """A helper's own sessions; every session for coordinators; nothing for anyone
    else. Soonest first; with ``ends_after`` / ``starts_before``, those of that window
    alone (a helper's page shows the days ahead, not every session ever held)."""
    stmt = select(HelpSession, HelpRequest).join(
        HelpRequest, HelpRequest.id == HelpSession.request_id
    )
    if ends_after is not None:
        stmt = stmt.where(HelpSession.ends_at >= ends_after)
    if starts_before is not None:
        stmt = stmt.where(HelpSession.starts_at < starts_before)
    if not identity.is_coordinator:
        stmt = stmt.where(HelpSession.helper_id.in_(_helper_ids_of(session, identity)))
    stmt = stmt.order_by(HelpSession.starts_at, HelpSession.id)
    return [(s, r) for s, r in session.execute(stmt)]


def _own_session(
    session: Session, identity: Identity, session_id: uuid.UUID, *, coordinators: bool
) -> tuple[HelpSession, HelpRequest]:
    found = session.get(HelpSession, session_id)
    mine = found is not None and found.helper_id in _helper_ids_of(session, identity)
    if found is None or not (mine or (coordinators and identity.is_coordinator)):
        # Someone else's session is answered as missing.
        raise NotFound(f"No session {session_id}.", slug="session-not-found")
    asked = session.get(HelpRequest, found.request_id)
    assert asked is not None
    return found, asked


def get_session(
    session: Session, identity: Identity, session_id: uuid.UUID
) -> tuple[HelpSession, HelpRequest]:
    return _own_session(session, identity, session_id, coordinators=True)


def confirm(
    session: Session, identity: Identity, session_id: uuid.UUID
) -> tuple[HelpSession, HelpRequest]:
    """The helper takes the session."""
    found, asked = _own_session(session, identity, session_id, coordinators=False)
    if found.status != "booked":
        raise Conflict(f"The session is {found.status}.", slug="session-not-booked")
    found.status = "confirmed"
    found.decided_at = datetime.now(UTC)
    session.flush()
    log.info("help session %s confirmed", found.id)
    return found, asked


def decline(
    session: Session, identity: Identity, session_id: uuid.UUID
) -> tuple[HelpSession, HelpRequest]:
    """The helper gives the session up: its slot is free again and its request goes
    back to the queue first in line (ahead of every open request of its tier)."""
    found, asked = _own_session(session, identity, session_id, coordinators=False)
    if found.status == "declined":
        raise Conflict("The session is already declined.", slug="session-declined")
    _take(session, found, ("booked", "confirmed"), status="declined", decided_at=_now())
    requeue(session, asked)
    session.flush()
    log.info("help session %s declined; request %s back in line", found.id, asked.id)
    return found, asked


def _now() -> datetime:
    return datetime.now(UTC)


def _take(session: Session, found: HelpSession, states: tuple[str, ...], **values: Any) -> None:
    """Move the session out of one of ``states`` with one conditional update, its slot
    freed unless it was held: of two callers at once only one gets it, the other a
    409 naming the status it found."""
    if values.get("status") != "held":
        values["held_start"] = None
    if not move_once(session, found, HelpSession.status.in_(states), **values):
        raise Conflict(
            f"The session is {found.status}.",
            slug=f"session-{found.status}",
            current_status=found.status,
        )


def requeue(session: Session, asked: HelpRequest) -> None:
    """The request back in the queue, first in line (ahead of every open request of
    its tier)."""
    first = session.scalar(
        select(func.min(HelpRequest.queued_at)).where(HelpRequest.status == "open")
    )
    front = min(asked.queued_at, first) if first is not None else asked.queued_at
    asked.status = "open"
    asked.queued_at = front - timedelta(minutes=1)
    asked.version += 1


def dump_session(found: HelpSession, asked: HelpRequest) -> dict[str, Any]:
    """A session without the seeker's contact (see :func:`reveal_contact`)."""
    visible_from, visible_until = domain.contact_window(found.starts_at, found.ends_at)
    return {
        "id": found.id,
        "helper_id": found.helper_id,
        "request_id": found.request_id,
        "run_id": found.run_id,
        "starts_at": found.starts_at,
        "ends_at": found.ends_at,
        "status": found.status,
        "reason": found.reason,
        "topic": asked.topic,
        "urgency": asked.urgency,
        "crisis": asked.crisis,
        "languages": asked.languages,
        "contact_visible_from": visible_from,
        "contact_visible_until": visible_until,
        "closed_at": found.closed_at,
        "minutes": found.minutes,
        "missed_by": found.missed_by,
        "version": found.version,
    }


def _within_window(found: HelpSession, now: datetime, what: str) -> tuple[datetime, datetime]:
    """The session's contact window, once the helper confirmed it and ``now`` lies
    within it; else a 403 that begins with ``what`` (what the helper asked for)."""
    visible_from, visible_until = domain.contact_window(found.starts_at, found.ends_at)
    if found.status != "confirmed":
        raise Forbidden(f"{what} once the session is confirmed.", slug="contact-not-visible")
    if not visible_from <= now <= visible_until:
        raise Forbidden(
            f"{what} from {visible_from.isoformat()} to {visible_until.isoformat()} only.",
            slug="contact-not-visible",
        )
    return visible_from, visible_until


def reveal_contact(
    session: Session, identity: Identity, session_id: uuid.UUID, now: datetime | None = None
) -> dict[str, Any]:
    """The seeker's contact (and what they wrote), to the session's helper alone, only
    within the session's window and once they confirmed it; each reveal is recorded
    in ``access_records``."""
    found, asked = _own_session(session, identity, session_id, coordinators=False)
    visible_from, visible_until = _within_window(
        found, now or datetime.now(UTC), "The contact is shown"
    )
    helper = session.get(HelperRow, found.helper_id)
    assert helper is not None
    session.add(
        AccessRecord(
            org_id=helper.org_id,
            user_id=identity.user_id,
            coordinator_org_id=None,
            reason="the helper's session window",
            what=f"help request contact, session {found.id}",
        )
    )
    session.flush()
    log.info("help session %s: contact shown to its helper", found.id)
    return {
        "session_id": found.id,
        "contact": asked.contact,
        "text": asked.text,
        "contact_visible_from": visible_from,
        "contact_visible_until": visible_until,
    }


# Closing, missed sessions, notes ----------------------------------------------------------

# The region of a helper organisation the read model does not know.
UNKNOWN_REGION = "00"


def _chain_root(asked: HelpRequest) -> uuid.UUID:
    return asked.first_request_id or asked.id


def close(
    session: Session,
    outbox: Outbox,
    identity: Identity,
    session_id: uuid.UUID,
    data: dict[str, Any],
    now: datetime | None = None,
) -> tuple[HelpSession, HelpRequest, HelpRequest | None]:
    """The helper closes a session they confirmed, from its start on, as ``held``: its
    note (if any) kept apart for them and their supervisors, its request closed, a
    follow-up asked for the same person with the same helper when they say so, and
    ``community.help_session_held`` (ids and counts) sent for the public ledger. Once
    only: a second close, even at the same moment, is a 409 and makes no follow-up."""
    found, asked = _own_session(session, identity, session_id, coordinators=False)
    now = now or _now()
    if found.status == "confirmed" and now < found.starts_at:
        raise Conflict(
            f"The session starts at {found.starts_at.isoformat()}; close it from then on.",
            slug="session-not-started",
            current_status=found.status,
        )
    minutes = data.get("minutes")
    if minutes is None:
        minutes = max(1, round((found.ends_at - found.starts_at).total_seconds() / 60))
    _take(
        session,
        found,
        ("confirmed",),
        status="held",
        closed_at=now,
        closed_by=identity.user_id,
        minutes=minutes,
    )
    helper = session.get(HelperRow, found.helper_id)
    assert helper is not None
    note = (data.get("note") or "").strip()
    follow_up = bool(data.get("follow_up"))
    if note:
        session.add(
            HelpSessionNote(
                id=uuid.uuid4(),
                session_id=found.id,
                helper_id=helper.id,
                org_id=helper.org_id,
                note=note,
                follow_up=follow_up,
                written_by=identity.user_id,
                written_at=now,
            )
        )
    asked.status = "closed"
    asked.version += 1
    next_request = _follow_up(session, asked, helper, now) if follow_up else None
    org = session.get(Organisation, helper.org_id)
    region = (getattr(org, "region", None) or "").strip() or UNKNOWN_REGION
    local_day = found.starts_at.astimezone(domain.BEIJING).date()
    outbox.add(
        session,
        new_event(
            "community.help_session_held",
            {
                "session_id": found.id,
                "person_key": _chain_root(asked),
                "region": region,
                "week": _monday(local_day),
                "minutes": minutes,
            },
            producer="community",
            aggregate_id=found.id,
            aggregate_version=1,
        ),
    )
    session.flush()
    log.info(
        "help session %s held, %d minutes%s",
        found.id,
        minutes,
        f"; follow-up request {next_request.id}" if next_request else "",
    )
    return found, asked, next_request


def _follow_up(
    session: Session, asked: HelpRequest, helper: HelperRow, now: datetime
) -> HelpRequest:
    """A new open request for the same person, naming the helper seen (the scheduler
    keeps them where it can). The preferred times are not carried over: they were for
    the session now held."""
    made = HelpRequest(
        id=uuid.uuid4(),
        user_id=asked.user_id,
        org_id=asked.org_id,
        topic=asked.topic,
        urgency=asked.urgency,
        priority_group=asked.priority_group,
        languages=list(asked.languages),
        windows=[],
        crisis=asked.crisis,
        text=asked.text,
        contact=asked.contact,
        status="open",
        queued_at=now,
        previous_helper_id=helper.id,
        first_request_id=_chain_root(asked),
        follow_token_hash=asked.follow_token_hash,
    )
    session.add(made)
    return made


def mark_missed(
    session: Session,
    identity: Identity,
    session_id: uuid.UUID,
    who: str,
    now: datetime | None = None,
) -> tuple[HelpSession, HelpRequest]:
    """A session that did not take place, by the seeker or the helper, once its start
    has passed (its helper or a coordinator says so): ``missed``, its slot freed and
    its request back in the queue first in line, as a declined one."""
    found, asked = _own_session(session, identity, session_id, coordinators=True)
    now = now or _now()
    if found.status in ("booked", "confirmed") and now < found.starts_at:
        raise Conflict(
            f"The session starts at {found.starts_at.isoformat()}; it can be missed only "
            "after that.",
            slug="session-not-started",
            current_status=found.status,
        )
    _take(
        session,
        found,
        ("booked", "confirmed"),
        status="missed",
        missed_by=who,
        closed_at=now,
        closed_by=identity.user_id,
    )
    requeue(session, asked)
    session.flush()
    log.info("help session %s missed by the %s; request %s back in line", found.id, who, asked.id)
    return found, asked


def notes(session: Session, identity: Identity, session_id: uuid.UUID) -> list[HelpSessionNote]:
    """A session's note, to its helper and their organisation's admins alone (anyone
    else: as if the session did not exist)."""
    found = session.get(HelpSession, session_id)
    helper = session.get(HelperRow, found.helper_id) if found is not None else None
    if found is None or helper is None or not _supervises(identity, helper):
        raise NotFound(f"No session {session_id}.", slug="session-not-found")
    return list(
        session.scalars(select(HelpSessionNote).where(HelpSessionNote.session_id == found.id))
    )


def dump_note(note: HelpSessionNote) -> dict[str, Any]:
    return {
        "session_id": note.session_id,
        "helper_id": note.helper_id,
        "note": note.note,
        "follow_up": note.follow_up,
        "written_at": note.written_at,
    }


# Contact through a provider ---------------------------------------------------------------


def connect(
    session: Session,
    provider: ContactProvider | None,
    identity: Identity,
    session_id: uuid.UUID,
    helper_contact: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The provider asked to connect the session's helper and seeker (a masked
    call-back, or a room): to its helper once confirmed, within the session's window.
    The answer says how, never a number; each connection is recorded in
    ``access_records``. A room made before is answered again."""
    found, asked = _own_session(session, identity, session_id, coordinators=False)
    if provider is None:
        raise Conflict(
            "No contact provider is configured; the seeker's contact is shown within "
            "the session's window instead (GET .../contact).",
            slug="no-contact-provider",
        )
    now = now or _now()
    _within_window(found, now, "The two sides are connected")
    if not asked.contact:
        raise Conflict("The seeker left no contact.", slug="no-seeker-contact")
    helper = session.get(HelperRow, found.helper_id)
    assert helper is not None
    if not helper_contact:
        # The session's row locked first, so that of two Joins at once the second
        # waits for the first's room and answers it rather than making another.
        session.execute(select(HelpSession.id).where(HelpSession.id == found.id).with_for_update())
        room = session.scalar(
            select(HelpConnection)
            .where(HelpConnection.session_id == found.id, HelpConnection.kind == "room")
            .order_by(HelpConnection.created_at)
            .limit(1)
        )
        if room is not None:
            _record_connection(session, helper, identity, found, "room")
            session.flush()
            log.info("help session %s: its room answered again", found.id)
            return {"session_id": found.id, "kind": "room", "room_url": room.room_url}
    try:
        made = provider.connect(
            ConnectionAsked(
                session_id=found.id,
                seeker_contact=asked.contact,
                helper_contact=helper_contact,
                starts_at=found.starts_at,
                ends_at=found.ends_at,
            )
        )
    except ContactProviderError as exc:
        # A provider's message may quote a number: neither the answer nor the log
        # carries it, only what kind of failure it was.
        log.warning(
            "help session %s: the contact provider failed (%s)", found.id, type(exc).__name__
        )
        raise Unavailable(
            "The contact provider could not connect the session; try again or use the "
            "contact shown within the window.",
            slug="contact-provider-failed",
        ) from None
    session.add(
        HelpConnection(
            id=uuid.uuid4(),
            session_id=found.id,
            provider=provider.name,
            kind=made.kind,
            reference=made.reference,
            room_url=made.room_url,
            created_by=identity.user_id,
            created_at=now,
        )
    )
    _record_connection(session, helper, identity, found, made.kind)
    session.flush()
    log.info("help session %s: connected by %s (%s)", found.id, provider.name, made.kind)
    return {"session_id": found.id, "kind": made.kind, "room_url": made.room_url}


def _record_connection(
    session: Session, helper: HelperRow, identity: Identity, found: HelpSession, kind: str
) -> None:
    session.add(
        AccessRecord(
            org_id=helper.org_id,
            user_id=identity.user_id,
            coordinator_org_id=None,
            reason="the helper's session window",
            what=f"help session connection ({kind}), session {found.id}",
        )
    )


# A coordinator's changes to a preview ------------------------------------------------------


def edit_run(
    session: Session,
    identity: Identity,
    run_id: uuid.UUID,
    edited: list[dict[str, Any]],
    rule: Sequence[str],
    now: datetime | None = None,
    based_on: int | None = None,
) -> HelpRun:
    """A preview's assignments replaced by a coordinator's list, each checked against
    the hard rules (``domain.broken_rules``) as of now: a 422 names each assignment
    at fault and the rule it breaks, and nothing changes. An assignment the scheduler
    had made keeps its reason; any other gets its figures recomputed, marked as the
    coordinator's choice. Requests of the run left out go to its unassigned list."""
    run = get_run(session, identity, run_id)
    if run.status != "preview":
        raise Conflict("Only a preview can be changed.", slug="run-not-preview")
    if based_on is not None and based_on != run.revision:
        raise Stale(run.revision)
    now = now or _now()
    errors: dict[str, list[str]] = {}
    wanted: list[tuple[int, uuid.UUID, uuid.UUID, datetime]] = []
    for n, a in enumerate(edited):
        try:
            # The session's end is checked too: a start the year 9999 holds may end
            # past it.
            starts = a["starts_at"].astimezone(UTC)
            starts + SESSION
        except OverflowError:
            errors.setdefault(f"assignments.{n}.starts_at", []).append(
                "Times between the years 1 and 9999 in UTC."
            )
            continue
        wanted.append((n, a["request_id"], a["helper_id"], starts))
    if errors:
        raise RuleBroken("A session's time is out of range.", slug="invalid-times", errors=errors)
    of_run = {uuid.UUID(a["request_id"]) for a in run.assignments} | {
        uuid.UUID(u["request_id"]) for u in run.unassigned
    }
    ids = of_run | {rid for _n, rid, _h, _s in wanted}
    rows = {
        r.id: r
        for r in session.scalars(
            select(HelpRequest).where(HelpRequest.id.in_(ids), HelpRequest.status == "open")
        )
    }
    for n, rid, _h, _s in wanted:
        if rid not in rows:
            errors.setdefault(f"assignments.{n}.request_id", []).append(
                f"Request {rid} is not in the queue."
            )
    if errors:
        raise RuleBroken(
            "An assignment names a request not in the queue.",
            slug="schedule-breaks-rules",
            errors=errors,
        )
    helpers = {h.id: h for h in _free_helpers(session, now)}
    requests = {str(rid): _stored_request(row, rule) for rid, row in rows.items()}
    assignments = []
    for n, rid, hid, starts in wanted:
        helper = helpers.get(str(hid))
        if helper is None:
            errors.setdefault(f"assignments.{n}.helper_id", []).append(
                f"Helper {hid} is not a verified helper."
            )
            continue
        slot = next(
            (s for s in helper.slots if s.start == starts),
            Slot(starts, starts + SESSION),
        )
        assignments.append(domain.Assignment(str(rid), str(hid), slot, _PLACEHOLDER))
    if errors:
        raise RuleBroken(
            "An assignment names a helper who is not verified.",
            slug="schedule-breaks-rules",
            errors=errors,
        )
    assigned = {a.request_id for a in assignments}
    left = [domain.Unassigned(rid, domain.TAKEN) for rid in sorted(requests) if rid not in assigned]
    proposed = domain.Schedule(
        tuple(assignments),
        tuple(left),
        domain.ScheduleStats(0, 0, 0, {}, {}, 0, 0),
    )
    broken = domain.broken_rules(proposed, helpers.values(), requests.values(), now=now)
    for message in broken:
        # Name the assignments a rule is about: by request, else by helper.
        at = [
            n
            for n, a in enumerate(assignments)
            if message.startswith(f"{a.request_id}") or f"request {a.request_id} " in message
        ] or [n for n, a in enumerate(assignments) if message.startswith(a.helper_id)]
        for n in at or [0]:
            errors.setdefault(f"assignments.{n}", []).append(message)
    if errors:
        first = broken[0]
        raise RuleBroken(
            f"The schedule breaks a rule: {first}.",
            slug="schedule-breaks-rules",
            errors=errors,
        )
    assignments_now = _reasoned(run, proposed, helpers, requests)
    before = {a["request_id"] for a in run.assignments}
    unassigned_now = [u for u in run.unassigned if u["request_id"] not in assigned] + [
        {
            "request_id": rid,
            "reason": LEFT_OUT,
            "why": "a coordinator left it out of the schedule",
        }
        for rid in sorted(before - assigned)
    ]
    taken = getattr(
        session.execute(
            update(HelpRun)
            .where(
                HelpRun.id == run.id,
                HelpRun.status == "preview",
                HelpRun.revision == run.revision,
            )
            .values(
                assignments=assignments_now,
                unassigned=unassigned_now,
                edited_by=identity.user_id,
                edited_at=now,
                revision=HelpRun.revision + 1,
            )
            .execution_options(synchronize_session=False)
        ),
        "rowcount",
        0,
    )
    if not taken:
        session.refresh(run)
        if run.status != "preview":
            raise Conflict("The run was approved meanwhile.", slug="run-not-preview")
        if based_on is not None:
            raise Stale(run.revision)
        raise Conflict("Another coordinator changed the preview meanwhile.", slug="run-changed")
    session.refresh(run)
    log.info("help run %s edited: %d sessions", run.id, len(run.assignments))
    return run


class Stale(Conflict):
    """The preview changed since the revision an edit was based on (answered 412 at
    the API's edge)."""

    def __init__(self, revision: int, what: str = "The preview") -> None:
        super().__init__(
            f"{what} has changed (now revision {revision}); read it again.",
            slug="stale-version",
            current_version=revision,
        )
        self.revision = revision


# Why a request of an edited preview has no session.
LEFT_OUT = "left-out-by-coordinator"
_PLACEHOLDER = domain.Reason("routine", False, 0.0, False, False, 0, 0, 0)


def _reasoned(
    run: HelpRun,
    proposed: domain.Schedule,
    helpers: dict[str, Helper],
    requests: dict[str, SessionRequest],
) -> list[dict[str, Any]]:
    """The edited assignments as a run keeps them: one the scheduler had made with its
    reason, any other with its figures recomputed and marked as a coordinator's."""
    kept = {(a["request_id"], a["helper_id"], a["starts_at"]): a for a in run.assignments}
    per_day: Counter[tuple[str, date]] = Counter()
    per_helper: Counter[str] = Counter()
    for a in proposed.assignments:
        per_day[(a.helper_id, helpers[a.helper_id].day_of(a.slot))] += 1
        per_helper[a.helper_id] += 1
    out: list[dict[str, Any]] = []
    for a in sorted(proposed.assignments, key=lambda a: (a.slot.start, a.helper_id)):
        starts = a.slot.start.astimezone(UTC).isoformat()
        same = kept.get((a.request_id, a.helper_id, starts))
        if same is not None:
            out.append(same)
            continue
        helper, asked = helpers[a.helper_id], requests[a.request_id]
        day = helper.day_of(a.slot)
        reason = domain.Reason(
            urgency=asked.urgency,
            priority=asked.priority,
            wait_hours=round(domain.hours(a.slot.start - asked.created_at), 1),
            follow_up=asked.previous_helper is not None,
            continuity=asked.previous_helper == a.helper_id,
            helper_day_sessions=per_day[(a.helper_id, day)]
            + helper.daily_limit
            - helper.room_on(day),
            daily_limit=helper.daily_limit,
            helper_sessions=per_helper[a.helper_id],
        )
        out.append(
            {
                "request_id": a.request_id,
                "helper_id": a.helper_id,
                "starts_at": starts,
                "ends_at": a.slot.end.astimezone(UTC).isoformat(),
                "urgency": asked.urgency,
                "reason": "a coordinator's choice; " + reason.describe(),
                "by_coordinator": True,
            }
        )
    return out
