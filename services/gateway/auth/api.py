"""Registration, sign-in, refresh and sign-out.

``POST /api/v1/auth/register`` creates an organisation and its first user, who takes
the role of the organisation's kind (a hospital's user is a recipient, a foundation's a
donor, ...). The organisation stays ``pending`` until a coordinator verifies it.

``POST /api/v1/auth/login`` answers with a short-lived access token and a refresh
token. Failed sign-ins are counted per account; after ``lockout_threshold`` in a row
the account is locked for ``lockout_seconds``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from flask import Response, request
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.auth.credentials import (
    UserInSchema,
    check_password,
    digest,
    hash_password,
    issue_access_token,
    memberships_of,
    new_secret,
    password_needs_rehash,
)
from services.gateway.auth.service import register
from services.gateway.models import AuthSession, Organisation, User
from services.gateway.orgs.api import OrganisationDetailSchema, OrganisationInSchema
from services.gateway.ratelimit import login_limit
from shared.db import utcnow
from shared.identity import current_identity, require_login, unauthenticated
from shared.problems import Problem
from shared.web import db_session, runtime

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Sign-in and registration")


class UserSchema(Schema):
    id = fields.UUID()
    email = fields.String()
    name = fields.String()
    created_at = fields.AwareDateTime()


class RegisterSchema(Schema):
    organisation = fields.Nested(OrganisationInSchema, required=True)
    user = fields.Nested(UserInSchema, required=True)


class RegisteredSchema(Schema):
    organisation = fields.Nested(OrganisationDetailSchema)
    user = fields.Nested(UserSchema)


class LoginSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=256))
    organisation_id = fields.UUID(
        load_default=None,
        metadata={"description": "For a user of several organisations: the one to act for"},
    )


class TokenPairSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds"})


class RefreshSchema(Schema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=200))


class MembershipSchema(Schema):
    org_id = fields.UUID()
    role = fields.String()


class MeSchema(Schema):
    user = fields.Nested(UserSchema)
    organisation = fields.Nested(OrganisationDetailSchema)
    roles = fields.List(fields.String())
    memberships = fields.List(fields.Nested(MembershipSchema))
    via = fields.String()
    scopes = fields.List(fields.String(), allow_none=True)


def _too_many_failures(user: User) -> Problem:
    seconds = (
        max(1, int((user.locked_until - utcnow()).total_seconds())) if user.locked_until else 1
    )
    return Problem(
        429,
        f"Too many failed sign-ins; this account is locked for {seconds} more seconds.",
        slug="account-locked",
        headers={"Retry-After": str(seconds)},
    )


def _wrong_credentials() -> Problem:
    return Problem(401, "The email or the password is wrong.", slug="wrong-credentials")


def _record_failure(user: User) -> None:
    """Count a failed sign-in with one conditional update, so concurrent attempts all count."""
    settings = runtime().settings
    rt = runtime()
    now = utcnow()
    with rt.session_factory() as s, s.begin():
        failures = s.scalar(
            update(User)
            .where(User.id == user.id)
            .values(failed_logins=User.failed_logins + 1)
            .returning(User.failed_logins)
        )
        if failures is not None and failures >= settings.lockout_threshold:
            s.execute(
                update(User)
                .where(User.id == user.id)
                .values(
                    failed_logins=0,
                    locked_until=now + timedelta(seconds=settings.lockout_seconds),
                )
            )
            audit.record(
                s,
                "user.lock",
                "user",
                user.id,
                actor_user_id=user.id,
                after={"locked_for_seconds": settings.lockout_seconds},
            )


def start_session(session: Session, user: User, org_id: uuid.UUID) -> dict[str, Any]:
    settings = runtime().settings
    refresh = new_secret()
    auth = AuthSession(
        id=uuid.uuid4(),
        user_id=user.id,
        org_id=org_id,
        refresh_hash=digest(refresh),
        expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl),
        ip=request.remote_addr,
    )
    session.add(auth)
    roles = sorted(m.role for m in user.memberships if m.org_id == org_id)
    return {
        "access_token": issue_access_token(settings, auth, roles),
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl,
    }


@blp.route("/register", methods=["POST"])
@blp.arguments(RegisterSchema)
@blp.response(201, RegisteredSchema)
def register_view(data: dict[str, Any]) -> Any:
    """Register an organisation and its first user. The organisation is pending until a
    coordinator verifies it; until then its needs are not matched and its pledges not
    reserved."""
    rt = runtime()
    with rt.unit_of_work() as session:
        org, user = register(session, rt.outbox, data["organisation"], data["user"])
        return {"organisation": org, "user": user}


@blp.route("/login", methods=["POST"])
@blp.arguments(LoginSchema)
@blp.response(200, TokenPairSchema)
def login(data: dict[str, Any]) -> Any:
    """Sign in with email and password."""
    with login_limit():
        return _login(data)


def _login(data: dict[str, Any]) -> Any:
    rt = runtime()
    email = data["email"].strip().lower()
    reader = db_session()
    user = reader.scalar(select(User).where(User.email == email))
    now = utcnow()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        raise _too_many_failures(user)
    if not check_password(user.password_hash if user else None, data["password"]):
        if user is not None:
            _record_failure(user)
        raise _wrong_credentials()
    assert user is not None
    if not user.active:
        raise _wrong_credentials()
    memberships = memberships_of(user)
    if not memberships:
        raise Problem(403, "This account belongs to no organisation.", slug="no-organisation")
    org_id = data.get("organisation_id") or memberships[0].org_id
    if org_id not in {m.org_id for m in memberships}:
        raise Problem(
            422,
            "You are not a member of that organisation.",
            errors={"organisation_id": ["Not one of your organisations."]},
        )
    # A hash of another cost is made again at the configured one, before the write
    # begins (on SQLite the transaction holds the database's write lock).
    rehashed = (
        hash_password(data["password"])
        if user.password_hash and password_needs_rehash(user.password_hash)
        else None
    )
    with rt.unit_of_work() as session:
        user = session.get(User, user.id)
        assert user is not None
        user.failed_logins = 0
        user.locked_until = None
        user.last_login_at = now
        if rehashed is not None:
            user.password_hash = rehashed
        return start_session(session, user, org_id)


@blp.route("/refresh", methods=["POST"])
@blp.arguments(RefreshSchema)
@blp.response(200, TokenPairSchema)
def refresh(data: dict[str, Any]) -> Any:
    """Trade a refresh token for a new access token and a new refresh token. Each refresh
    token works once; replaying a used one ends the sign-in."""
    with login_limit():
        return _refresh(data)


def _refresh(data: dict[str, Any]) -> Any:
    rt = runtime()
    presented = digest(data["refresh_token"])
    now = utcnow()
    replayed = False
    with rt.unit_of_work() as session:
        auth = session.scalar(select(AuthSession).where(AuthSession.refresh_hash == presented))
        if auth is None:
            stolen = session.scalar(
                select(AuthSession).where(AuthSession.previous_refresh_hash == presented)
            )
            if stolen is not None and stolen.revoked_at is None:
                # Only a copy of a rotated token is ever replayed: end the sign-in.
                stolen.revoked_at = now
                audit.record(
                    session,
                    "session.revoke",
                    "session",
                    stolen.id,
                    actor_user_id=stolen.user_id,
                    actor_org_id=stolen.org_id,
                    after={"reason": "refresh token replayed"},
                )
            replayed = True
    if replayed:
        raise unauthenticated("The refresh token is not valid; sign in again.")
    with rt.unit_of_work() as session:
        auth = session.scalar(select(AuthSession).where(AuthSession.refresh_hash == presented))
        if auth is None:
            raise unauthenticated("The refresh token is not valid; sign in again.")
        if auth.revoked_at is not None or auth.expires_at <= now:
            raise unauthenticated("This sign-in has ended; sign in again.")
        user = session.get(User, auth.user_id)
        if user is None or not user.active:
            raise unauthenticated("This account is disabled.")
        new_refresh = new_secret()
        # Rotate with a conditional update: of two concurrent refreshes, one wins.
        rotated = session.scalar(
            update(AuthSession)
            .where(AuthSession.id == auth.id, AuthSession.refresh_hash == presented)
            .values(
                previous_refresh_hash=presented,
                refresh_hash=digest(new_refresh),
                refreshed_at=now,
            )
            .returning(AuthSession.id)
        )
        if rotated is None:
            raise unauthenticated("The refresh token is not valid; sign in again.")
        roles = sorted(m.role for m in user.memberships if m.org_id == auth.org_id)
        settings = rt.settings
        return {
            "access_token": issue_access_token(settings, auth, roles),
            "refresh_token": new_refresh,
            "token_type": "Bearer",
            "expires_in": settings.access_token_ttl,
        }


@blp.route("/logout", methods=["POST"])
@blp.response(204)
@require_login
def logout() -> Any:
    """End this sign-in: its refresh token and every access token issued under it stop
    working at once."""
    identity = current_identity()
    if identity.via != "session" or identity.credential_id is None:
        raise Problem(400, "Only a signed-in session can sign out; revoke API tokens instead.")
    rt = runtime()
    with rt.unit_of_work() as session:
        session.execute(
            update(AuthSession)
            .where(AuthSession.id == identity.credential_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        audit.record(
            session,
            "session.revoke",
            "session",
            identity.credential_id,
            after={"reason": "signed out"},
        )
    return Response(status=204)


@blp.route("/me", methods=["GET"])
@blp.response(200, MeSchema)
@require_login
def me() -> Any:
    """Who the caller is, the organisation it acts for and its roles there."""
    identity = current_identity()
    session = db_session()
    user = session.get(User, identity.user_id)
    org = session.get(Organisation, identity.org_id)
    return {
        "user": user,
        "organisation": org,
        "roles": sorted(identity.roles),
        "memberships": memberships_of(user) if user else [],
        "via": identity.via,
        "scopes": sorted(identity.scopes) if identity.scopes is not None else None,
    }
