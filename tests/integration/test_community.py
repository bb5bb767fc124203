"""The community service: a residential community's committee, its buildings and
households, their orders, the distribution inside and residents' cases."""

from __future__ import annotations

from tests.support.auth import admin, register, verified
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually


def test_a_community_committee_reaches_the_community_service_through_the_gateway(
    stack: Stack,
) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    committee = verified(client, boss, kind="community_committee", region="420102")
    stranger = register(client, kind="hospital")

    eventually(
        lambda: (org := read_model_org(stack.runtime("community"), committee.org_id))
        and org.status == "verified",
        timeout=60,
    )
    own = client.get(f"/api/v1/community/orgs/{committee.org_id}", headers=committee.headers)
    assert own.status_code == 200, own.json
    assert own.json["kind"] == "community_committee"
    assert own.json["status"] == "verified"
    other = client.get(f"/api/v1/community/orgs/{committee.org_id}", headers=stranger.headers)
    assert other.status_code == 403
    # Published with the rest of the API.
    spec = client.get("/api/v1/openapi.json").json
    assert "/api/v1/community/orgs/{org_id}" in spec["paths"]
