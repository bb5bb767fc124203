"""Receipts end to end, through real donations and dispatch workers: a pledge is
matched, reserved, consolidated into a shipment, moved to delivered, and the recipient
confirms what arrived. Damaged and short quantity goes back to matching, exactly; a
correction replaces the figures; a receipt is made once and only by its recipient."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.dispatch.models import NeedLine, SupplyLine
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.stack import Stack, eventually


def world(stack: Stack, **extra: str) -> dict[str, Account]:
    """Workers, a coordinator, a verified donor and hospital, and ``extra`` verified
    organisations by name -> kind."""
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    people = {
        "coordinator": coordinator(client, boss),
        "donor": verified(client, boss, kind="foundation", region="4403"),
        "hospital": verified(client, boss, kind="hospital", region="420103"),
    }
    for name, kind in extra.items():
        people[name] = verified(client, boss, kind=kind, region="420102")
    return people


def post(client: Any, url: str, body: dict[str, Any], who: Account, status: int = 201) -> Any:
    response = client.post(url, json=body, headers=who.headers)
    assert response.status_code == status, response.json
    return response.json


def get(client: Any, url: str, who: Account | None = None, **query: Any) -> Any:
    response = client.get(url, query_string=query or None, headers=who.headers if who else {})
    assert response.status_code == 200, response.json
    return response.json


def pledge(
    client: Any, who: Account, quantity: int, item: str = "mask", **fields: Any
) -> dict[str, Any]:
    unit = "pair" if item == "gloves_exam" else "piece"
    body = {
        "lines": [{"item": item, "quantity": str(quantity), "unit": unit}],
        "origin": {"region": "4403", "address": "Futian warehouse"},
        **fields,
    }
    made: dict[str, Any] = post(client, "/api/v1/pledges", body, who)
    return made


def need(
    client: Any, who: Account, quantity: int, region: str = "420103", item: str = "mask"
) -> dict[str, Any]:
    unit = "pair" if item == "gloves_exam" else "piece"
    made: dict[str, Any] = post(
        client,
        "/api/v1/needs",
        {
            "lines": [
                {"item": item, "quantity": str(quantity), "unit": unit, "urgency": "critical"}
            ],
            "location": {"region": region, "address": "ward 3"},
        },
        who,
    )
    assert made["status"] == "open", made
    return made


def supply_known(stack: Stack, made: dict[str, Any]) -> None:
    def known() -> bool:
        with stack.runtime("dispatch").session_factory() as session:
            line = session.get(SupplyLine, uuid.UUID(made["lines"][0]["id"]))
            return line is not None and line.pledge_version >= made["version"]

    eventually(known, timeout=60)


def match(client: Any, people: dict[str, Account], item: str = "mask") -> dict[str, Any]:
    run: dict[str, Any] = post(
        client, "/api/v1/matching/runs", {"dry_run": False, "items": [item]}, people["coordinator"]
    )
    assert run["status"] == "applied", run
    return run


def shipments_of(client: Any, who: Account, **query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(client, "/api/v1/shipments", who, **query)["items"]
    return items


def stamp(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def deliver(client: Any, people: dict[str, Account], need_id: str, expected: int = 1) -> list[Any]:
    """The planned shipments of a need, once every allocation of it is on one, picked up
    and delivered (as a coordinator). Returns them as they now are."""

    def planned() -> list[dict[str, Any]] | None:
        found = shipments_of(client, people["coordinator"], need_id=need_id)
        carried = sum(len(s["lines"]) for s in found)
        reserved = get(
            client, "/api/v1/allocations", people["coordinator"], need_id=need_id, status="reserved"
        )["items"]
        return found if len(found) == expected and carried == len(reserved) > 0 else None

    found = eventually(planned, timeout=60)
    delivered = []
    for shipment in found:
        for status, hours in (("picked_up", 3), ("delivered", 2)):
            post(
                client,
                f"/api/v1/shipments/{shipment['id']}/events",
                {"status": status, "occurred_at": stamp(hours)},
                people["coordinator"],
            )
        delivered.append(get(client, f"/api/v1/shipments/{shipment['id']}", people["coordinator"]))
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


def need_line(stack: Stack, line_id: str) -> NeedLine:
    with stack.runtime("dispatch").session_factory() as session:
        line = session.get(NeedLine, uuid.UUID(line_id))
        assert line is not None
        return line


def outbox_events(stack: Stack, type: str) -> list[dict[str, Any]]:
    rt = stack.runtime("dispatch")
    assert rt.models is not None
    outbox = rt.models.outbox
    with rt.session_factory() as session:
        rows = session.scalars(select(outbox).where(outbox.type == type)).all()
        return [dict(row.message) for row in rows]


def test_damage_reopens_exactly_that_quantity_and_matching_allocates_it_again(
    stack: Stack,
) -> None:
    people = world(stack, stranger="hospital")
    client = stack.client()
    first = pledge(client, people["donor"], 100)
    wanted = need(client, people["hospital"], 100)
    supply_known(stack, first)
    match(client, people)
    (shipment,) = deliver(client, people, wanted["id"])
    line_id = wanted["lines"][0]["id"]
    assert need_line(stack, line_id).shipped == 100

    # Only the recipient (or a coordinator) confirms: another hospital does not even see
    # the shipment, the donor sees it but may not confirm it.
    body = {"lines": receipt_lines(shipment, accepted=90, damaged=6, short=4)}
    url = f"/api/v1/shipments/{shipment['id']}/receipt"
    assert client.post(url, json=body, headers=people["stranger"].headers).status_code == 404
    assert client.post(url, json=body, headers=people["donor"].headers).status_code == 403

    receipt = post(client, url, body, people["hospital"])
    assert receipt["sequence"] == 1 and receipt["corrects"] is None
    assert [(x["accepted"], x["damaged"], x["short"]) for x in receipt["lines"]] == [(90, 6, 4)]

    line = need_line(stack, line_id)
    assert (line.received, line.shipped, line.reserved, line.proposed) == (90, 90, 0, 0)
    shown = get(client, f"/api/v1/needs/{wanted['id']}", people["hospital"])
    assert shown["lines"][0]["open"] == 10
    assert shown["lines"][0]["received"] == 90
    assert shown["status"] == "partially_allocated"
    moved = get(client, f"/api/v1/shipments/{shipment['id']}", people["hospital"])
    assert moved["status"] == "received"
    assert moved["history"][-1]["status"] == "received"
    allocation = get(client, "/api/v1/allocations", people["hospital"], need_id=wanted["id"])
    assert [a["status"] for a in allocation["items"]] == ["received"]

    # Once: a second first receipt is refused and changes nothing.
    again = client.post(url, json=body, headers=people["hospital"].headers)
    assert again.status_code == 409, again.json
    assert again.json["receipt_id"] == receipt["id"]
    assert need_line(stack, line_id).received == 90

    (confirmed,) = outbox_events(stack, "receipt.confirmed")
    payload = confirmed["payload"]
    assert payload["receipt_id"] == receipt["id"]
    assert payload["shipment_id"] == shipment["id"]
    assert payload["sequence"] == 1 and payload["corrects"] is None
    assert payload["lines"][0]["allocation_id"] == shipment["lines"][0]["allocation_id"]
    assert payload["lines"][0]["pledge_line_id"] == first["lines"][0]["id"]
    assert payload["lines"][0]["need_line_id"] == line_id
    assert (payload["lines"][0]["damaged"], payload["lines"][0]["short"]) == (6, 4)

    # The ten go back to matching, and only the ten: a new pledge of 50 covers them.
    second = pledge(client, people["donor"], 50)
    supply_known(stack, second)
    run = match(client, people)
    assert [(a["need_line_id"], a["quantity"]) for a in run["allocations"]] == [(line_id, 10)]
    eventually(lambda: need_line(stack, line_id).reserved == 10, timeout=60)

    # With the ten allocated again, a correction may no longer take them back.
    taken_back = client.post(
        url,
        json={
            "corrects": receipt["id"],
            "lines": receipt_lines(shipment, accepted=100, damaged=0, short=0),
        },
        headers=people["hospital"].headers,
    )
    assert taken_back.status_code == 409, taken_back.json
    assert "lines.0.accepted" in taken_back.json["errors"]
    line = need_line(stack, line_id)
    assert (line.received, line.shipped, line.reserved) == (90, 90, 10)


def test_a_short_delivery_corrected_later_fulfils_the_need(stack: Stack) -> None:
    people = world(stack)
    client = stack.client()
    made = pledge(client, people["donor"], 100)
    wanted = need(client, people["hospital"], 100)
    supply_known(stack, made)
    match(client, people)
    (shipment,) = deliver(client, people, wanted["id"])
    line_id = wanted["lines"][0]["id"]
    url = f"/api/v1/shipments/{shipment['id']}/receipt"

    # Two clients confirm at the same moment: exactly one receipt is taken.
    answers: list[int] = []
    body = {"lines": receipt_lines(shipment, accepted=70, short=30), "note": "3 cartons missing"}

    def confirm() -> None:
        answer = stack.client().post(url, json=body, headers=people["hospital"].headers)
        answers.append(answer.status_code)

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201, 409]
    listed = get(client, f"/api/v1/shipments/{shipment['id']}/receipts", people["hospital"])
    assert listed["receipt_status"] == "confirmed"
    (first,) = listed["items"]
    line = need_line(stack, line_id)
    assert (line.received, line.shipped, line.status) == (70, 70, "partially_allocated")

    # A correction must name the latest receipt.
    stale = client.post(
        url,
        json={"corrects": str(uuid.uuid4()), "lines": receipt_lines(shipment)},
        headers=people["hospital"].headers,
    )
    assert stale.status_code == 409 and "corrects" in stale.json["errors"]

    # The cartons turn up: the correction replaces the figures, exactly.
    corrected = post(
        client,
        url,
        {"corrects": first["id"], "lines": receipt_lines(shipment, accepted=100, short=0)},
        people["coordinator"],
    )
    assert corrected["sequence"] == 2 and corrected["corrects"] == first["id"]
    line = need_line(stack, line_id)
    assert (line.received, line.shipped, line.status) == (100, 100, "fulfilled")
    shown = get(client, f"/api/v1/needs/{wanted['id']}", people["hospital"])
    assert shown["status"] == "fulfilled"
    assert [e["payload"]["id"] for e in outbox_events(stack, "need.fulfilled")] == [wanted["id"]]
    listed = get(client, f"/api/v1/shipments/{shipment['id']}/receipts", people["hospital"])
    assert listed["receipt_status"] == "corrected"
    assert [r["sequence"] for r in listed["items"]] == [1, 2]
    events = outbox_events(stack, "receipt.confirmed")
    assert sorted(e["payload"]["sequence"] for e in events) == [1, 2]

    # Correcting the superseded receipt is refused.
    old = client.post(
        url,
        json={"corrects": first["id"], "lines": receipt_lines(shipment)},
        headers=people["hospital"].headers,
    )
    assert old.status_code == 409 and "corrects" in old.json["errors"]


def test_bad_receipts_name_the_field_and_change_nothing(stack: Stack) -> None:
    people = world(stack)
    client = stack.client()
    made = pledge(client, people["donor"], 40)
    wanted = need(client, people["hospital"], 40)
    supply_known(stack, made)
    match(client, people)

    # Not delivered yet: nothing to confirm.
    planned = eventually(
        lambda: shipments_of(client, people["coordinator"], need_id=wanted["id"]), timeout=60
    )
    early = client.post(
        f"/api/v1/shipments/{planned[0]['id']}/receipt",
        json={"lines": receipt_lines(planned[0])},
        headers=people["hospital"].headers,
    )
    assert early.status_code == 409, early.json
    assert early.json["shipment_status"] == "planned"

    (shipment,) = deliver(client, people, wanted["id"])
    url = f"/api/v1/shipments/{shipment['id']}/receipt"
    line_id = shipment["lines"][0]["id"]

    def refused(lines: Any, field: str, status: int = 422, **extra: Any) -> None:
        answer = client.post(
            url, json={"lines": lines, **extra}, headers=people["hospital"].headers
        )
        assert answer.status_code == status, answer.json
        assert field in answer.json["errors"], answer.json

    one = {"shipment_line_id": line_id, "accepted": 30, "damaged": 5, "short": 5}
    refused([{**one, "damaged": -1, "accepted": 36}], "lines.0.damaged")
    refused([{**one, "short": 2.5}], "lines.0.short")
    refused([{**one, "accepted": "30"}], "lines.0.accepted")
    refused([{key: v for key, v in one.items() if key != "short"}], "lines.0.short")
    refused([{**one, "accepted": 31}], "lines.0")
    refused([{**one, "shipment_line_id": str(uuid.uuid4())}], "lines.0.shipment_line_id")
    refused([one, one], "lines.1.shipment_line_id")
    refused([], "lines")
    refused([one], "corrects", corrects=str(uuid.uuid4()))

    line = need_line(stack, wanted["lines"][0]["id"])
    assert (line.received, line.shipped) == (0, 40)
    assert get(client, f"/api/v1/shipments/{shipment['id']}", people["hospital"])["status"] == (
        "delivered"
    )
    assert outbox_events(stack, "receipt.confirmed") == []
    post(client, url, {"lines": [one]}, people["hospital"])
