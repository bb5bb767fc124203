"""A supply chain built through the API, for the shipment, receipt and ledger pages:
workers, a coordinator, a donor, hospitals, a logistics company, a pledge of masks,
each hospital's need, a matching run applied, and each need's planned shipment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.dispatch.models import SupplyLine
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.shipping import backdate_shipments
from tests.support.stack import Stack, eventually


@dataclass
class Chain:
    people: dict[str, Account]
    pledge: dict[str, Any]
    needs: dict[str, dict[str, Any]] = field(default_factory=dict)
    shipments: dict[str, dict[str, Any]] = field(default_factory=dict)


def _post(client: Any, url: str, body: dict[str, Any], who: Account) -> dict[str, Any]:
    response = client.post(url, json=body, headers=who.headers)
    assert response.status_code in (200, 201), response.get_json()
    found: dict[str, Any] = response.get_json()
    return found


def _get(client: Any, url: str, who: Account, **query: Any) -> dict[str, Any]:
    response = client.get(url, query_string=query or None, headers=who.headers)
    assert response.status_code == 200, response.get_json()
    found: dict[str, Any] = response.get_json()
    return found


def stamp(hours_ago: float) -> str:
    """An ISO time ``hours_ago`` before now, in UTC."""
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def build(
    stack: Stack,
    needed: dict[str, int],
    *,
    pledged: int = 1000,
    names: dict[str, str] | None = None,
    pledge_line: dict[str, Any] | None = None,
    origin: dict[str, Any] | None = None,
) -> Chain:
    """``needed`` is masks by hospital (account name): one shipment each, planned.
    ``pledge_line`` and ``origin`` replace the pledge's line (masks by the piece) and
    origin."""
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    names = names or {}
    people = {
        "coordinator": coordinator(client, boss),
        "donor": verified(client, boss, kind="foundation", region="4403", name=names.get("donor")),
        "carrier": verified(
            client, boss, kind="logistics_company", region="4201", name=names.get("carrier")
        ),
    }
    for hospital in needed:
        people[hospital] = verified(
            client, boss, kind="hospital", region="420103", name=names.get(hospital)
        )
    pledge = _post(
        client,
        "/api/v1/pledges",
        {
            "lines": [pledge_line or {"item": "mask", "quantity": str(pledged), "unit": "piece"}],
            "origin": origin or {"region": "440304", "address": "Futian warehouse"},
        },
        people["donor"],
    )

    def supply_known() -> bool:
        with stack.runtime("dispatch").session_factory() as session:
            line = session.get(SupplyLine, uuid.UUID(pledge["lines"][0]["id"]))
            return line is not None and line.pledge_version >= pledge["version"]

    eventually(supply_known, timeout=60)
    chain = Chain(people=people, pledge=pledge)
    for number, (hospital, quantity) in enumerate(needed.items()):
        chain.needs[hospital] = _post(
            client,
            "/api/v1/needs",
            {
                "lines": [
                    {
                        "item": "mask",
                        "quantity": str(quantity),
                        "unit": "piece",
                        "urgency": "critical",
                    }
                ],
                "location": {"region": "420103", "address": f"Ward {number + 3}, Jiang'an"},
            },
            people[hospital],
        )
    run = _post(
        client,
        "/api/v1/matching/runs",
        {"dry_run": False, "items": ["mask"]},
        people["coordinator"],
    )
    assert run["status"] == "applied", run
    for hospital, made in chain.needs.items():

        def planned(need_id: str = made["id"]) -> dict[str, Any] | None:
            found = _get(client, "/api/v1/shipments", people["coordinator"], need_id=need_id)
            reserved = _get(
                client,
                "/api/v1/allocations",
                people["coordinator"],
                need_id=need_id,
                status="reserved",
            )["items"]
            items = found["items"]
            if len(items) == 1 and len(items[0]["lines"]) == len(reserved) > 0:
                return dict(items[0])
            return None

        chain.shipments[hospital] = eventually(planned, timeout=60)
    # Planned two days ago: the stories scan hours back.
    backdate_shipments(stack)
    return chain


def assign(stack: Stack, chain: Chain, hospital: str) -> None:
    """The chain's logistics company assigned to ``hospital``'s shipment, by the API."""
    client = stack.client()
    shipment_id = chain.shipments[hospital]["id"]
    current = client.get(
        f"/api/v1/shipments/{shipment_id}", headers=chain.people["coordinator"].headers
    )
    response = client.patch(
        f"/api/v1/shipments/{shipment_id}",
        json={"logistics_org_id": chain.people["carrier"].org_id},
        headers={**chain.people["coordinator"].headers, "If-Match": current.headers["ETag"]},
    )
    assert response.status_code == 200, response.get_json()


def shipment(stack: Stack, chain: Chain, hospital: str) -> dict[str, Any]:
    return _get(
        stack.client(),
        f"/api/v1/shipments/{chain.shipments[hospital]['id']}",
        chain.people["coordinator"],
    )


def deliver(stack: Stack, chain: Chain, hospital: str) -> None:
    """``hospital``'s shipment picked up and delivered by the chain's logistics company
    (assigned to it first), by the API."""
    client = stack.client()
    shipment_id = chain.shipments[hospital]["id"]
    for status, hours_ago in (("picked_up", 3), ("delivered", 2)):
        _post(
            client,
            f"/api/v1/shipments/{shipment_id}/events",
            {"status": status, "occurred_at": stamp(hours_ago)},
            chain.people["carrier"],
        )


def need_line(stack: Stack, chain: Chain, hospital: str) -> dict[str, Any]:
    """The first line of ``hospital``'s need, with its figures as the hospital sees them."""
    need = _get(
        stack.client(), f"/api/v1/needs/{chain.needs[hospital]['id']}", chain.people[hospital]
    )
    return dict(need["lines"][0])
