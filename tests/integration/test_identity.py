"""Identity at the gateway: registration, sign-in, tokens, verification, the internal
token the services demand, lockout and rate limits."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from services.gateway.app import create_app as create_gateway
from shared.config import Settings
from shared.identity import INTERNAL_HEADER, Identity, sign_internal
from tests.support.auth import PASSWORD, admin, coordinator, login, register, verified
from tests.support.orgs import read_model_org
from tests.support.stack import REPO_ROOT, Stack, build_stack, eventually, serve


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_registration_makes_a_pending_organisation_and_a_user_who_can_sign_in(
    stack: Stack,
) -> None:
    client = stack.client()
    hospital = register(
        client,
        kind="hospital",
        name="Wuhan Red Cross Hospital",
        name_zh="武汉市红十字会医院",
        contacts=[{"name": "Dr. Li", "phone": "+86 27 8888 0000"}],
        licence_number="12420100441360063X",
    )

    me = client.get("/api/v1/auth/me", headers=hospital.headers)
    assert me.status_code == 200
    # The first user also manages the organisation's members.
    assert me.json["roles"] == ["org_admin", "recipient"]
    assert me.json["organisation"]["status"] == "pending"
    assert me.json["organisation"]["name_zh"] == "武汉市红十字会医院"
    assert me.json["organisation"]["contacts"][0]["name"] == "Dr. Li"

    # The same email cannot register twice; the second organisation is not created.
    again = client.post(
        "/api/v1/auth/register",
        json={
            "organisation": {"name": "Another", "kind": "hospital", "region": "420103"},
            "user": {"email": hospital.email.upper(), "password": PASSWORD, "name": "B"},
        },
    )
    assert again.status_code == 409
    assert "user.email" in again.json["errors"]
    boss = admin(stack.apps["gateway"], client)
    names = [o["name"] for o in client.get("/api/v1/orgs", headers=boss.headers).json["items"]]
    assert "Another" not in names


def test_contacts_are_private_to_members_and_coordinators(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = verified(
        client, boss, kind="hospital", contacts=[{"name": "Nurse Wang", "phone": "13800000000"}]
    )
    donor = verified(client, boss, kind="foundation")

    seen_by_donor = client.get(f"/api/v1/orgs/{hospital.org_id}", headers=donor.headers).json
    assert "contacts" not in seen_by_donor
    assert "licence_number" not in seen_by_donor
    seen_by_boss = client.get(f"/api/v1/orgs/{hospital.org_id}", headers=boss.headers).json
    assert seen_by_boss["contacts"][0]["name"] == "Nurse Wang"
    assert seen_by_boss["verification_evidence"] == "licence checked"

    # A pending organisation is not in other members' directory at all.
    pending = register(client, kind="hospital")
    assert client.get(f"/api/v1/orgs/{pending.org_id}", headers=donor.headers).status_code == 404
    listed = client.get("/api/v1/orgs", headers=donor.headers).json["items"]
    assert pending.org_id not in {o["id"] for o in listed}


def test_admin_create_is_idempotent_from_the_command_line(settings: Settings) -> None:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "admin",
        "create",
        "--email",
        "First.Admin@Example.org",
        "--password",
        "a long enough password",
    ]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    second = subprocess.run(
        [*command[:-1], "a different password"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    bad = subprocess.run(
        [*command[:5], "--email", "x@example.org", "--password", "short"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "--password" in bad.stderr

    with build_stack(settings) as stack:
        client = stack.client()
        # The first password still works; the second call changed nothing.
        tokens = login(client, "first.admin@example.org", "a long enough password")
        me = client.get("/api/v1/auth/me", headers=_bearer(tokens["access_token"])).json
        assert sorted(me["roles"]) == ["admin", "coordinator"]
        assert me["organisation"]["status"] == "verified"
        failed = client.post(
            "/api/v1/auth/login",
            json={"email": "first.admin@example.org", "password": "a different password"},
        )
        assert failed.status_code == 401


def test_access_tokens_expire_and_refresh_tokens_rotate(settings: Settings) -> None:
    # Long enough for a fresh token to be used on a busy machine; the old one is
    # waited out rather than slept on.
    with build_stack(settings.with_overrides(access_token_ttl=4)) as stack:
        client = stack.client()
        hospital = register(client)
        assert client.get("/api/v1/auth/me", headers=hospital.headers).status_code == 200
        eventually(
            lambda: client.get("/api/v1/auth/me", headers=hospital.headers).status_code == 401,
            timeout=30,
            interval=0.2,
        )
        expired = client.get("/api/v1/auth/me", headers=hospital.headers)
        assert expired.status_code == 401
        assert "expired" in expired.json["detail"]
        assert expired.headers["WWW-Authenticate"] == "Bearer"

        fresh = client.post("/api/v1/auth/refresh", json={"refresh_token": hospital.refresh_token})
        assert fresh.status_code == 200
        pair = fresh.json
        assert pair["refresh_token"] != hospital.refresh_token
        assert (
            client.get("/api/v1/auth/me", headers=_bearer(pair["access_token"])).status_code == 200
        )

        # Replaying the used refresh token ends the whole sign-in.
        replay = client.post("/api/v1/auth/refresh", json={"refresh_token": hospital.refresh_token})
        assert replay.status_code == 401
        assert (
            client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 401
        assert (
            client.get("/api/v1/auth/me", headers=_bearer(pair["access_token"])).status_code == 401
        )


def test_logout_revokes_the_access_and_refresh_tokens_of_that_sign_in(stack: Stack) -> None:
    client = stack.client()
    hospital = register(client)
    other_sign_in = login(client, hospital.email)

    assert client.post("/api/v1/auth/logout", headers=hospital.headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=hospital.headers).status_code == 401
    refused = client.post("/api/v1/auth/refresh", json={"refresh_token": hospital.refresh_token})
    assert refused.status_code == 401
    # Another sign-in of the same user goes on working.
    still = client.get("/api/v1/auth/me", headers=_bearer(other_sign_in["access_token"]))
    assert still.status_code == 200


def _tampered(token: str) -> list[str]:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    return [
        f"{header}.{forged}.{signature}",
        f"{header}.{payload}.{flipped}",
        f"{none_alg}.{forged}.",
        "not-a-token",
        "alk_not-a-real-api-token",
    ]


def test_tampered_tokens_are_refused(stack: Stack) -> None:
    client = stack.client()
    hospital = register(client)
    for token in _tampered(hospital.access_token):
        response = client.get("/api/v1/audit", headers=_bearer(token))
        assert response.status_code == 401, (token, response.json)
        assert response.mimetype == "application/problem+json"
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"}).status_code == 401


def test_a_service_called_directly_without_the_internal_token_refuses(stack: Stack) -> None:
    hospital = register(stack.client())
    url = stack.settings.service_urls["donations"]
    path = f"/api/v1/donations/orgs/{hospital.org_id}"

    bare = requests.get(url + path, timeout=10)
    assert bare.status_code == 401
    assert bare.headers["Content-Type"].startswith("application/problem+json")
    assert "gateway" in bare.json()["detail"]
    # Nor does the user's own access token open it.
    assert requests.get(url + path, headers=hospital.headers, timeout=10).status_code == 401

    coordinator_claims = Identity(roles=frozenset({"admin"}), via="session")
    wrong_key = sign_internal(coordinator_claims, "x" * 40, "donations")
    assert (
        requests.get(url + path, headers={INTERNAL_HEADER: wrong_key}, timeout=10).status_code
        == 401
    )
    for_dispatch = sign_internal(coordinator_claims, stack.settings.internal_key, "dispatch")
    assert (
        requests.get(url + path, headers={INTERNAL_HEADER: for_dispatch}, timeout=10).status_code
        == 401
    )
    expired = sign_internal(coordinator_claims, stack.settings.internal_key, "donations", ttl=-60)
    assert (
        requests.get(url + path, headers={INTERNAL_HEADER: expired}, timeout=10).status_code == 401
    )

    # Health checks stay open for load balancers.
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    # Through the gateway, the same call is let in (and scoped: own organisation only).
    client = stack.client()
    assert client.get(path, headers=hospital.headers).status_code in (200, 404)
    stranger = register(client)
    assert client.get(path, headers=stranger.headers).status_code == 403
    # A header smuggled in by the client is replaced by the gateway's own.
    smuggled = {**stranger.headers, INTERNAL_HEADER: for_dispatch}
    assert client.get(path, headers=smuggled).status_code == 403


def test_repeated_failed_logins_lock_the_account_for_a_while(settings: Settings) -> None:
    with build_stack(settings.with_overrides(lockout_threshold=3, lockout_seconds=2)) as stack:
        client = stack.client()
        hospital = register(client)
        wrong = {"email": hospital.email, "password": "wrong password!"}
        for _ in range(3):
            assert client.post("/api/v1/auth/login", json=wrong).status_code == 401
        locked = client.post(
            "/api/v1/auth/login", json={"email": hospital.email, "password": PASSWORD}
        )
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) >= 1
        assert "locked" in locked.json["detail"]
        time.sleep(2.2)
        assert login(client, hospital.email)["access_token"]
        # An unknown email answers like a wrong password, and locks nothing.
        unknown = client.post(
            "/api/v1/auth/login", json={"email": "nobody@example.org", "password": "whatever1234"}
        )
        assert unknown.status_code == 401
        assert unknown.json["detail"] == "The email or the password is wrong."


@contextmanager
def _gateway_with(settings: Settings, **overrides: Any) -> Iterator[Any]:
    gateway = create_gateway(settings.with_overrides(**overrides), testing=True)
    try:
        yield gateway
    finally:
        gateway.extensions["aidlink"].dispose()


def test_sign_in_and_writes_are_rate_limited(settings: Settings) -> None:
    with _gateway_with(
        settings, ratelimit_login="3/minute", ratelimit_writes="5/minute"
    ) as gateway:
        client = gateway.test_client()
        body = {"email": "someone@example.org", "password": "wrong password!"}
        codes = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        limited = client.post("/api/v1/auth/login", json=body)
        assert limited.mimetype == "application/problem+json"
        assert "Retry-After" in limited.headers

    with _gateway_with(settings, ratelimit_writes="5/minute") as gateway:
        client = gateway.test_client()
        # Writes: five per minute per caller, then 429; reads are not counted.
        registrations = [
            client.post("/api/v1/auth/register", json={"organisation": {}, "user": {}}).status_code
            for _ in range(6)
        ]
        assert registrations == [422] * 5 + [429]
        assert client.get("/healthz").status_code == 200


def test_each_service_checks_a_forwarded_api_tokens_scopes_itself(stack: Stack) -> None:
    """A service does not trust the gateway alone: an identity forwarded for an API
    token opens only what the token's scopes name, checked again in the service."""
    donor = register(stack.client(), kind="foundation")
    url = stack.settings.service_urls["donations"]
    path = f"/api/v1/donations/orgs/{donor.org_id}"

    def forwarded(scopes: set[str]) -> dict[str, str]:
        claims = Identity(
            user_id=uuid.UUID(donor.user_id),
            org_id=uuid.UUID(donor.org_id),
            roles=frozenset({"donor"}),
            org_kind="foundation",
            org_status="pending",
            via="token",
            scopes=frozenset(scopes),
        )
        return {INTERNAL_HEADER: sign_internal(claims, stack.settings.internal_key, "donations")}

    refused = requests.get(url + "/api/v1/pledges", headers=forwarded({"needs:read"}), timeout=10)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/insufficient-scope")
    assert refused.json()["required_scope"] == "pledges:read"
    write = requests.post(
        url + "/api/v1/pledges", json={}, headers=forwarded({"pledges:read"}), timeout=10
    )
    assert (write.status_code, write.json()["required_scope"]) == (403, "pledges:write")
    read = requests.get(url + "/api/v1/pledges", headers=forwarded({"pledges:read"}), timeout=10)
    assert read.status_code == 200, read.json()
    # A service's own record of an organisation is read with the orgs scope.
    record = requests.get(url + path, headers=forwarded({"pledges:read"}), timeout=10)
    assert (record.status_code, record.json()["required_scope"]) == (403, "orgs:read")
    allowed = requests.get(url + path, headers=forwarded({"orgs:read"}), timeout=10)
    assert allowed.status_code in (200, 404), allowed.json()
    # A signed-in session carries no scopes and is not limited by them.
    session = Identity(
        user_id=uuid.UUID(donor.user_id),
        org_id=uuid.UUID(donor.org_id),
        roles=frozenset({"donor"}),
        via="session",
    )
    as_session = {INTERNAL_HEADER: sign_internal(session, stack.settings.internal_key, "donations")}
    assert requests.get(url + path, headers=as_session, timeout=10).status_code in (200, 404)


