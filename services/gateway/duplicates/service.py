"""Coordinators review organisations flagged as probable duplicates: merge or dismiss.

A flag pairs two organisations whose names normalise alike in the same city (see
:mod:`services.gateway.duplicates.domain`). Flags are raised when an organisation registers,
and on demand: for one organisation, or over the whole directory. The review queue
shows both organisations side by side.

Merging keeps one organisation and retires the other (status ``merged``, with
``merged_into_id``): its members move to the kept organisation, their sign-ins and
the API tokens made for it are revoked, its other open flags are re-pointed at the
kept organisation, and ``org.merged`` tells the services. The kept organisation's
status does not change: a pending one stays pending even if the retired one was
verified. Dismissing records that the two are different organisations, so scans do
not flag the pair again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.duplicates.domain import OrgRecord, find_duplicates
from services.gateway.models import ApiToken, AuthSession, DuplicateFlag, Membership, Organisation
from services.gateway.orgs.service import ORG_AUDIT_FIELDS, refuse_if_merged
from services.gateway.tokens.service import TOKEN_AUDIT_FIELDS
from shared.db import utcnow
from shared.errors import Conflict, NotFound, RuleBroken
from shared.events import new_event
from shared.identity import ORG_ADMIN, ROLE_OF_KIND, current_identity, forbidden
from shared.outbox import Outbox
from shared.pagination import paginate

FLAG_STATUSES = ("open", "merged", "dismissed")

FLAG_AUDIT_FIELDS = (
    "org_id",
    "candidate_id",
    "score",
    "reason",
    "status",
    "resolved_at",
    "resolved_by",
    "note",
)

# Reading ---------------------------------------------------------------------------


def dump_flags(session: Session, flags: Sequence[DuplicateFlag]) -> list[dict[str, Any]]:
    """``flags`` with both organisations of each pair, loaded in one query."""
    ids = {flag.org_id for flag in flags} | {flag.candidate_id for flag in flags}
    orgs = (
        {o.id: o for o in session.scalars(select(Organisation).where(Organisation.id.in_(ids)))}
        if ids
        else {}
    )
    return [
        {
            **{name: getattr(flag, name) for name in ("id", *FLAG_AUDIT_FIELDS, "created_at")},
            "org": orgs.get(flag.org_id),
            "candidate": orgs.get(flag.candidate_id),
        }
        for flag in flags
    ]


def _involving(org_id: uuid.UUID) -> Any:
    return or_(DuplicateFlag.org_id == org_id, DuplicateFlag.candidate_id == org_id)


def _page(session: Session, stmt: Any, args: dict[str, Any]) -> dict[str, Any]:
    page = paginate(session, stmt, DuplicateFlag, cursor=args["cursor"], limit=args["limit"])
    return {**page, "items": dump_flags(session, page["items"])}


def _get_flag(session: Session, flag_id: uuid.UUID, *, lock: bool = False) -> DuplicateFlag:
    flag = session.get(DuplicateFlag, flag_id, with_for_update=lock, populate_existing=lock)
    if flag is None:
        raise NotFound(f"No duplicate flag {flag_id}.", slug="duplicate-flag-not-found")
    return flag


def _check_open(flag: DuplicateFlag) -> None:
    if flag.status != "open":
        raise Conflict(
            f"Duplicate flag {flag.id} was already {flag.status}"
            + (f" on {flag.resolved_at.isoformat()}" if flag.resolved_at else "")
            + ".",
            slug="duplicate-flag-resolved",
            flag_status=flag.status,
        )


# Scanning --------------------------------------------------------------------------


def _flag_records(flags: Iterable[DuplicateFlag]) -> list[dict[str, Any]]:
    return [{"id": str(flag.id), **audit.snapshot(flag, *FLAG_AUDIT_FIELDS)} for flag in flags]


def scan_directory(session: Session) -> tuple[int, list[DuplicateFlag]]:
    """Flag every pair of organisations (not merged) that are probably one, unless
    the pair was flagged before, whatever was decided then.

    Two organisations can match only within one province, and within it only in the
    same city or when one of them is registered at province level, so each
    organisation is compared with those alone rather than with the whole directory.
    Of a new pair, the organisation registered later is the one checked
    (``org_id``) and the earlier one the candidate, as on registration.

    Answers how many organisations were checked, and the new flags.
    """
    rows = session.execute(
        select(Organisation.id, Organisation.name, Organisation.region, Organisation.kind)
        .where(Organisation.status != "merged")
        .order_by(Organisation.created_at, Organisation.id)
    ).all()
    flagged = {
        frozenset(pair)
        for pair in session.execute(select(DuplicateFlag.org_id, DuplicateFlag.candidate_id))
    }
    provinces: dict[str, list[OrgRecord]] = defaultdict(list)
    for row in rows:
        provinces[row.region[:2]].append(
            OrgRecord(id=str(row.id), name=row.name, region=row.region, kind=row.kind)
        )
    new: list[DuplicateFlag] = []
    for members in provinces.values():
        province_level = [org for org in members if len(org.region) < 4]
        cities: dict[str, list[OrgRecord]] = defaultdict(list)
        for org in members:
            if len(org.region) >= 4:
                cities[org.region[:4]].append(org)
        order = {org.id: index for index, org in enumerate(members)}
        for org in members:
            peers = cities[org.region[:4]] + province_level if len(org.region) >= 4 else members
            earlier = [peer for peer in peers if order[peer.id] < order[org.id]]
            if not earlier:
                continue
            for candidate in find_duplicates(org, earlier):
                pair = frozenset((uuid.UUID(org.id), uuid.UUID(candidate.org_id)))
                if pair in flagged:
                    continue
                flagged.add(pair)
                flag = DuplicateFlag(
                    id=uuid.uuid4(),
                    org_id=uuid.UUID(org.id),
                    candidate_id=uuid.UUID(candidate.org_id),
                    score=candidate.score,
                    reason=candidate.reason,
                )
                session.add(flag)
                new.append(flag)
    session.flush()
    return len(rows), new


# Deciding --------------------------------------------------------------------------


def dismiss_flag(
    session: Session, flag: DuplicateFlag, *, note: str | None, by: uuid.UUID | None
) -> DuplicateFlag:
    """Record that the pair are two organisations; scans will not flag it again."""
    _check_open(flag)
    before = audit.snapshot(flag, *FLAG_AUDIT_FIELDS)
    flag.status = "dismissed"
    flag.resolved_at = utcnow()
    flag.resolved_by = by
    flag.note = (note or "").strip() or None
    session.flush()
    audit.record(
        session,
        "duplicate.dismiss",
        "duplicate_flag",
        flag.id,
        before=before,
        after=audit.snapshot(flag, *FLAG_AUDIT_FIELDS),
    )
    return flag


def role_in(kind: str, role: str) -> str:
    """The role a member with ``role`` takes in an organisation of ``kind``: the same
    role if it fits that kind, else the kind's own."""
    own = ROLE_OF_KIND[kind]
    if role == own or (role == "admin" and kind == "coordinator_office"):
        return role
    return own


