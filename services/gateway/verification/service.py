"""Verification of organisations by coordinators.

A recipient's needs are matched, and a donor's pledges reserved, only once a
coordinator has verified the organisation, recording who, when and on what
evidence. ``org.verified`` and ``org.suspended`` carry the decision to the services,
which keep it in their read models and enforce it on their own data.

Only an admin verifies a coordinator office (that makes its members coordinators),
and no one, not even an admin, verifies or suspends their own organisation.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.models import Organisation
from services.gateway.orgs.service import ORG_AUDIT_FIELDS, refuse_if_merged
from shared.db import utcnow
from shared.events import new_event
from shared.identity import current_identity, forbidden
from shared.outbox import Outbox


def verify_organisation(
    session: Session,
    outbox: Outbox,
    org: Organisation | None,
    *,
    evidence: str,
    verified_by: uuid.UUID | None,
) -> Organisation:
    """Mark ``org`` verified and announce it; verifying a verified organisation changes
    nothing."""
    assert org is not None
    refuse_if_merged(org)
    if org.status == "verified":
        return org
    before = audit.snapshot(org, *ORG_AUDIT_FIELDS)
    org.status = "verified"
    org.verified_at = utcnow()
    org.verified_by = verified_by
    org.verification_evidence = evidence.strip()
    org.suspended_at = None
    org.suspended_by = None
    org.suspension_reason = None
    session.flush()
    outbox.add(
        session,
        new_event(
            "org.verified",
            {
                "id": org.id,
                "verified_at": org.verified_at,
                "verified_by": org.verified_by,
                "evidence": org.verification_evidence,
            },
            producer="gateway",
            aggregate_id=org.id,
            aggregate_version=org.version,
        ),
    )
    audit.record(
        session,
        "org.verify",
        "organisation",
        org.id,
        before=before,
        after=audit.snapshot(org, *ORG_AUDIT_FIELDS),
    )
    return org


def suspend_organisation(
    session: Session,
    outbox: Outbox,
    org: Organisation,
    *,
    reason: str,
    suspended_by: uuid.UUID | None,
) -> Organisation:
    """Take ``org`` out of matching and announce it; suspending twice changes nothing."""
    refuse_if_merged(org)
    if org.status == "suspended":
        return org
    before = audit.snapshot(org, *ORG_AUDIT_FIELDS)
    org.status = "suspended"
    org.suspended_at = utcnow()
    org.suspended_by = suspended_by
    org.suspension_reason = reason.strip()
    session.flush()
    outbox.add(
        session,
        new_event(
            "org.suspended",
            {"id": org.id, "suspended_at": org.suspended_at, "reason": org.suspension_reason},
            producer="gateway",
            aggregate_id=org.id,
            aggregate_version=org.version,
        ),
    )
    audit.record(
        session,
        "org.suspend",
        "organisation",
        org.id,
        before=before,
        after=audit.snapshot(org, *ORG_AUDIT_FIELDS),
    )
    return org


def _check_may_decide(org: Organisation) -> None:
    identity = current_identity()
    if identity.org_id == org.id:
        raise forbidden("No one verifies or suspends their own organisation.")
    if org.kind == "coordinator_office" and not identity.is_admin:
        raise forbidden("Only an admin verifies or suspends a coordinator office.")