def test_behind_a_trusted_proxy_each_client_has_its_own_sign_in_limit(
    settings: Settings,
) -> None:
    body = {"email": "someone@example.org", "password": "wrong password!"}

    def attempts(client: Any, address: str, times: int) -> list[int]:
        headers = {"X-Forwarded-For": address}
        return [
            client.post("/api/v1/auth/login", json=body, headers=headers).status_code
            for _ in range(times)
        ]

    with _gateway_with(settings, ratelimit_login="2/minute", trusted_proxies=1) as gateway:
        client = gateway.test_client()
        assert attempts(client, "203.0.113.7", 3) == [401, 401, 429]
        # Another client behind the same proxy is not held back by the first one.
        assert attempts(client, "203.0.113.8", 2) == [401, 401]

    # Without trusted proxies the header is the client's word, and not believed: every
    # request comes from the one peer.
    with _gateway_with(settings, ratelimit_login="2/minute") as gateway:
        client = gateway.test_client()
        assert attempts(client, "203.0.113.7", 2) == [401, 401]
        assert attempts(client, "203.0.113.8", 1) == [429]


def test_verification_by_a_coordinator_reaches_the_services(stack: Stack) -> None:
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = register(client, kind="hospital")
    donor = register(client, kind="foundation")

    # Neither a recipient, nor a donor, nor an unverified coordinator office may verify.
    pending_office = register(client, kind="coordinator_office")
    for account in (hospital, donor, pending_office):
        refused = client.post(
            f"/api/v1/orgs/{hospital.org_id}/verify",
            json={"evidence": "trust me"},
            headers=account.headers,
        )
        assert refused.status_code == 403, account
    # A coordinator may not verify a coordinator office; an admin may.
    office_try = client.post(
        f"/api/v1/orgs/{pending_office.org_id}/verify",
        json={"evidence": "letter"},
        headers=office.headers,
    )
    assert office_try.status_code == 403
    missing = client.post(f"/api/v1/orgs/{hospital.org_id}/verify", json={}, headers=office.headers)
    assert missing.status_code == 422
    assert "evidence" in missing.json["errors"]

    done = client.post(
        f"/api/v1/orgs/{hospital.org_id}/verify",
        json={"evidence": "licence 12420100441360063X checked against the registry"},
        headers=office.headers,
    )
    assert done.status_code == 200
    assert done.json["status"] == "verified"
    assert done.json["verified_by"] == office.user_id
    assert done.json["verification_evidence"].startswith("licence")

    def status_in(service: str) -> str | None:
        org = read_model_org(stack.runtime(service), hospital.org_id)
        return org.status if org is not None else None

    eventually(lambda: status_in("donations") == "verified")
    eventually(lambda: status_in("dispatch") == "verified")

    suspended = client.post(
        f"/api/v1/orgs/{hospital.org_id}/suspend",
        json={"reason": "licence revoked"},
        headers=office.headers,
    )
    assert suspended.status_code == 200
    assert suspended.json["status"] == "suspended"
    eventually(lambda: status_in("donations") == "suspended")

    # Members of a suspended organisation may read but not write.
    assert client.get("/api/v1/auth/me", headers=hospital.headers).status_code == 200
    blocked = client.post(
        "/api/v1/tokens", json={"name": "x", "scopes": ["orgs:read"]}, headers=hospital.headers
    )
    assert blocked.status_code == 403
    assert "suspended" in blocked.json["detail"]

    # The audit log holds who did what, before and after.
    entries = client.get(
        "/api/v1/audit",
        query_string={"target_id": hospital.org_id, "action": "org.verify"},
        headers=office.headers,
    ).json["items"]
    assert len(entries) == 1
    assert entries[0]["actor_user_id"] == office.user_id
    assert entries[0]["before"]["status"] == "pending"
    assert entries[0]["after"]["status"] == "verified"
    assert entries[0]["request_id"]
    assert client.get("/api/v1/audit", headers=hospital.headers).status_code == 403


