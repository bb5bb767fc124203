"""Who is calling, and what they may do: one definition for every service.

The gateway authenticates a request (an access token from sign-in, or an API token)
and forwards the caller to the service that owns the resource as a short-lived
*internal token*: a JWT signed with the installation's internal key, addressed to that
service alone. Each service verifies it before anything else and rejects a call
without it, so a service reached directly, past the gateway, is not an open door.
Each service then enforces roles and organisation scope on its own data with
:func:`current_identity`, :func:`require_roles` and :meth:`Identity.can_act_for`.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import jwt
from flask import Flask, g, request

from shared.errors import Forbidden
from shared.problems import Problem
from shared.scopes import check_scope

ROLES = ("donor", "recipient", "logistics", "coordinator", "admin", "org_admin")
# ``org_admin`` manages its own organisation's members (invites, changes roles,
# removes); the first user of an organisation holds it. ``admin`` is the whole
# installation's administrator.
ORG_ADMIN = "org_admin"

DONOR_KINDS = ("foundation", "company", "fund", "individual")
RECIPIENT_KINDS = (
    "hospital",
    "field_hospital",
    "community_committee",
    "civil_affairs_bureau",
    "care_home",
)

# The role an organisation's members take from its kind.
ROLE_OF_KIND: dict[str, str] = {
    **{kind: "donor" for kind in DONOR_KINDS},
    **{kind: "recipient" for kind in RECIPIENT_KINDS},
    "logistics_company": "logistics",
    "coordinator_office": "coordinator",
}

INTERNAL_HEADER = "X-Aidlink-Identity"
INTERNAL_ISSUER = "aidlink-gateway"
_ALGORITHM = "HS256"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Identity:
    """The caller of one request.

    ``roles`` are the caller's roles in ``org_id``, the organisation it acts for.
    ``via`` says how it authenticated: ``session`` (signed in), ``token`` (an API
    token, limited to ``scopes``), ``system`` (aidlink itself) or ``anonymous``.
    """

    user_id: uuid.UUID | None = None
    org_id: uuid.UUID | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    org_kind: str | None = None
    org_status: str | None = None
    via: str = "anonymous"
    scopes: frozenset[str] | None = None
    credential_id: uuid.UUID | None = None

    @property
    def authenticated(self) -> bool:
        return self.via != "anonymous"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_coordinator(self) -> bool:
        """Coordinators verify organisations and approve plans. A coordinator office's
        members act as coordinators only once an admin has verified the office."""
        return (
            self.is_admin
            or self.via == "system"
            or ("coordinator" in self.roles and self.org_status == "verified")
        )

    @property
    def org_active(self) -> bool:
        """False when the caller's organisation is suspended or merged away."""
        return self.org_status in ("pending", "verified")

    def has_role(self, *roles: str) -> bool:
        if "coordinator" in roles and self.is_coordinator:
            return True
        return bool(self.roles.intersection(roles) - {"coordinator"})

    def can_act_for(self, org_id: uuid.UUID | str | None) -> bool:
        """May the caller act on data belonging to ``org_id``?"""
        if self.is_coordinator:
            return True
        if org_id is None or self.org_id is None:
            return False
        return str(self.org_id) == str(org_id)

    # Wire form --------------------------------------------------------------------

    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "roles": sorted(self.roles),
            "kind": self.org_kind,
            "org_status": self.org_status,
            "via": self.via,
            "scopes": sorted(self.scopes) if self.scopes is not None else None,
        }
        # JWT wants a string subject or none at all (anonymous callers have none).
        if self.user_id:
            claims["sub"] = str(self.user_id)
        if self.org_id:
            claims["org"] = str(self.org_id)
        return claims

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Identity:
        scopes = claims.get("scopes")
        return cls(
            user_id=uuid.UUID(claims["sub"]) if claims.get("sub") else None,
            org_id=uuid.UUID(claims["org"]) if claims.get("org") else None,
            roles=frozenset(r for r in claims.get("roles") or () if r in ROLES),
            org_kind=claims.get("kind"),
            org_status=claims.get("org_status"),
            via=str(claims.get("via") or "anonymous"),
            scopes=frozenset(scopes) if scopes is not None else None,
        )


ANONYMOUS = Identity()
SYSTEM = Identity(via="system")


class InvalidToken(Exception):
    """A token that is malformed, tampered with, expired or addressed elsewhere."""


def sign_internal(identity: Identity, key: str, audience: str, ttl: int = 60) -> str:
    """The internal token that carries ``identity`` to the service ``audience``."""
    now = datetime.now(UTC)
    claims = identity.claims()
    claims.update(
        iss=INTERNAL_ISSUER,
        aud=audience,
        iat=now,
        exp=now + timedelta(seconds=ttl),
        jti=uuid.uuid4().hex,
    )
    return jwt.encode(claims, _checked_key(key), algorithm=_ALGORITHM)


