"""An organisation's members: who may manage them, invitations, roles and removal.

An organisation's admins (role ``org_admin``: its first user, and whoever they make
one) invite people by e-mail with roles. No e-mail is sent: the invitation's one-time
link is answered to the admin, who passes it on (a chat, a phone call). The person opens
it, sets their name and password (or, with an account already, gives its password) and
joins. The roles an organisation's member may hold are its kind's own (a community's
are ``recipient``) and ``org_admin``.

A removed member's sign-ins and API tokens for the organisation are revoked at once,
and ``org.member_removed`` tells the services, so a community ends their appointments.
Names and e-mail addresses of members are personal data: listed to the organisation's
admins and coordinators.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.auth.credentials import check_password, digest, new_secret
from services.gateway.auth.service import add_membership, create_user
from services.gateway.models import (
    ApiToken,
    AuthSession,
    Invitation,
    Membership,
    Organisation,
    User,
)
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken
from shared.events import new_event
from shared.identity import ORG_ADMIN, ROLE_OF_KIND, Identity
from shared.outbox import Outbox

INVITATION_PREFIX = "inv_"
INVITATION_DAYS = 7
# The web UI's page that takes an invitation's token.
JOIN_PATH = "/join/"


def roles_for(org: Organisation) -> tuple[str, ...]:
    """The roles a member of ``org`` may be given."""
    return (ROLE_OF_KIND[org.kind], ORG_ADMIN)


def may_manage(identity: Identity, org_id: uuid.UUID) -> bool:
    """Does ``identity`` manage ``org_id``'s members? Its own admins, signed in, and the
    installation's administrators."""
    if identity.is_admin and identity.via == "session":
        return True
    return identity.org_id == org_id and ORG_ADMIN in identity.roles and identity.via == "session"


def may_list(identity: Identity, org_id: uuid.UUID) -> bool:
    """Does ``identity`` read ``org_id``'s members and invitations? Its admins and
    coordinators."""
    return identity.is_coordinator or (identity.org_id == org_id and ORG_ADMIN in identity.roles)


def require_manager(identity: Identity, org: Organisation) -> None:
    if not may_manage(identity, org.id):
        raise Forbidden(
            "Only the organisation's admins manage its members, signed in.", slug="forbidden"
        )
    if org.status in ("suspended", "merged") or org.erased_at is not None:
        raise Conflict(
            f"Organisation {org.id} is {org.status}; its members are not changed.",
            slug="organisation-inactive",
        )


def require_reader(identity: Identity, org_id: uuid.UUID) -> None:
    if not may_list(identity, org_id):
        raise Forbidden(
            "An organisation's members are listed to its admins and coordinators.",
            slug="forbidden",
        )


def _check_roles(org: Organisation, roles: list[str]) -> list[str]:
    allowed = roles_for(org)
    wrong = [r for r in roles if r not in allowed]
    if wrong or not roles:
        raise RuleBroken(
            "Give one or more of this organisation's roles.",
            errors={"roles": [f"Choose from {', '.join(allowed)}."]},
        )
    return sorted(set(roles))


def member_roles(session: Session, org_id: uuid.UUID, user_id: uuid.UUID) -> list[Membership]:
    return list(
        session.scalars(
            select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
        )
    )


def members(session: Session, org_id: uuid.UUID) -> list[dict[str, Any]]:
    """Each user of ``org_id`` with their roles there, by name."""
    rows = session.execute(
        select(User.id, User.name, User.email, User.active, Membership.role, Membership.created_at)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id)
        .order_by(User.name, User.email, Membership.role)
    ).all()
    found: dict[uuid.UUID, dict[str, Any]] = {}
    for user_id, name, email, active, role, created_at in rows:
        member = found.setdefault(
            user_id,
            {
                "user_id": user_id,
                "name": name,
                "email": email,
                "active": active,
                "roles": [],
                "joined_at": created_at,
            },
        )
        member["roles"].append(role)
        member["joined_at"] = min(member["joined_at"], created_at)
    return list(found.values())


