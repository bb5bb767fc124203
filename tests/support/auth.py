"""Accounts for tests: register organisations, sign in, verify, as each role."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import Flask

PASSWORD = "test-password-2020"

# A kind of organisation for each role that registers itself.
KIND_OF_ROLE = {
    "donor": "foundation",
    "recipient": "hospital",
    "logistics": "logistics_company",
    "coordinator": "coordinator_office",
}


@dataclass
class Account:
    """A signed-in user and the organisation it acts for."""

    email: str
    user_id: str
    org_id: str
    org: dict[str, Any]
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def login(client: Any, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def register(
    client: Any,
    *,
    kind: str = "hospital",
    name: str | None = None,
    region: str = "420103",
    email: str | None = None,
    **org_fields: Any,
) -> Account:
    """Register an organisation with its first user and sign that user in."""
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.org"
    response = client.post(
        "/api/v1/auth/register",
        json={
            "organisation": {
                "name": name or f"{kind} {uuid.uuid4().hex[:8]}",
                "kind": kind,
                "region": region,
                **org_fields,
            },
            "user": {"email": email, "password": PASSWORD, "name": "Test User"},
        },
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    tokens = login(client, email)
    return Account(
        email=email,
        user_id=body["user"]["id"],
        org_id=body["organisation"]["id"],
        org=body["organisation"],
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


def admin(gateway: Flask, client: Any, email: str = "admin@example.org") -> Account:
    """The install's first admin, made as ``aidlink admin create`` makes it."""
    from services.gateway.auth.admin import create_admin

    rt = gateway.extensions["aidlink"]
    with gateway.app_context():
        user, _created = create_admin(rt, email=email, password=PASSWORD, name="Admin")
    tokens = login(client, email)
    me = client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    ).get_json()
    return Account(
        email=email,
        user_id=str(user.id),
        org_id=me["organisation"]["id"],
        org=me["organisation"],
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


def verify(client: Any, by: Account, org_id: str, evidence: str = "licence checked") -> None:
    response = client.post(
        f"/api/v1/orgs/{org_id}/verify", json={"evidence": evidence}, headers=by.headers
    )
    assert response.status_code == 200, response.get_json()


def verified(client: Any, by: Account, *, kind: str, **kwargs: Any) -> Account:
    """A registered organisation that ``by`` (a coordinator or admin) has verified, signed
    in again so its token carries the new status."""
    account = register(client, kind=kind, **kwargs)
    verify(client, by, account.org_id)
    tokens = login(client, account.email)
    account.access_token = tokens["access_token"]
    account.refresh_token = tokens["refresh_token"]
    return account


def coordinator(client: Any, by_admin: Account, **kwargs: Any) -> Account:
    """A verified coordinator office's user: a coordinator."""
    return verified(client, by_admin, kind="coordinator_office", **kwargs)
