"""Operator actions on identity: the first admin of a new install, and demo accounts."""

from __future__ import annotations

import uuid
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select

from services.gateway.audit import service as audit
from services.gateway.models import Organisation, User
from services.gateway.orgs.service import ORG_AUDIT_FIELDS, register_organisation
from shared.db import utcnow
from shared.runtime import ServiceRuntime

ADMIN_ORG = {
    "name": "aidlink administration",
    "kind": "coordinator_office",
    # 00: the whole country.
    "region": "00",
    "address": None,
}


def _admin_org(session: Any, rt: ServiceRuntime) -> Organisation:
    org = session.scalar(
        select(Organisation).where(
            Organisation.kind == ADMIN_ORG["kind"], Organisation.name == ADMIN_ORG["name"]
        )
    )
    if org is None:
        org = register_organisation(
            session=session, outbox=rt.outbox, data=ADMIN_ORG, status="verified"
        )
        org.verified_at = utcnow()
        org.verification_evidence = "created by `aidlink admin create`"
        audit.record(
            session,
            "org.register",
            "organisation",
            org.id,
            after=audit.snapshot(org, *ORG_AUDIT_FIELDS),
        )
    return org


def create_admin(rt: ServiceRuntime, *, email: str, password: str, name: str) -> tuple[User, bool]:
    """An admin (and coordinator) of the whole installation. Idempotent: if the email
    is already registered nothing changes and ``(user, False)`` is returned."""
    from services.gateway.auth.credentials import UserInSchema
    from services.gateway.auth.service import add_membership, create_user

    errors = UserInSchema().validate({"email": email, "password": password, "name": name})
    if errors:
        raise ValidationError(errors)
    with rt.unit_of_work() as session:
        existing = session.scalar(select(User).where(User.email == email.strip().lower()))
        if existing is not None:
            return existing, False
        org = _admin_org(session, rt)
        user = create_user(session, email=email, password=password, name=name)
        for role in ("admin", "coordinator"):
            add_membership(session, user, org, role)
        session.flush()
        audit.record(
            session,
            "user.create_admin",
            "user",
            user.id,
            after={"email": user.email, "org_id": str(org.id), "roles": ["admin", "coordinator"]},
        )
        return user, True


DEMO_PASSWORD = "demo-password-2020"  # noqa: S105 - the demo accounts are public

# Organisations, their first user, and whether a coordinator has verified them yet.
DEMO_ACCOUNTS: list[dict[str, Any]] = [
    {
        "organisation": {
            "name": "Hubei Charity Federation",
            "name_zh": "湖北省慈善总会",
            "kind": "coordinator_office",
            "region": "4201",
            "address": "Wuhan, Hubei",
        },
        "email": "coordinator@demo.aidlink.local",
        "verified": True,
    },
    {
        "organisation": {
            "name": "Shenzhen One Foundation",
            "name_zh": "深圳壹基金公益基金会",
            "kind": "foundation",
            "region": "4403",
            "address": "Futian District, Shenzhen",
        },
        "email": "donor@demo.aidlink.local",
        "verified": True,
    },
    {
        "organisation": {
            "name": "Wuhan Union Hospital",
            "name_zh": "华中科技大学同济医学院附属协和医院",
            "kind": "hospital",
            "region": "420103",
            "address": "1277 Jiefang Avenue, Jianghan District, Wuhan",
        },
        "email": "hospital@demo.aidlink.local",
        "verified": True,
    },
    {
        "organisation": {
            "name": "Jinyintan Hospital",
            "name_zh": "武汉市金银潭医院",
            "kind": "hospital",
            "region": "420107",
            "address": "1 Yintan Road, Dongxihu District, Wuhan",
        },
        "email": "jinyintan@demo.aidlink.local",
        "verified": False,
    },
    {
        "organisation": {
            "name": "Baibuting Community Committee",
            "name_zh": "百步亭社区居民委员会",
            "kind": "community_committee",
            "region": "420102",
            "address": "Jiang'an District, Wuhan",
        },
        "email": "community@demo.aidlink.local",
        "verified": True,
    },
    {
        "organisation": {
            "name": "Jiuzhou Logistics",
            "name_zh": "九州通物流",
            "kind": "logistics_company",
            "region": "4201",
            "address": "Wuhan, Hubei",
        },
        "email": "logistics@demo.aidlink.local",
        "verified": True,
    },
]


def load_demo(rt: ServiceRuntime) -> int:
    """Register the demo organisations and their users; skips those already there.
    Returns how many were created."""
    from services.gateway.auth.service import register

    created = 0
    for account in DEMO_ACCOUNTS:
        with rt.unit_of_work() as session:
            if session.scalar(select(User.id).where(User.email == account["email"])) is not None:
                continue
            org, _user = register(
                session,
                rt.outbox,
                dict(account["organisation"]),
                {
                    "email": account["email"],
                    "password": DEMO_PASSWORD,
                    "name": account["organisation"]["name"] + " (demo)",
                },
            )
            created += 1
        if account["verified"]:
            from services.gateway.verification.service import verify_organisation

            with rt.unit_of_work() as session:
                verify_organisation(
                    session,
                    rt.outbox,
                    session.get(Organisation, org.id),
                    evidence="demo data",
                    verified_by=uuid.UUID(int=0),
                )
    return created


def demo_orgs(rt: ServiceRuntime) -> dict[str, tuple[uuid.UUID, bool]]:
    """Each demo user's email with its organisation's id and whether it is verified."""
    from services.gateway.models import Membership

    emails = [account["email"] for account in DEMO_ACCOUNTS]
    with rt.session_factory() as session:
        rows = session.execute(
            select(User.email, Organisation.id, Organisation.status)
            .join(Membership, Membership.user_id == User.id)
            .join(Organisation, Organisation.id == Membership.org_id)
            .where(User.email.in_(emails))
        ).all()
    return {email: (org_id, status == "verified") for email, org_id, status in rows}