def _admins(session: Session, org_id: uuid.UUID) -> set[uuid.UUID]:
    return set(
        session.scalars(
            select(Membership.user_id).where(
                Membership.org_id == org_id, Membership.role == ORG_ADMIN
            )
        )
    )


def _keep_an_admin(session: Session, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
    if _admins(session, org_id) == {user_id}:
        raise Conflict(
            "This is the organisation's last admin: make someone else an admin first.",
            slug="last-admin",
        )


# Invitations ---------------------------------------------------------------------------


def invite(
    session: Session,
    identity: Identity,
    org: Organisation,
    *,
    email: str,
    roles: list[str],
    name: str | None,
) -> tuple[Invitation, str]:
    """An invitation to ``email`` and its one-time token (kept hashed)."""
    require_manager(identity, org)
    roles = _check_roles(org, roles)
    email = email.strip().lower()
    member = session.scalar(
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id, User.email == email)
        .limit(1)
    )
    if member is not None:
        raise Conflict(
            "This person is a member already; change their roles instead.",
            slug="already-member",
            errors={"email": ["Already a member."]},
        )
    now = utcnow()
    # A new invitation to the same address replaces an open one.
    session.execute(
        update(Invitation)
        .where(
            Invitation.org_id == org.id,
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    token = new_secret(INVITATION_PREFIX)
    invitation = Invitation(
        id=uuid.uuid4(),
        org_id=org.id,
        email=email,
        name=(name or "").strip() or None,
        roles=roles,
        token_hash=digest(token),
        created_by=identity.user_id,
        created_at=now,
        expires_at=now + timedelta(days=INVITATION_DAYS),
    )
    session.add(invitation)
    session.flush()
    audit.record(
        session,
        "member.invite",
        "invitation",
        invitation.id,
        after={"org_id": str(org.id), "email": email, "roles": roles},
    )
    return invitation, token


def open_invitations(session: Session, org_id: uuid.UUID) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation)
            .where(
                Invitation.org_id == org_id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.created_at, Invitation.id)
        )
    )


def revoke_invitation(
    session: Session, identity: Identity, org: Organisation, invitation_id: uuid.UUID
) -> None:
    require_manager(identity, org)
    invitation = session.get(Invitation, invitation_id)
    if invitation is None or invitation.org_id != org.id:
        raise NotFound(f"No invitation {invitation_id}.", slug="invitation-not-found")
    if invitation.accepted_at is not None:
        raise Conflict("This invitation was accepted already.", slug="invitation-used")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        audit.record(
            session,
            "member.invitation_revoke",
            "invitation",
            invitation.id,
            after={"org_id": str(org.id)},
        )


def _invalid_invitation() -> RuleBroken:
    return RuleBroken(
        "This invitation is not valid: it was used, withdrawn or has expired. Ask for a new one.",
        slug="invitation-invalid",
        errors={"token": ["Not a valid invitation."]},
    )


def invitation_by_token(session: Session, token: str) -> tuple[Invitation, Organisation]:
    invitation = session.scalar(select(Invitation).where(Invitation.token_hash == digest(token)))
    if (
        invitation is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or invitation.expires_at <= utcnow()
    ):
        raise _invalid_invitation()
    org = session.get(Organisation, invitation.org_id)
    if org is None or org.status in ("suspended", "merged") or org.erased_at is not None:
        raise _invalid_invitation()
    return invitation, org


