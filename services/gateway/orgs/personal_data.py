"""A person's data, exported and erased on request (PIPL articles 45 and 47).

A person is an organisation of kind ``individual`` (an individual donor) with the
users who act for it. The gateway holds their name, address, contacts, licence,
verification evidence, e-mail addresses and the audit log's snapshots of them; the
services hold their read model's copy and the pledges' pickup addresses and
coordinates (see the README's data-protection model).

Erasure replaces all of it by :data:`ERASED_NAME` or nothing, in the gateway's own
transaction, and announces ``org.erased`` so that each service does the same with
what it holds. Quantities, statuses and ids stay: every pledge, allocation, shipment
and receipt still adds up, and the public ledger's totals do not move.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.models import (
    ApiToken,
    AuditEntry,
    AuthSession,
    Membership,
    Organisation,
    Place,
    User,
    WebhookDelivery,
    WebhookSubscription,
    messaging,
)
from shared.db import utcnow
from shared.errors import Conflict, RuleBroken
from shared.events import new_event
from shared.outbox import Outbox
from shared.places import erase_places

ERASED_NAME = "已删除的个人 / Erased person"
# Fields that hold a person's data, wherever they appear in a stored snapshot or
# payload (the audit log, events kept in the outbox, webhook deliveries).
PERSONAL_FIELDS = frozenset(
    {
        "name",
        "name_zh",
        "name_en",
        "address",
        "origin_address",
        "contacts",
        "licence_number",
        "website",
        "verification_evidence",
        "email",
        "phone",
        "lat",
        "lon",
    }
)


def scrubbed(value: Any) -> Any:
    """``value`` (as stored in JSON) with every personal field emptied: a name becomes
    :data:`ERASED_NAME`, a list empty, anything else null."""
    if isinstance(value, dict):
        return {key: _blank(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item) for item in value]
    return value


def _blank(key: str, value: Any) -> Any:
    if key not in PERSONAL_FIELDS:
        return scrubbed(value)
    if isinstance(value, list):
        return []
    if key == "name" and value:
        return ERASED_NAME
    return None


def members_of(session: Session, org_id: uuid.UUID) -> list[User]:
    """The users who act for ``org_id`` and for no other organisation."""
    users = session.scalars(
        select(User)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id)
    ).unique()
    return [u for u in users if {m.org_id for m in u.memberships} == {org_id}]


def _person(org: Organisation) -> None:
    if org.kind != "individual":
        raise RuleBroken(
            "Only a person's data is exported or erased this way: this organisation is "
            "not an individual.",
            slug="not-a-person",
            errors={"org_id": ["Not an individual."]},
        )


# A community committee's export also holds its residents' data (the community
# service's part); the organisation itself is not erased, only that data.
COMMUNITY_KIND = "community_committee"


def _exportable(org: Organisation) -> None:
    if org.kind != COMMUNITY_KIND:
        _person(org)


def _entries(session: Session, org: Organisation, users: list[User]) -> Any:
    """The audit log's entries about the person or its users, or made by them."""
    user_ids = [u.id for u in users]
    targets = [str(org.id), *(str(u) for u in user_ids)]
    clauses = [AuditEntry.target_id.in_(targets), AuditEntry.actor_org_id == org.id]
    if user_ids:
        clauses.append(AuditEntry.actor_user_id.in_(user_ids))
    return session.scalars(
        select(AuditEntry).where(or_(*clauses)).order_by(AuditEntry.at, AuditEntry.id)
    )


