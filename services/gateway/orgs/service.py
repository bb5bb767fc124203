"""Organisations: registration, the directory, and what each caller may see of them.

Every registration is announced as ``org.registered`` and checked for duplicates
(names that normalise alike in the same city), which are flagged for a coordinator.
Contact people, licence numbers and verification evidence are private: shown to
the organisation's own members and to coordinators only.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.orm import Session

from services.gateway.duplicates.domain import OrgRecord, find_duplicates, normalise_name
from services.gateway.models import DuplicateFlag, Organisation
from shared.errors import Conflict, NotFound, RuleBroken
from shared.events import new_event
from shared.identity import Identity
from shared.outbox import Outbox

ORG_AUDIT_FIELDS = (
    "name",
    "name_zh",
    "name_en",
    "kind",
    "region",
    "address",
    "licence_number",
    "website",
    "status",
    "verified_at",
    "verified_by",
    "verification_evidence",
    "suspended_at",
    "suspended_by",
    "suspension_reason",
    "merged_into_id",
)


def org_event_payload(org: Organisation) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "name_zh": org.name_zh,
        "name_en": org.name_en,
        "kind": org.kind,
        "region": org.region,
        "address": org.address,
        "status": org.status,
    }


def register_organisation(
    *, session: Session, outbox: Outbox, data: dict[str, Any], status: str = "pending"
) -> Organisation:
    """Create an organisation, flag its likely duplicates and announce it, in the
    caller's transaction."""
    name = data["name"].strip()
    if not name:
        raise RuleBroken("The organisation needs a name.", errors={"name": ["Must not be blank."]})
    org = Organisation(
        id=uuid.uuid4(),
        name=name,
        normalised_name=normalise_name(name),
        name_zh=(data.get("name_zh") or "").strip() or None,
        name_en=(data.get("name_en") or "").strip() or None,
        kind=data["kind"],
        region=data["region"],
        address=data.get("address"),
        contacts=list(data.get("contacts") or []),
        licence_number=data.get("licence_number"),
        website=data.get("website"),
        status=status,
    )
    session.add(org)
    session.flush()
    flag_duplicates(session, org)
    outbox.add(
        session,
        new_event(
            "org.registered",
            org_event_payload(org),
            producer="gateway",
            aggregate_id=org.id,
            aggregate_version=org.version,
        ),
    )
    return org


def flag_duplicates(session: Session, org: Organisation) -> list[DuplicateFlag]:
    """Flag the organisations in ``org``'s province that are probably ``org`` again.

    A pair already flagged (either way round) keeps its flag and its decision. Only
    the organisations a match is possible with are read (see ``_near``), not every
    one of the province.
    """
    others = session.execute(
        select(Organisation.id, Organisation.name, Organisation.region, Organisation.kind).where(
            _near(org.region),
            Organisation.status != "merged",
            Organisation.id != org.id,
        )
    ).all()
    candidates = find_duplicates(
        OrgRecord(id=str(org.id), name=org.name, region=org.region, kind=org.kind),
        (OrgRecord(id=str(o.id), name=o.name, region=o.region, kind=o.kind) for o in others),
    )
    if not candidates:
        return []
    ids = [uuid.UUID(c.org_id) for c in candidates]
    existing = {
        frozenset((a, b))
        for a, b in session.execute(
            select(DuplicateFlag.org_id, DuplicateFlag.candidate_id).where(
                ((DuplicateFlag.org_id == org.id) & DuplicateFlag.candidate_id.in_(ids))
                | ((DuplicateFlag.candidate_id == org.id) & DuplicateFlag.org_id.in_(ids))
            )
        )
    }
    flags = []
    for candidate in candidates:
        other = uuid.UUID(candidate.org_id)
        if frozenset((org.id, other)) in existing:
            continue
        flag = DuplicateFlag(
            id=uuid.uuid4(),
            org_id=org.id,
            candidate_id=other,
            score=candidate.score,
            reason=candidate.reason,
        )
        session.add(flag)
        flags.append(flag)
    session.flush()
    return flags


def _starting_with(prefix: str) -> ColumnElement[bool]:
    """Region codes that start with ``prefix`` (digits): the range lets the region's
    index serve it whatever the database's collation, the LIKE keeps it exact."""
    column = Organisation.region
    return and_(
        column >= prefix, column <= prefix + "z", column.startswith(prefix, autoescape=True)
    )


def _near(region: str) -> ColumnElement[bool]:
    """The regions a duplicate of an organisation in ``region`` may be in, as
    ``find_duplicates`` matches them (at city level): for a city or a district, that
    city's codes and the bare province code (a registration that named only the
    province may be anywhere in it); for a province, the whole province."""
    if len(region) >= 4:
        return or_(_starting_with(region[:4]), Organisation.region == region[:2])
    return _starting_with(region[:2])


def get_organisation(session: Session, org_id: uuid.UUID) -> Organisation:
    org = session.get(Organisation, org_id)
    if org is None:
        raise NotFound(f"No organisation {org_id}.", slug="organisation-not-found")
    return org


def visible_to(identity: Identity) -> Any:
    """Which organisations the directory shows ``identity``: coordinators see every
    one; a verified organisation's members see their own and the verified
    organisations that are not individuals; anyone else sees only their own.
    Individual donors are people: the directory lists them to coordinators alone."""
    if identity.is_coordinator:
        return true()
    own = Organisation.id == identity.org_id
    if identity.org_status != "verified":
        return own
    return own | ((Organisation.status == "verified") & (Organisation.kind != "individual"))


def sees_private(identity: Identity, org: Organisation) -> bool:
    """Does ``identity`` see ``org``'s contacts, licence and verification record?"""
    return identity.is_coordinator or identity.org_id == org.id


def visible_organisation(session: Session, identity: Identity, org_id: uuid.UUID) -> Organisation:
    """The organisation if the directory shows it to ``identity``; else not found, as
    for one that does not exist."""
    org = session.scalar(
        select(Organisation).where(Organisation.id == org_id, visible_to(identity))
    )
    if org is None:
        raise NotFound(f"No organisation {org_id}.", slug="organisation-not-found")
    return org


def refuse_if_merged(org: Organisation) -> None:
    """An organisation merged into another is acted on through that one."""
    if org.status == "merged":
        raise Conflict(
            f"Organisation {org.id} ({org.name}) was merged into {org.merged_into_id}; "
            "act on that one instead.",
            slug="organisation-merged",
            org_id=str(org.id),
            merged_into_id=str(org.merged_into_id),
        )