# Tokens kept, on each side, for at most this many callers and services at once.
_TOKENS_KEPT = 4096
_minted: dict[tuple[Identity, str, str, int], tuple[str, float]] = {}
_minted_lock = threading.Lock()


def internal_token(identity: Identity, key: str, audience: str, ttl: int = 60) -> str:
    """:func:`sign_internal`'s token for this caller and service, signed again once
    half its life has passed: a caller's requests within that time carry one token,
    which the service then verifies once (:func:`verify_internal`). Its age is read on
    the wall clock that its expiry is checked against, so a clock set forward does not
    leave an expired token in use."""
    cache_key = (identity, key, audience, ttl)
    now = time.time()
    kept = _minted.get(cache_key)
    if kept is not None and now < kept[1]:
        return kept[0]
    token = sign_internal(identity, key, audience, ttl)
    with _minted_lock:
        if len(_minted) >= _TOKENS_KEPT:
            _minted.clear()
        _minted[cache_key] = (token, now + ttl / 2)
    return token


_LEEWAY = 5  # seconds of clock difference between the gateway and a service


@functools.lru_cache(maxsize=_TOKENS_KEPT)
def _signed_identity(token: str, key: str, audience: str) -> tuple[Identity, float]:
    """The identity in ``token`` and when the token expires, once its signature,
    issuer and audience are checked. A token's bytes decide all of these, so they are
    checked once per token; its expiry, which depends on the time, is checked on each
    use by :func:`verify_internal`."""
    claims = jwt.decode(
        token,
        key,
        algorithms=[_ALGORITHM],
        audience=audience,
        issuer=INTERNAL_ISSUER,
        options={"require": ["exp", "iat", "aud", "iss"], "verify_exp": False},
        leeway=_LEEWAY,
    )
    return Identity.from_claims(claims), float(claims["exp"])


def verify_internal(token: str, key: str, audience: str) -> Identity:
    try:
        identity, expires = _signed_identity(token, _checked_key(key), audience)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidToken(f"malformed identity: {exc}") from None
    if time.time() > expires + _LEEWAY:
        raise InvalidToken("Signature has expired")
    return identity


def _checked_key(key: str) -> str:
    if len(key) < 32:
        raise RuntimeError("the signing key must be at least 32 characters")
    return key


# In a request -------------------------------------------------------------------------


def current_identity() -> Identity:
    """The caller of the current request (anonymous when nobody signed in)."""
    identity: Identity = g.get("identity", ANONYMOUS)
    return identity


def set_identity(identity: Identity) -> None:
    g.identity = identity


def unauthenticated(
    detail: str = "Sign in first: send 'Authorization: Bearer <token>'.",
) -> Problem:
    return Problem(401, detail, slug="unauthenticated", headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> Forbidden:
    """The refusal of a caller who may not do this (answered as a 403 problem)."""
    return Forbidden(detail, slug="forbidden")


def require_roles(*roles: str) -> Callable[[F], F]:
    """The caller must be signed in and hold one of ``roles``; with no roles, any
    signed-in caller will do. ``coordinator`` includes admins."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            identity = current_identity()
            if not identity.authenticated:
                raise unauthenticated()
            if roles and not identity.has_role(*roles):
                raise forbidden(f"This needs the role {_either(roles)}.")
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def require_login(view: F) -> F:
    return require_roles()(view)


def require_org_scope(org_id: uuid.UUID | str | None, what: str = "this") -> None:
    """Raise 403 unless the caller may act for ``org_id``."""
    identity = current_identity()
    if not identity.authenticated:
        raise unauthenticated()
    if not identity.can_act_for(org_id):
        raise forbidden(f"{what[:1].upper()}{what[1:]} belongs to another organisation.")


def _either(roles: Iterable[str]) -> str:
    names = [f"'{r}'" for r in roles]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# In a service behind the gateway ------------------------------------------------------

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/api/v1/openapi.json"})


def install_internal_auth(app: Flask, service: str, internal_key: str) -> None:
    """Every API call to ``service`` must carry the gateway's internal token."""
    _checked_key(internal_key)

    @app.before_request
    def _verify_internal_token() -> None:
        if request.path in PUBLIC_PATHS or not request.path.startswith("/api/"):
            return
        token = request.headers.get(INTERNAL_HEADER)
        if not token:
            raise Problem(
                401,
                f"The {service} service answers only calls through the gateway.",
                slug="internal-token-missing",
            )
        try:
            identity = verify_internal(token, internal_key, service)
        except InvalidToken as exc:
            raise Problem(
                401,
                f"The internal token was refused: {exc}.",
                slug="internal-token-invalid",
            ) from None
        set_identity(identity)
        # The scopes of an API token are checked here too, not only at the gateway.
        check_scope(identity.via, identity.scopes, request.path, request.method)