def export(session: Session, org: Organisation) -> dict[str, Any]:
    """What the gateway holds of the person ``org``: its record, its users, and the
    audit log's entries about them or made by them (the client address only of their
    own actions). A community committee's too: it holds its residents' data."""
    _exportable(org)
    users = members_of(session, org.id)
    user_ids = {u.id for u in users}
    entries = list(_entries(session, org, users))
    return {
        "organisation": {
            "id": str(org.id),
            "name": org.name,
            "name_zh": org.name_zh,
            "name_en": org.name_en,
            "kind": org.kind,
            "region": org.region,
            "address": org.address,
            "contacts": org.contacts,
            "licence_number": org.licence_number,
            "website": org.website,
            "status": org.status,
            "verification_evidence": org.verification_evidence,
            "created_at": org.created_at.isoformat(),
            "erased_at": org.erased_at.isoformat() if org.erased_at else None,
        },
        "places": [
            {
                "id": str(p.id),
                "name": p.name,
                "address": p.address,
                "region": p.region,
                "lat": p.lat,
                "lon": p.lon,
                "contact_name": p.contact_name,
                "contact_phone": p.contact_phone,
                "opening_hours": p.opening_hours,
                "access_notes": p.access_notes,
            }
            for p in session.scalars(select(Place).where(Place.org_id == org.id))
        ],
        "users": [
            {
                "id": str(u.id),
                "email": u.email,
                "name": u.name,
                "created_at": u.created_at.isoformat(),
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in users
        ],
        "audit": [
            {
                "at": e.at.isoformat(),
                "action": e.action,
                "target_type": e.target_type,
                "target_id": e.target_id,
                "before": e.before,
                "after": e.after,
                "ip": e.ip if e.actor_user_id in user_ids else None,
            }
            for e in entries
        ],
    }


def erase(session: Session, outbox: Outbox, org: Organisation, reason: str) -> Organisation:
    """Erase the person ``org``'s data here and announce ``org.erased``, in the
    caller's transaction. Erasing twice is refused."""
    _person(org)
    if org.erased_at is not None:
        raise Conflict(f"Organisation {org.id} was erased already.", slug="already-erased")
    now = utcnow()
    users = members_of(session, org.id)
    user_ids = [u.id for u in users]
    org.name = ERASED_NAME
    org.normalised_name = f"erased-{org.id.hex}"
    org.name_zh = org.name_en = org.address = org.licence_number = org.website = None
    org.contacts = []
    org.verification_evidence = None
    org.erased_at = now
    # A person's places keep their region only; the services' copies follow org.erased.
    erase_places(session, Place, org.id)
    for user in users:
        user.email = f"erased-{user.id.hex}@erased.invalid"
        user.name = ""
        user.password_hash = "!"  # noqa: S105 - no password hashes to this: nobody signs in
        user.active = False
    if user_ids:
        session.execute(
            update(AuthSession)
            .where(AuthSession.user_id.in_(user_ids), AuthSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        session.execute(
            update(AuthSession).where(AuthSession.user_id.in_(user_ids)).values(ip=None)
        )
        session.execute(
            update(ApiToken)
            .where(ApiToken.user_id.in_(user_ids), ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    for entry in _entries(session, org, users):
        entry.before = scrubbed(entry.before) if entry.before else entry.before
        entry.after = scrubbed(entry.after) if entry.after else entry.after
        if entry.actor_org_id == org.id or entry.actor_user_id in user_ids:
            entry.ip = None
    # Answers kept for their Idempotency-Keys (a registration's holds the person).
    keys = messaging.idempotency
    scopes = [f"org:{org.id}", *(f"user:{u}" for u in user_ids)]
    session.execute(delete(keys).where(keys.scope.in_(scopes)))
    outbox_rows = messaging.outbox
    for row in session.scalars(select(outbox_rows).where(outbox_rows.aggregate_id == str(org.id))):
        row.message = scrubbed(row.message)
    own = select(WebhookSubscription.id).where(WebhookSubscription.org_id == org.id)
    own_ids = set(session.scalars(own))
    for delivery in session.scalars(
        select(WebhookDelivery).where(
            or_(
                WebhookDelivery.event_type.startswith("org."),
                WebhookDelivery.subscription_id.in_(own),
            )
        )
    ):
        data = (delivery.payload or {}).get("data") or {}
        if delivery.subscription_id in own_ids or str(data.get("id")) == str(org.id):
            delivery.payload = scrubbed(delivery.payload)
    session.flush()
    outbox.add(
        session,
        new_event(
            "org.erased",
            {"id": org.id, "name": ERASED_NAME, "erased_at": now, "user_ids": user_ids},
            producer="gateway",
            aggregate_id=org.id,
            aggregate_version=org.version,
        ),
    )
    audit.record(
        session,
        "org.erase",
        "organisation",
        org.id,
        after={"reason": reason, "users": len(users)},
    )
    return org


def erase_residents(
    session: Session, outbox: Outbox, org: Organisation, reason: str
) -> Organisation:
    """Erase the residents' data a community committee keeps in the community service
    (households' doors, notes and phones, cases' text, deliveries' notes, appointments'
    names), announced as ``org.residents_erased``, in the caller's transaction. The
    organisation is not a person: its record, users and every count stay."""
    if org.kind != COMMUNITY_KIND:
        _person(org)
    now = utcnow()
    outbox.add(
        session,
        new_event(
            "org.residents_erased",
            {"id": org.id, "erased_at": now},
            producer="gateway",
            # Each erasure is its own aggregate: the organisation's events keep their
            # own numbering.
            aggregate_id=uuid.uuid4(),
            aggregate_version=1,
        ),
    )
    audit.record(
        session,
        "org.erase_residents",
        "organisation",
        org.id,
        after={"reason": reason},
    )
    return org