def test_api_tokens_are_shown_once_scoped_and_revocable(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)

    created = client.post(
        "/api/v1/tokens",
        json={"name": "county reporting", "scopes": ["orgs:read"]},
        headers=office.headers,
    )
    assert created.status_code == 201
    secret = created.json["token"]
    token_id = created.json["id"]
    listed = client.get("/api/v1/tokens", headers=office.headers).json["items"]
    assert [t["id"] for t in listed] == [token_id]
    assert "token" not in listed[0]
    assert secret.startswith(listed[0]["prefix"])

    assert client.get("/api/v1/orgs", headers=_bearer(secret)).status_code == 200
    no_scope = client.get("/api/v1/audit", headers=_bearer(secret))
    assert no_scope.status_code == 403
    assert no_scope.json["required_scope"] == "audit:read"
    write = client.post(
        "/api/v1/orgs",
        json={"name": "X", "kind": "hospital", "region": "4201"},
        headers=_bearer(secret),
    )
    assert write.status_code == 403
    # A token cannot mint tokens or act as a session.
    assert (
        client.post(
            "/api/v1/tokens", json={"name": "y", "scopes": ["orgs:read"]}, headers=_bearer(secret)
        ).status_code
        == 403
    )
    bad = client.post(
        "/api/v1/tokens", json={"name": "", "scopes": ["everything"]}, headers=office.headers
    )
    assert bad.status_code == 422
    assert {"name", "scopes.0"} <= set(bad.json["errors"])

    # Someone else's token is not theirs to see or revoke.
    other = register(client)
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=other.headers).status_code == 404
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=office.headers).status_code == 204
    assert client.get("/api/v1/orgs", headers=_bearer(secret)).status_code == 401