def _check_may_merge(*orgs: Organisation) -> None:
    identity = current_identity()
    if identity.is_admin:
        return
    for org in orgs:
        if org.id == identity.org_id:
            raise forbidden("No one merges their own organisation.")
        if org.kind == "coordinator_office":
            raise forbidden("Only an admin merges a coordinator office.")


def merge_pair(
    session: Session,
    outbox: Outbox,
    flag_id: uuid.UUID,
    *,
    keep_id: uuid.UUID,
    note: str | None,
    by: uuid.UUID | None,
) -> DuplicateFlag:
    """Merge the flagged pair into the organisation ``keep_id``, in the caller's
    transaction."""
    flag = _get_flag(session, flag_id)
    pair = (flag.org_id, flag.candidate_id)
    if keep_id not in pair:
        raise RuleBroken(
            "Keep one of the two flagged organisations.",
            errors={"keep": [f"Must be {pair[0]} or {pair[1]}."]},
        )
    # Both organisations, then the flag, locked in one order, so that merges sharing
    # an organisation wait for each other instead of deadlocking.
    orgs = {
        org.id: org
        for org in session.scalars(
            select(Organisation)
            .where(Organisation.id.in_(pair))
            .order_by(Organisation.id)
            .with_for_update()
        )
    }
    flag = _get_flag(session, flag_id, lock=True)
    _check_open(flag)
    if (flag.org_id, flag.candidate_id) != pair:
        raise Conflict(
            f"Duplicate flag {flag.id} was re-pointed by another merge meanwhile; review it again.",
            slug="duplicate-flag-changed",
        )
    keep = orgs[keep_id]
    gone = orgs[flag.candidate_id if keep_id == flag.org_id else flag.org_id]
    for org in (gone, keep):
        refuse_if_merged(org)
    _check_may_merge(keep, gone)

    now = utcnow()
    note = (note or "").strip() or None
    org_before = audit.snapshot(gone, *ORG_AUDIT_FIELDS)
    flag_before = audit.snapshot(flag, *FLAG_AUDIT_FIELDS)
    gone.status = "merged"
    gone.merged_into_id = keep.id
    flag.status = "merged"
    flag.resolved_at = now
    flag.resolved_by = by
    flag.note = note
    session.flush()
    outbox.add(
        session,
        new_event(
            "org.merged",
            {"id": gone.id, "merged_into": keep.id, "merged_at": now},
            producer="gateway",
            aggregate_id=gone.id,
            aggregate_version=gone.version,
        ),
    )
    audit.record(
        session,
        "org.merge",
        "organisation",
        gone.id,
        before=org_before,
        after={**audit.snapshot(gone, *ORG_AUDIT_FIELDS), "flag_id": str(flag.id)},
    )
    audit.record(
        session,
        "duplicate.merge",
        "duplicate_flag",
        flag.id,
        before=flag_before,
        after=audit.snapshot(flag, *FLAG_AUDIT_FIELDS),
    )
    _move_members(session, gone, keep)
    _revoke_credentials(session, gone, keep)
    _repoint_flags(session, gone, keep, by=by)
    session.flush()
    return flag


