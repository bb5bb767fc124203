"""Accounts: users, their memberships, and the registration of an organisation with
its first user."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.auth.credentials import hash_password
from services.gateway.models import Membership, Organisation, User
from services.gateway.orgs.service import ORG_AUDIT_FIELDS, register_organisation
from shared.errors import Conflict
from shared.identity import ORG_ADMIN, ROLE_OF_KIND
from shared.outbox import Outbox


def create_user(session: Session, *, email: str, password: str, name: str) -> User:
    email = email.strip().lower()
    taken = session.scalar(select(User.id).where(User.email == email))
    if taken is not None:
        raise Conflict(
            "An account with this email already exists; sign in instead.",
            slug="email-taken",
            errors={"user.email": ["Already registered."]},
        )
    user = User(
        id=uuid.uuid4(), email=email, name=name.strip(), password_hash=hash_password(password)
    )
    session.add(user)
    session.flush()
    return user


def add_membership(session: Session, user: User, org: Organisation, role: str) -> Membership:
    membership = Membership(id=uuid.uuid4(), user_id=user.id, org_id=org.id, role=role)
    session.add(membership)
    user.memberships.append(membership)
    return membership


def register(
    session: Session, outbox: Outbox, organisation: dict[str, Any], user: dict[str, Any]
) -> tuple[Organisation, User]:
    """An organisation and its first user, in the caller's transaction. The first user
    also manages the organisation's members (:data:`ORG_ADMIN`)."""
    new_user = create_user(session, **user)
    org = register_organisation(session=session, outbox=outbox, data=organisation)
    add_membership(session, new_user, org, ROLE_OF_KIND[org.kind])
    add_membership(session, new_user, org, ORG_ADMIN)
    session.flush()
    audit.record(
        session,
        "org.register",
        "organisation",
        org.id,
        after={**audit.snapshot(org, *ORG_AUDIT_FIELDS), "first_user": str(new_user.id)},
        actor_user_id=new_user.id,
        actor_org_id=org.id,
    )
    return org, new_user
