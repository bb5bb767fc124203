"""The gateway as clients meet it: one address, clear errors, one API document."""

from __future__ import annotations

import socket
from typing import Any

from services.gateway.app import create_app as create_gateway
from shared.config import Settings
from tests.support.auth import admin, register
from tests.support.orgs import HOSPITAL
from tests.support.stack import Stack


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_registration_with_bad_fields_names_each_field_and_writes_nothing(stack: Stack) -> None:
    client = stack.client()
    response = client.post(
        "/api/v1/auth/register",
        json={
            "organisation": {"name": "", "kind": "spaceport", "region": "Wuhan"},
            "user": {"email": "not-an-email", "password": "short", "name": "A"},
        },
    )

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem["status"] == 422
    assert problem["instance"] == "/api/v1/auth/register"
    assert set(problem["errors"]) == {
        "organisation.name",
        "organisation.kind",
        "organisation.region",
        "user.email",
        "user.password",
    }
    boss = admin(stack.apps["gateway"], client)
    listed = client.get("/api/v1/orgs", headers=boss.headers).json["items"]
    assert [org["name"] for org in listed] == ["aidlink administration"]


def test_body_that_is_not_json_is_a_problem_not_a_crash(stack: Stack) -> None:
    response = stack.client().post(
        "/api/v1/auth/register", data="name=x", headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.mimetype == "application/problem+json"


def test_organisations_list_pages_with_a_cursor(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    names = [f"Community Committee {n}" for n in range(5)]
    for name in names:
        body = {**HOSPITAL, "name": name, "kind": "community_committee"}
        created = client.post("/api/v1/orgs", json=body, headers=boss.headers)
        assert created.status_code == 201, created.json

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {
            "limit": 2,
            "kind": "community_committee",
            **({"cursor": cursor} if cursor else {}),
        }
        page = client.get("/api/v1/orgs", query_string=query, headers=boss.headers).json
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3
    bad = client.get("/api/v1/orgs", query_string={"cursor": "not-a-cursor"}, headers=boss.headers)
    assert bad.status_code == 400
    assert "cursor" in bad.json["errors"]


def test_unknown_organisation_is_a_404_problem(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    response = client.get(
        "/api/v1/donations/orgs/5f0c6a4e-6f1a-4a39-9d55-1f3b0b0c2a10", headers=boss.headers
    )
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert "donations" in response.json["detail"]


def test_request_id_travels_to_the_service_and_back(stack: Stack) -> None:
    client = stack.client()
    hospital = register(client)
    response = client.get(
        f"/api/v1/dispatch/orgs/{hospital.org_id}",
        headers={"X-Request-ID": "scan-batch-42", **hospital.headers},
    )
    assert response.headers["X-Request-ID"] == "scan-batch-42"
    assert response.json["request_id"] == "scan-batch-42"  # set by the dispatch service


def test_service_down_is_a_502_problem_naming_it(settings: Settings) -> None:
    urls = {**settings.service_urls, "donations": f"http://127.0.0.1:{_closed_port()}"}
    gateway = create_gateway(settings.with_overrides(service_urls=urls), testing=True)

    client: Any = gateway.test_client()
    response = client.get("/api/v1/donations/orgs/x")

    assert response.status_code == 502
    assert response.mimetype == "application/problem+json"
    assert response.json["service"] == "donations"
    assert "unreachable" in response.json["detail"]
    gateway.extensions["aidlink"].dispose()


def test_unknown_api_segment_is_a_404_problem(stack: Stack) -> None:
    response = stack.client().get("/api/v1/nowhere/at/all")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_one_openapi_document_covers_every_service(stack: Stack) -> None:
    client = stack.client()
    doc = client.get("/api/v1/openapi.json").json

    assert doc["openapi"].startswith("3.")
    assert {
        "/api/v1/orgs",
        "/api/v1/orgs/{org_id}",
        "/api/v1/donations/orgs/{org_id}",
        "/api/v1/dispatch/orgs/{org_id}",
    } <= set(doc["paths"])
    assert "x-unavailable-services" not in doc
    assert "Problem" in doc["components"]["schemas"]
    docs_page = client.get("/api/v1/docs")
    assert docs_page.status_code == 200
    assert b"/api/v1/openapi.json" in docs_page.data
    asset = client.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    asset.close()
    assert asset.status_code == 200


def test_the_openapi_document_says_exactly_what_is_answered(stack: Stack) -> None:
    """Problem details' extension members are declared (and others allowed), bodies a
    client may leave out are optional, and a wrong method is a 405 naming the right
    ones, on the gateway's own paths and on those it forwards."""
    client = stack.client()
    doc = client.get("/api/v1/openapi.json").json
    problem = doc["components"]["schemas"]["Problem"]
    assert {"required_scope", "job_id", "merged_into_id", "current_status"} <= set(
        problem["properties"]
    )
    assert problem["additionalProperties"] is True
    optional = {
        ("post", "/api/v1/matching/runs"),
        ("post", "/api/v1/pledges/{pledge_id}/cancel"),
        ("post", "/api/v1/needs/{need_id}/cancel"),
        ("post", "/api/v1/duplicates/{flag_id}/dismiss"),
    }
    for method, path in optional:
        assert doc["paths"][path][method]["requestBody"]["required"] is False, path
    # And they are taken without one.
    boss = admin(stack.apps["gateway"], client)
    assert client.post("/api/v1/matching/runs", headers=boss.headers).status_code == 201

    hospital = register(client)
    for method, path, allowed in (
        ("PUT", "/api/v1/orgs", {"GET", "POST"}),
        ("PATCH", "/api/v1/auth/login", {"POST"}),
        ("DELETE", "/api/v1/pledges", {"GET", "POST"}),
        ("DELETE", "/api/v1/transparency/ledger", {"GET"}),
    ):
        answer = client.open(path, method=method, headers=hospital.headers)
        assert answer.status_code == 405, (method, path, answer.json)
        assert answer.mimetype == "application/problem+json"
        assert allowed <= {m.strip() for m in answer.headers["Allow"].split(",")}, path


def test_every_service_reports_health_and_readiness(stack: Stack) -> None:
    for service, app in stack.apps.items():
        client: Any = app.test_client()
        assert client.get("/healthz").json == {"status": "ok", "service": service}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.json
        assert ready.json["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_fails_when_the_database_is_unreachable(settings: Settings) -> None:
    broken = settings.with_overrides(
        database_urls={
            **settings.database_urls,
            "gateway": f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/none",
        }
    )
    gateway = create_gateway(broken, testing=True)
    client: Any = gateway.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["checks"]["database"].startswith("unreachable")
    assert response.json["checks"]["broker"] == "ok"