def _membership_record(m: Membership) -> dict[str, Any]:
    return {"user_id": str(m.user_id), "org_id": str(m.org_id), "role": m.role}


def _move_members(session: Session, gone: Organisation, keep: Organisation) -> None:
    """Each member of ``gone`` becomes a member of ``keep``, in the role that fits
    ``keep``'s kind; a membership ``keep`` already has is not made twice."""
    held = {
        (m.user_id, m.role)
        for m in session.scalars(select(Membership).where(Membership.org_id == keep.id))
    }
    moving = session.scalars(
        select(Membership)
        .where(Membership.org_id == gone.id)
        .order_by(Membership.created_at, Membership.id)
    ).all()
    for membership in moving:
        before = _membership_record(membership)
        role = role_in(keep.kind, membership.role)
        after: dict[str, Any] | None
        if membership.role == ORG_ADMIN or (membership.user_id, role) in held:
            # Who managed the members of the organisation merged away does not manage
            # those of the one kept.
            session.delete(membership)
            after = None
        else:
            membership.org_id = keep.id
            membership.role = role
            held.add((membership.user_id, role))
            after = _membership_record(membership)
        audit.record(
            session,
            "membership.move",
            "membership",
            membership.id,
            before=before,
            after=after,
        )
    session.flush()


def _revoke_credentials(session: Session, gone: Organisation, keep: Organisation) -> None:
    """End the sign-ins and revoke the API tokens that act for ``gone``."""
    now = utcnow()
    reason = f"organisation {gone.id} merged into {keep.id}"
    sessions = session.scalars(
        select(AuthSession).where(
            AuthSession.org_id == gone.id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
        )
    ).all()
    for auth in sessions:
        auth.revoked_at = now
        audit.record(
            session,
            "session.revoke",
            "session",
            auth.id,
            after={"reason": reason},
        )
    tokens = session.scalars(
        select(ApiToken).where(ApiToken.org_id == gone.id, ApiToken.revoked_at.is_(None))
    ).all()
    for token in tokens:
        before = audit.snapshot(token, *TOKEN_AUDIT_FIELDS)
        token.revoked_at = now
        audit.record(
            session,
            "token.revoke",
            "api_token",
            token.id,
            before=before,
            after={**audit.snapshot(token, *TOKEN_AUDIT_FIELDS), "reason": reason},
        )


def _repoint_flags(
    session: Session, gone: Organisation, keep: Organisation, *, by: uuid.UUID | None
) -> None:
    """``gone``'s other open flags now pair the other organisation with ``keep``; one
    whose new pair is already flagged, whatever was decided there, is closed as merged."""
    others = session.scalars(
        select(DuplicateFlag)
        .where(_involving(gone.id), DuplicateFlag.status == "open")
        .order_by(DuplicateFlag.created_at, DuplicateFlag.id)
        .with_for_update()
    ).all()
    if not others:
        return
    third = {flag.candidate_id if flag.org_id == gone.id else flag.org_id for flag in others}
    flagged = {
        frozenset(pair)
        for pair in session.execute(
            select(DuplicateFlag.org_id, DuplicateFlag.candidate_id).where(
                _involving(keep.id),
                or_(DuplicateFlag.org_id.in_(third), DuplicateFlag.candidate_id.in_(third)),
            )
        )
    }
    now = utcnow()
    for flag in others:
        before = audit.snapshot(flag, *FLAG_AUDIT_FIELDS)
        other = flag.candidate_id if flag.org_id == gone.id else flag.org_id
        pair = frozenset((keep.id, other))
        if other == keep.id or pair in flagged:
            flag.status = "merged"
            flag.resolved_at = now
            flag.resolved_by = by
            flag.note = f"Closed: {gone.name} ({gone.id}) was merged into {keep.name} ({keep.id})."
            action = "duplicate.close"
        else:
            if flag.org_id == gone.id:
                flag.org_id = keep.id
            else:
                flag.candidate_id = keep.id
            flag.reason = f"{flag.reason}; flagged with {gone.name}, since merged into it"[:500]
            flagged.add(pair)
            action = "duplicate.repoint"
        audit.record(
            session,
            action,
            "duplicate_flag",
            flag.id,
            before=before,
            after=audit.snapshot(flag, *FLAG_AUDIT_FIELDS),
        )