def accept(
    session: Session, *, token: str, password: str, name: str | None
) -> tuple[User, Organisation]:
    """The person behind an invitation joins: a new account with ``name`` and
    ``password``, or, for an e-mail address that has an account, that account once its
    ``password`` is given."""
    invitation, org = invitation_by_token(session, token)
    user = session.scalar(select(User).where(User.email == invitation.email))
    if user is None:
        chosen = (name or invitation.name or "").strip()
        if not chosen:
            raise RuleBroken("Give your name.", errors={"name": ["Give your name."]})
        user = create_user(session, email=invitation.email, password=password, name=chosen)
    elif not user.active or not check_password(user.password_hash, password):
        raise RuleBroken(
            "This e-mail address has an account: give its password to join.",
            slug="wrong-credentials",
            errors={"password": ["Not this account's password."]},
        )
    held = {m.role for m in user.memberships if m.org_id == org.id}
    for role in invitation.roles:
        if role not in held:
            add_membership(session, user, org, role)
    invitation.accepted_at = utcnow()
    invitation.accepted_by = user.id
    session.flush()
    audit.record(
        session,
        "member.join",
        "user",
        user.id,
        after={
            "org_id": str(org.id),
            "invitation_id": str(invitation.id),
            "roles": invitation.roles,
        },
        actor_user_id=user.id,
        actor_org_id=org.id,
    )
    return user, org


# Roles and removal ---------------------------------------------------------------------


def _revoke_access(session: Session, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """The member's sign-ins and API tokens for ``org_id`` end at once."""
    now = utcnow()
    session.execute(
        update(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.org_id == org_id,
            AuthSession.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    _revoke_tokens(session, org_id, user_id)


def _revoke_tokens(session: Session, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.user_id == user_id,
            ApiToken.org_id == org_id,
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )


def set_roles(
    session: Session, identity: Identity, org: Organisation, user_id: uuid.UUID, roles: list[str]
) -> list[str]:
    """The member's roles in ``org`` become ``roles``. Taking a role away ends their
    API tokens for the organisation (a token keeps acting with what it was made for)."""
    require_manager(identity, org)
    roles = _check_roles(org, roles)
    current = member_roles(session, org.id, user_id)
    if not current:
        raise NotFound(f"No member {user_id} in this organisation.", slug="member-not-found")
    before = sorted(m.role for m in current)
    if ORG_ADMIN in before and ORG_ADMIN not in roles:
        _keep_an_admin(session, org.id, user_id)
    user = session.get(User, user_id)
    assert user is not None
    for membership in current:
        if membership.role not in roles:
            user.memberships.remove(membership)
            session.delete(membership)
    for role in roles:
        if role not in before:
            add_membership(session, user, org, role)
    session.flush()
    if set(before) - set(roles):
        _revoke_tokens(session, org.id, user_id)
    audit.record(
        session,
        "member.roles",
        "user",
        user_id,
        before={"org_id": str(org.id), "roles": before},
        after={"org_id": str(org.id), "roles": roles},
    )
    return roles


def remove(
    session: Session, outbox: Outbox, identity: Identity, org: Organisation, user_id: uuid.UUID
) -> None:
    """The member leaves ``org``: their roles go, their sign-ins and tokens for it are
    revoked, and ``org.member_removed`` tells the services (a community ends their
    appointments). The account stays for their other organisations; with none left it
    can no longer sign in."""
    require_manager(identity, org)
    current = member_roles(session, org.id, user_id)
    if not current:
        raise NotFound(f"No member {user_id} in this organisation.", slug="member-not-found")
    before = sorted(m.role for m in current)
    if ORG_ADMIN in before:
        _keep_an_admin(session, org.id, user_id)
    user = session.get(User, user_id)
    assert user is not None
    for membership in current:
        user.memberships.remove(membership)
        session.delete(membership)
    _revoke_access(session, org.id, user_id)
    session.flush()
    now = utcnow()
    outbox.add(
        session,
        new_event(
            "org.member_removed",
            {"org_id": org.id, "user_id": user_id, "removed_at": now},
            producer="gateway",
            # Each removal is its own aggregate: a member invited back and removed
            # again is a new one.
            aggregate_id=uuid.uuid4(),
            aggregate_version=1,
        ),
    )
    audit.record(
        session,
        "member.remove",
        "user",
        user_id,
        before={"org_id": str(org.id), "roles": before},
        after={"org_id": str(org.id), "roles": []},
    )
