"""Authentication at the gateway: passwords, access and refresh tokens, API tokens,
and the hook that turns a request's ``Authorization`` header into an :class:`Identity`.

- Passwords are hashed with argon2id (argon2-cffi), a memory-hard function.
- An access token is a short-lived JWT (HS256, the installation's secret key) naming
  the user, the sign-in session and the organisation acted for. The session is checked
  on every request, so signing out revokes its access tokens at once.
- A refresh token and an API token are random strings; only their SHA-256 is stored
  (they carry 256 bits of entropy, so a fast hash is the right one).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import jwt
from flask import Flask, request
from sqlalchemy import and_, bindparam, select, update

from services.gateway.auth.credentials import (
    ACCESS_ALGORITHM,
    ACCESS_ISSUER,
    API_TOKEN_PREFIX,
    digest,
    identity_of,
)
from services.gateway.models import ApiToken, AuthSession, Membership, Organisation, User
from shared.config import Settings
from shared.db import utcnow
from shared.identity import ANONYMOUS, Identity, forbidden, set_identity, unauthenticated
from shared.scopes import check_scope
from shared.web import db_session, runtime


def decode_access_token(settings: Settings, token: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.secret_key,
            algorithms=[ACCESS_ALGORITHM],
            issuer=ACCESS_ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "org"]},
        )
    except jwt.ExpiredSignatureError:
        raise unauthenticated(
            "The access token has expired; refresh it or sign in again."
        ) from None
    except jwt.PyJWTError:
        raise unauthenticated("The access token is not valid.") from None
    if claims.get("typ") != "access":
        raise unauthenticated("The access token is not valid.")
    return claims


# The sign-in, its user, its organisation and the user's roles there, in one round
# trip and as plain columns (no ORM object of them, nor the user's memberships loaded
# by a second query): this runs on every request. One row a role, or one with none.
_SESSION_IDENTITY = (
    select(
        AuthSession.revoked_at,
        AuthSession.expires_at,
        User.id,
        User.active,
        Organisation.id,
        Organisation.kind,
        Organisation.status,
        Membership.role,
    )
    .join(User, User.id == AuthSession.user_id)
    .join(Organisation, Organisation.id == AuthSession.org_id)
    .outerjoin(
        Membership,
        and_(Membership.user_id == AuthSession.user_id, Membership.org_id == AuthSession.org_id),
    )
    .where(AuthSession.id == bindparam("sid"))
)


def _session_identity(token: str) -> Identity:
    settings = runtime().settings
    claims = decode_access_token(settings, token)
    db = db_session()
    try:
        sid = uuid.UUID(claims["sid"])
    except ValueError:
        raise unauthenticated("The access token is not valid.") from None
    found = db.execute(_SESSION_IDENTITY, {"sid": sid}).all()
    now = utcnow()
    if not found or found[0][0] is not None or found[0][1] <= now:
        raise unauthenticated("This sign-in has ended; sign in again.")
    _, _, user_id, active, org_id, org_kind, org_status, _ = found[0]
    if not active:
        raise unauthenticated("This account is disabled.")
    return Identity(
        user_id=user_id,
        org_id=org_id,
        roles=frozenset(row[7] for row in found if row[7] is not None),
        org_kind=org_kind,
        org_status=org_status,
        via="session",
        credential_id=sid,
    )


def _api_token_identity(token: str) -> Identity:
    db = db_session()
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token)))
    now = utcnow()
    if row is None or row.revoked_at is not None:
        raise unauthenticated("The API token is not valid or has been revoked.")
    if row.expires_at is not None and row.expires_at <= now:
        raise unauthenticated("The API token has expired.")
    user = db.get(User, row.user_id)
    org = db.get(Organisation, row.org_id)
    if user is None or org is None or not user.active:
        raise unauthenticated("This account is disabled.")
    # At most one write a minute per token for its last-use time.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        with runtime().session_factory() as s, s.begin():
            s.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return identity_of(user, org, via="token", scopes=row.scopes, credential_id=row.id)


def authenticate() -> Identity:
    """The caller of the current request, from its ``Authorization`` header."""
    header = request.headers.get("Authorization")
    if not header:
        return ANONYMOUS
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated("Use 'Authorization: Bearer <token>'.")
    if token.startswith(API_TOKEN_PREFIX):
        return _api_token_identity(token)
    return _session_identity(token)


def check_org_active(identity: Identity, method: str, path: str) -> None:
    """Members of a suspended or merged organisation may read, and sign out, but not write."""
    if not identity.authenticated or identity.via == "system" or identity.is_admin:
        return
    if method in ("GET", "HEAD", "OPTIONS") or path.startswith("/api/v1/auth/"):
        return
    if not identity.org_active:
        raise forbidden(
            f"Your organisation is {identity.org_status}; it cannot make changes. "
            "Contact your coordinator."
        )


def install_authentication(app: Flask) -> None:
    @app.before_request
    def _authenticate() -> None:
        if not request.path.startswith("/api/"):
            return
        identity = authenticate()
        set_identity(identity)
        check_scope(identity.via, identity.scopes, request.path, request.method)
        check_org_active(identity, request.method, request.path)
