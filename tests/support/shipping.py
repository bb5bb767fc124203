"""Shipments on real donations and dispatch workers: places, careful calls through the
gateway, a pledge matched and reserved to needs, and the shipments and allocations it
leads to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.dispatch.models import Allocation, SupplyLine
from tests.support.auth import Account
from tests.support.stack import Stack, eventually
from tests.support.world import supply_known

HOSPITAL_AT = {"region": "420103", "address": "1277 Jiefang Avenue", "lat": 30.58, "lon": 114.27}
COMMUNITY_AT = {"region": "420102", "address": "Baibuting community", "lat": 30.62, "lon": 114.3}


def unit_of(item: str) -> str:
    """The unit these tests count an item in: gloves by the pair, the rest by piece."""
    return "pair" if item == "gloves_exam" else "piece"


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
                    "unit": unit_of(item),
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
                {"item": item, "quantity": str(q), "unit": unit_of(item)}
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


def get_as(client: Any, url: str, who: Account | None = None, **query: Any) -> Any:
    response = client.get(url, query_string=query or None, headers=who.headers if who else {})
    assert response.status_code == 200, response.json
    return response.json


def post_pledge(
    client: Any, who: Account, quantity: int, item: str = "mask", **fields: Any
) -> dict[str, Any]:
    body = {
        "lines": [{"item": item, "quantity": str(quantity), "unit": unit_of(item)}],
        "origin": {"region": "4403", "address": "Futian warehouse"},
        **fields,
    }
    made: dict[str, Any] = post_as(client, "/api/v1/pledges", body, who)
    return made


def post_one_need(
    client: Any, who: Account, quantity: int, region: str = "420103", item: str = "mask"
) -> dict[str, Any]:
    made: dict[str, Any] = post_need(
        client, who, {item: quantity}, {"region": region, "address": "ward 3"}
    )
    assert made["status"] == "open", made
    return made


def await_supply(stack: Stack, made: dict[str, Any]) -> None:
    def known() -> bool:
        with stack.runtime("dispatch").session_factory() as session:
            line = session.get(SupplyLine, uuid.UUID(made["lines"][0]["id"]))
            return line is not None and line.pledge_version >= made["version"]

    eventually(known, timeout=60)


def match(client: Any, people: dict[str, Account], item: str = "mask") -> dict[str, Any]:
    run: dict[str, Any] = post_as(
        client, "/api/v1/matching/runs", {"dry_run": False, "items": [item]}, people["coordinator"]
    )
    assert run["status"] == "applied", run
    return run


def backdate_shipments(stack: Stack, hours: float = 48) -> None:
    """Every shipment as if planned ``hours`` ago, for stories told with scans of some
    hours back (an update dated before its shipment existed is refused)."""
    from sqlalchemy import update

    from services.dispatch.models import Shipment

    with stack.runtime("dispatch").unit_of_work() as session:
        session.execute(
            update(Shipment).values(created_at=datetime.now(UTC) - timedelta(hours=hours))
        )


def stamp(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def deliver(
    client: Any,
    people: dict[str, Account],
    need_id: str,
    expected: int = 1,
) -> list[Any]:
    """The planned shipments of a need, once every allocation of it is on one, picked up
    and delivered (as a coordinator). Returns them as they now are."""

    def planned() -> list[dict[str, Any]] | None:
        found = list_shipments(client, people["coordinator"], need_id=need_id)
        carried = sum(len(s["lines"]) for s in found)
        reserved = get_as(
            client, "/api/v1/allocations", people["coordinator"], need_id=need_id, status="reserved"
        )["items"]
        return found if len(found) == expected and carried == len(reserved) > 0 else None

    found = eventually(planned, timeout=60)
    # Picked up and delivered minutes ago (just planned: a scan from hours back would
    # be dated before the shipment existed).
    delivered = []
    for shipment in found:
        for status, hours in (("picked_up", 0.04), ("delivered", 0.02)):
            post_as(
                client,
                f"/api/v1/shipments/{shipment['id']}/events",
                {"status": status, "occurred_at": stamp(hours)},
                people["coordinator"],
            )
        delivered.append(
            get_as(client, f"/api/v1/shipments/{shipment['id']}", people["coordinator"])
        )
    assert all(s["status"] == "delivered" for s in delivered)
    return delivered


def receipt_lines(shipment: dict[str, Any], **figures: int) -> list[dict[str, Any]]:
    """Every line of the shipment with the same figures (for one-line shipments)."""
    return [
        {
            "shipment_line_id": line["id"],
            "accepted": figures.get("accepted", line["quantity"]),
            "damaged": figures.get("damaged", 0),
            "short": figures.get("short", 0),
        }
        for line in shipment["lines"]
    ]


def outbox_events(stack: Stack, type: str) -> list[dict[str, Any]]:
    rt = stack.runtime("dispatch")
    assert rt.models is not None
    outbox = rt.models.outbox
    with rt.session_factory() as session:
        rows = session.scalars(select(outbox).where(outbox.type == type)).all()
        return [dict(row.message) for row in rows]