def test_the_gateway_is_reachable_over_real_http_with_a_token(stack: Stack) -> None:
    url, stop = serve(stack.apps["gateway"])
    try:
        hospital = register(stack.client())
        answer = requests.get(f"{url}/api/v1/auth/me", headers=hospital.headers, timeout=10)
        assert answer.status_code == 200
        assert answer.json()["organisation"]["id"] == hospital.org_id
    finally:
        stop()


def test_a_password_hashed_at_another_cost_signs_in_and_is_hashed_again_at_the_configured_one(
    stack: Stack,
) -> None:
    """An install that changes argon2id's cost (or one older than OWASP's minimum, the
    default now): its people's passwords still work, and each is hashed at the
    configured cost the next time its owner signs in."""
    from argon2 import PasswordHasher, extract_parameters
    from sqlalchemy import select

    from services.gateway.auth.credentials import check_password
    from services.gateway.models import User

    client = stack.client()
    person = register(client)
    settings = stack.settings
    gateway = stack.runtime("gateway")
    older = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(PASSWORD)
    with gateway.unit_of_work() as session:
        user = session.scalars(select(User).where(User.email == person.email)).one()
        user.password_hash = older
    assert check_password(older, PASSWORD) and not check_password(older, PASSWORD + "x")
    login(client, person.email)
    with gateway.session_factory() as session:
        now = session.scalars(select(User).where(User.email == person.email)).one().password_hash
    made = extract_parameters(now)
    assert (made.time_cost, made.memory_cost, made.parallelism) == (
        settings.password_hash_time_cost,
        settings.password_hash_memory_kib,
        settings.password_hash_parallelism,
    )
    assert (made.time_cost, made.memory_cost, made.parallelism) == (2, 19456, 1)
    login(client, person.email)  # and still signs in


def test_a_forwarded_write_is_in_the_audit_log_with_its_caller_and_what_it_made(
    stack: Stack,
) -> None:
    """The gateway writes the audit row of a write a service accepted once it answered:
    who (the signed-in user, the organisation acted for), what (method and path, the
    resource the service answered with) and the request's id."""
    from tests.support.supply import one_line

    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    donor = verified(client, boss, kind="foundation")
    made = client.post("/api/v1/pledges", json=one_line(40), headers=donor.headers)
    assert made.status_code == 201, made.json
    pledge_id = made.json["id"]
    entries = client.get(
        "/api/v1/audit", query_string={"target_id": pledge_id}, headers=office.headers
    ).json["items"]
    assert len(entries) == 1
    [entry] = entries
    assert entry["action"] == "POST /api/v1/pledges"
    assert (entry["actor_user_id"], entry["actor_org_id"]) == (donor.user_id, donor.org_id)
    assert entry["actor_kind"] == "session"
    assert entry["after"]["id"] == pledge_id and entry["after"]["status"] == "open"
    assert entry["request_id"] == made.headers["X-Request-ID"]
