"""Idempotency-Key: a POST sent again with the same key gets the first answer, and the
work is done once, at the gateway and in the services behind it."""

from __future__ import annotations

from sqlalchemy import func, select

from services.donations.models import Pledge
from services.gateway.models import ApiToken
from tests.support.auth import register
from tests.support.stack import Stack
from tests.support.supply import one_line


def _count(stack: Stack, service: str, model: object) -> int:
    rt = stack.runtime(service)
    with rt.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)  # type: ignore[arg-type]


def test_a_repeated_pledge_is_created_once_and_answered_the_same(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    headers = {**donor.headers, "Idempotency-Key": "pledge-2020-01-28-001"}

    first = client.post("/api/v1/pledges", json=one_line(300), headers=headers)
    second = client.post("/api/v1/pledges", json=one_line(300), headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["ETag"] == first.headers["ETag"]
    assert _count(stack, "donations", Pledge) == 1

    changed = client.post("/api/v1/pledges", json=one_line(301), headers=headers)
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json["errors"]
    assert _count(stack, "donations", Pledge) == 1

    # Keys belong to their caller: another donor's same key is another request.
    other = register(client, kind="foundation")
    theirs = client.post(
        "/api/v1/pledges",
        json=one_line(300),
        headers={**other.headers, "Idempotency-Key": "pledge-2020-01-28-001"},
    )
    assert theirs.status_code == 201
    assert theirs.json["id"] != first.json["id"]
    assert _count(stack, "donations", Pledge) == 2


def test_the_gateways_own_posts_honour_the_key(stack: Stack) -> None:
    client = stack.client()
    hospital = register(client)
    headers = {**hospital.headers, "Idempotency-Key": "token-1"}
    body = {"name": "county feed", "scopes": ["orgs:read"]}

    first = client.post("/api/v1/tokens", json=body, headers=headers)
    second = client.post("/api/v1/tokens", json=body, headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json["id"] == first.json["id"]
    assert _count(stack, "gateway", ApiToken) == 1
    bad = client.post(
        "/api/v1/tokens", json=body, headers={**hospital.headers, "Idempotency-Key": " "}
    )
    assert bad.status_code == 400
    assert "Idempotency-Key" in bad.json["errors"]


def test_a_refused_request_is_answered_the_same_again(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    headers = {**donor.headers, "Idempotency-Key": "retry-me"}
    refused = client.post(
        "/api/v1/pledges", json={"lines": [], "origin": {"region": "42"}}, headers=headers
    )
    assert refused.status_code == 422
    # A 4xx is an answer too: the same request gets it again, without running.
    again = client.post(
        "/api/v1/pledges", json={"lines": [], "origin": {"region": "42"}}, headers=headers
    )
    assert again.status_code == 422
    assert again.headers.get("Idempotent-Replayed") == "true"
