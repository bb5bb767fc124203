"""Credentials: password hashes, secrets and their digests, access tokens, API token
scopes, and the identity a signed-in user acts with."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.gateway.models import AuthSession, Membership, Organisation, User
from shared.config import PASSWORD_HASH_COST, Settings
from shared.identity import Identity

ACCESS_ISSUER = "aidlink"
API_TOKEN_PREFIX = "alk_"  # noqa: S105 - a prefix, not a secret
ACCESS_ALGORITHM = "HS256"

# Passwords ---------------------------------------------------------------------------


class _Passwords:
    """argon2id at the configured cost, and a hash of that cost to verify against when
    an e-mail is unknown, so that the answer takes as long either way."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self.hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self.dummy = self.hasher.hash("not a real password")


_passwords = _Passwords(*PASSWORD_HASH_COST)


def configure_passwords(settings: Settings) -> None:
    """Hash passwords at ``settings``' cost from now on (the gateway's app does this)."""
    global _passwords
    wanted = (
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    )
    hasher = _passwords.hasher
    if wanted != (hasher.time_cost, hasher.memory_cost, hasher.parallelism):
        _passwords = _Passwords(*wanted)


def hash_password(password: str) -> str:
    return _passwords.hasher.hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    hashes = _passwords
    try:
        return (
            hashes.hasher.verify(password_hash or hashes.dummy, password)
            and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """Made at another cost than the configured one (higher or lower)."""
    return _passwords.hasher.check_needs_rehash(password_hash)


# Opaque tokens -----------------------------------------------------------------------


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Access tokens -----------------------------------------------------------------------


def issue_access_token(settings: Settings, session: AuthSession, roles: list[str]) -> str:
    now = datetime.now(UTC)
    claims = {
        "iss": ACCESS_ISSUER,
        "typ": "access",
        "sub": str(session.user_id),
        "sid": str(session.id),
        "org": str(session.org_id),
        "roles": roles,
        "iat": now,
        "exp": now + timedelta(seconds=settings.access_token_ttl),
    }
    return jwt.encode(claims, settings.secret_key, algorithm=ACCESS_ALGORITHM)


# Identity of a request ------------------------------------------------------------------


def identity_of(
    user: User,
    org: Organisation,
    *,
    via: str,
    scopes: Any = None,
    credential_id: uuid.UUID | None = None,
) -> Identity:
    roles = frozenset(m.role for m in user.memberships if m.org_id == org.id)
    return Identity(
        user_id=user.id,
        org_id=org.id,
        roles=roles,
        org_kind=org.kind,
        org_status=org.status,
        via=via,
        scopes=frozenset(scopes) if scopes is not None else None,
        credential_id=credential_id,
    )


def memberships_of(user: User) -> list[Membership]:
    return sorted(user.memberships, key=lambda m: (m.created_at, m.role))


# Rules for a new user's credentials, for the API and the command line alike.
PASSWORD = validate.Length(min=10, max=256, error="Use between {min} and {max} characters.")


class UserInSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))

    @validates_schema
    def _password_not_email(self, data: dict[str, Any], **_kw: Any) -> None:
        email = str(data.get("email", "")).lower()
        password = str(data.get("password", "")).lower()
        if email and password in (email, email.split("@")[0]):
            raise ValidationError("Must not be your email address.", "password")
