"""Receipts end to end, through real donations and dispatch workers: a pledge is
matched, reserved, consolidated into a shipment, moved to delivered, and the recipient
confirms what arrived. Damaged and short quantity goes back to matching, exactly; a
correction replaces the figures; a receipt is made once and only by its recipient."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from tests.support.shipping import (
    await_supply,
    deliver,
    get_as,
    list_shipments,
    match,
    outbox_events,
    post_as,
    post_one_need,
    post_pledge,
    receipt_lines,
)
from tests.support.stack import Stack, eventually
from tests.support.world import need_line, saga_world


def test_damage_reopens_exactly_that_quantity_and_matching_allocates_it_again(
    stack: Stack,
) -> None:
    people = saga_world(stack, stranger="hospital")
    client = stack.client()
    first = post_pledge(client, people["donor"], 100)
    wanted = post_one_need(client, people["hospital"], 100)
    await_supply(stack, first)
    match(client, people)
    (shipment,) = deliver(client, people, wanted["id"])
    line_id = wanted["lines"][0]["id"]
    assert need_line(stack, line_id).shipped == 100
    # Shipped and not yet received: still allocated, in transit, nothing open.
    shown = get_as(client, f"/api/v1/needs/{wanted['id']}", people["hospital"])["lines"][0]
    figures = ("quantity", "allocated", "in_transit", "received", "open", "status")
    assert tuple(shown[k] for k in figures) == (100, 100, 100, 0, 0, "allocated")

    # Only the recipient (or a coordinator) confirms: another hospital does not even see
    # the shipment, the donor sees it but may not confirm it.
    body = {"lines": receipt_lines(shipment, accepted=90, damaged=6, short=4)}
    url = f"/api/v1/shipments/{shipment['id']}/receipt"
    assert client.post(url, json=body, headers=people["stranger"].headers).status_code == 404
    assert client.post(url, json=body, headers=people["donor"].headers).status_code == 403

    receipt = post_as(client, url, body, people["hospital"])
    assert receipt["sequence"] == 1 and receipt["corrects"] is None
    assert [(x["accepted"], x["damaged"], x["short"]) for x in receipt["lines"]] == [(90, 6, 4)]

    line = need_line(stack, line_id)
    assert (line.received, line.shipped, line.reserved, line.proposed) == (90, 90, 0, 0)
    shown = get_as(client, f"/api/v1/needs/{wanted['id']}", people["hospital"])
    assert shown["lines"][0]["open"] == 10
    assert shown["lines"][0]["received"] == 90
    # After the short receipt: 90 allocated and received, the 10 open again.
    assert tuple(shown["lines"][0][k] for k in figures) == (
        100,
        90,
        0,
        90,
        10,
        "partially_allocated",
    )
    assert shown["status"] == "partially_allocated"
    moved = get_as(client, f"/api/v1/shipments/{shipment['id']}", people["hospital"])
    assert moved["status"] == "received"
    assert moved["history"][-1]["status"] == "received"
    allocation = get_as(client, "/api/v1/allocations", people["hospital"], need_id=wanted["id"])
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
    second = post_pledge(client, people["donor"], 50)
    await_supply(stack, second)
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
    people = saga_world(stack)
    client = stack.client()
    made = post_pledge(client, people["donor"], 100)
    wanted = post_one_need(client, people["hospital"], 100)
    await_supply(stack, made)
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
    listed = get_as(client, f"/api/v1/shipments/{shipment['id']}/receipts", people["hospital"])
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
    corrected = post_as(
        client,
        url,
        {"corrects": first["id"], "lines": receipt_lines(shipment, accepted=100, short=0)},
        people["coordinator"],
    )
    assert corrected["sequence"] == 2 and corrected["corrects"] == first["id"]
    line = need_line(stack, line_id)
    assert (line.received, line.shipped, line.status) == (100, 100, "fulfilled")
    shown = get_as(client, f"/api/v1/needs/{wanted['id']}", people["hospital"])
    assert shown["status"] == "fulfilled"
    assert [e["payload"]["id"] for e in outbox_events(stack, "need.fulfilled")] == [wanted["id"]]
    listed = get_as(client, f"/api/v1/shipments/{shipment['id']}/receipts", people["hospital"])
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
    people = saga_world(stack)
    client = stack.client()
    made = post_pledge(client, people["donor"], 40)
    wanted = post_one_need(client, people["hospital"], 40)
    await_supply(stack, made)
    match(client, people)

    # Not delivered yet: nothing to confirm.
    planned = eventually(
        lambda: list_shipments(client, people["coordinator"], need_id=wanted["id"]), timeout=60
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
    assert get_as(client, f"/api/v1/shipments/{shipment['id']}", people["hospital"])["status"] == (
        "delivered"
    )
    assert outbox_events(stack, "receipt.confirmed") == []
    post_as(client, url, {"lines": [one]}, people["hospital"])
