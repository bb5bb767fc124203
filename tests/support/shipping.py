"""Shipments on real donations and dispatch workers: places, careful calls through the
gateway, a pledge matched and reserved to needs, and the shipments and allocations it
leads to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from services.dispatch.models import Allocation
from tests.support.auth import Account
from tests.support.stack import Stack, eventually
from tests.support.world import supply_known

HOSPITAL_AT = {"region": "420103", "address": "1277 Jiefang Avenue", "lat": 30.58, "lon": 114.27}
COMMUNITY_AT = {"region": "420102", "address": "Baibuting community", "lat": 30.62, "lon": 114.3}


def call_as(client: Any, method: str, url: str, who: Account, status: int, **kwargs: Any) -> Any:
    headers = {**who.headers, **kwargs.pop("headers", {})}
    response = client.open(url, method=method, headers=headers, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    return response


def post_as(client: Any, url: str, body: Any, who: Account, status: int = 201) -> Any:
    return call_as(client, "POST", url, who, status, json=body).json


def post_need(client: Any, who: Account, lines: dict[str, int], at: dict[str, Any]) -> Any:
    return post_as(
        client,
        "/api/v1/needs",
        {
            "lines": [
                {
                    "item": item,
                    "quantity": str(q),
                    "unit": "piece" if item == "mask" else "pair",
                    "urgency": "critical",
                }
                for item, q in lines.items()
            ],
            "location": at,
        },
        who,
    )


def reserved(
    stack: Stack,
    people: dict[str, Account],
    supply: dict[str, int],
    needs: list[tuple[str, dict[str, int], dict[str, Any]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A pledge, needs, an applied matching run, and every allocation reserved."""
    client = stack.client()
    pledge = post_as(
        client,
        "/api/v1/pledges",
        {
            "lines": [
                {"item": item, "quantity": str(q), "unit": "piece" if item == "mask" else "pair"}
                for item, q in supply.items()
            ],
            "origin": {"region": "440304", "address": "Futian, Shenzhen"},
        },
        people["donor"],
    )
    made = [post_need(client, people[who], lines, at) for who, lines, at in needs]
    wanted = sum(len(lines) for _, lines, _ in needs)

    eventually(lambda: supply_known(stack, pledge))
    post_as(
        client,
        "/api/v1/matching/runs",
        {"dry_run": False, "items": sorted(supply)},
        people["coordinator"],
    )
    eventually(lambda: len(allocations_in(stack, "reserved")) == wanted, timeout=60)
    return pledge, made


def allocations_in(stack: Stack, status: str | None = None) -> list[Allocation]:
    with stack.runtime("dispatch").session_factory() as session:
        stmt = select(Allocation)
        if status:
            stmt = stmt.where(Allocation.status == status)
        return list(session.scalars(stmt))


def list_shipments(client: Any, who: Account, **query: Any) -> list[dict[str, Any]]:
    response = call_as(client, "GET", "/api/v1/shipments", who, 200, query_string=query)
    items: list[dict[str, Any]] = response.json["items"]
    return items


def assign_carrier(client: Any, shipment: dict[str, Any], people: dict[str, Account]) -> Any:
    current = call_as(
        client, "GET", f"/api/v1/shipments/{shipment['id']}", people["coordinator"], 200
    )
    return call_as(
        client,
        "PATCH",
        f"/api/v1/shipments/{shipment['id']}",
        people["coordinator"],
        200,
        json={"logistics_org_id": people["carrier"].org_id, "tracking_ref": "SF1234567890"},
        headers={"If-Match": current.headers["ETag"]},
    ).json


def shipment_event(
    client: Any,
    shipment_id: str,
    who: Account,
    status: str,
    at: datetime,
    code: int = 201,
    **extra: Any,
) -> Any:
    return post_as(
        client,
        f"/api/v1/shipments/{shipment_id}/events",
        {"status": status, "occurred_at": at.isoformat(), **extra},
        who,
        code,
    )
