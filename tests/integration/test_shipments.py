"""Shipments through the gateway on real donations and dispatch workers: consolidation
of reserved allocations (on its own and by a coordinator), every status with its history,
late and duplicate scans, a scanner's batch, lost and returned shipments giving their
quantity back to matching, and the overdue watch."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, select

from services.dispatch.models import Allocation, Shipment
from services.dispatch.models import messaging as dispatch_messaging
from services.dispatch.shipments.tasks import flag_overdue_shipments
from services.donations.models import Reservation
from shared.db import utcnow
from tests.support.auth import Account
from tests.support.shipping import (
    COMMUNITY_AT,
    HOSPITAL_AT,
    allocations_in,
    assign_carrier,
    backdate_shipments,
    call_as,
    list_shipments,
    post_as,
    reserved,
    shipment_event,
)
from tests.support.stack import Stack, eventually
from tests.support.world import need_line, pledge_line, saga_world


def _reservations(stack: Stack) -> dict[str, str]:
    with stack.runtime("donations").session_factory() as session:
        return {str(r.allocation_id): r.status for r in session.scalars(select(Reservation))}


def test_reserved_allocations_are_consolidated_and_go_through_every_status(
    stack: Stack,
) -> None:
    people = saga_world(stack, carriers=True)
    client = stack.client()
    pledge, (need,) = reserved(
        stack,
        people,
        {"mask": 1000, "gloves_exam": 500},
        [("hospital", {"mask": 300, "gloves_exam": 200}, HOSPITAL_AT)],
    )
    # Both allocations leave one place for one place: one planned shipment, two lines.
    shipment = eventually(
        lambda: next(
            (s for s in list_shipments(client, people["coordinator"]) if len(s["lines"]) == 2), None
        ),
        timeout=60,
    )
    assert shipment["status"] == "planned"
    assert {(line["item"], line["quantity"]) for line in shipment["lines"]} == {
        ("mask", 300),
        ("gloves_exam", 200),
    }
    assert shipment["destination"]["address"] == HOSPITAL_AT["address"]
    assert [h["status"] for h in shipment["history"]] == ["planned"]
    assert len(list_shipments(client, people["coordinator"])) == 1
    # The donor and the recipient see it; no logistics company is assigned yet.
    assert [s["id"] for s in list_shipments(client, people["donor"])] == [shipment["id"]]
    assert [s["id"] for s in list_shipments(client, people["hospital"], need_id=need["id"])] == [
        shipment["id"]
    ]
    assert list_shipments(client, people["community"]) == []
    assert list_shipments(client, people["carrier"]) == []

    # Assigning takes the ETag: 428 without, 412 when stale.
    url = f"/api/v1/shipments/{shipment['id']}"
    body = {"logistics_org_id": people["carrier"].org_id}
    call_as(client, "PATCH", url, people["coordinator"], 428, json=body)
    call_as(
        client, "PATCH", url, people["coordinator"], 412, json=body, headers={"If-Match": '"0"'}
    )
    call_as(client, "PATCH", url, people["donor"], 403, json=body, headers={"If-Match": "*"})
    bad = call_as(
        client,
        "PATCH",
        url,
        people["coordinator"],
        422,
        json={"logistics_org_id": people["donor"].org_id},
        headers={"If-Match": "*"},
    )
    assert "logistics_org_id" in bad.json["errors"]
    assigned = assign_carrier(client, shipment, people)
    assert assigned["logistics_org_id"] == people["carrier"].org_id
    assert assigned["version"] > shipment["version"]
    # A write's answer is the shipment as a read shows it, the donor's name included.
    read = call_as(client, "GET", url, people["coordinator"], 200).json
    assert assigned == read and read["donor_name"]
    assert [s["id"] for s in list_shipments(client, people["carrier"])] == [shipment["id"]]
    assert list_shipments(client, people["rival"]) == []

    # Another company's staff cannot touch it; the donor sees it but does not update it.
    # Scans follow the plan, a few seconds apart (never beyond the clock skew ahead).
    start = utcnow()
    shipment_event(client, shipment["id"], people["rival"], "picked_up", start, 404)
    shipment_event(client, shipment["id"], people["donor"], "picked_up", start, 403)
    # Nothing from the future, and only a receipt makes it received.
    future = shipment_event(
        client, shipment["id"], people["carrier"], "picked_up", utcnow() + timedelta(hours=1), 422
    )
    assert "occurred_at" in future["errors"]

    steps = [
        ("ready_for_pickup", "Futian warehouse"),
        ("picked_up", "Futian warehouse"),
        ("in_transit", "Shenzhen-Wuhan expressway"),
        ("held", "Wuhan checkpoint"),
        ("in_transit", "Wuhan ring road"),
        ("out_for_delivery", "Jiefang Avenue"),
        ("delivered", "Jiefang Avenue"),
    ]
    for n, (status, where) in enumerate(steps):
        done = shipment_event(
            client,
            shipment["id"],
            people["carrier"],
            status,
            start + timedelta(seconds=10 * n),
            location=where,
        )
        assert done["outcome"] == "applied", done
        assert done["shipment"]["status"] == status
        # The answer is the shipment as a read shows it after the update.
        assert done["shipment"] == call_as(client, "GET", url, people["carrier"], 200).json
        assert done["shipment"]["donor_name"] == read["donor_name"]
        if status == "picked_up":
            # It has left: the allocations shipped and the need line counts them so.
            assert {a.status for a in allocations_in(stack)} == {"shipped"}
            mask_line = next(line for line in need["lines"] if line["item"] == "mask")
            counted = need_line(stack, mask_line["id"])
            assert (counted.reserved, counted.shipped) == (0, 300)
            # Donations hears of it: the pledge line moves to shipped.
            eventually(lambda: pledge_line(stack, pledge["lines"][0]["id"]).shipped == 300)

    # An impossible transition names both statuses.
    refused = call_as(
        client,
        "POST",
        f"/api/v1/shipments/{shipment['id']}/events",
        people["carrier"],
        409,
        json={"status": "in_transit", "occurred_at": (start + timedelta(seconds=100)).isoformat()},
    ).json
    assert refused["current_status"] == "delivered"
    assert refused["requested_status"] == "in_transit"
    assert "delivered" in refused["detail"] and "in_transit" in refused["detail"]
    received = call_as(
        client,
        "POST",
        f"/api/v1/shipments/{shipment['id']}/events",
        people["coordinator"],
        409,
        json={"status": "received", "occurred_at": (start + timedelta(seconds=100)).isoformat()},
    ).json
    assert received["requested_status"] == "received"

    # A late scan is kept in its place without moving the status back.
    late = shipment_event(
        client,
        shipment["id"],
        people["carrier"],
        "delayed",
        start + timedelta(seconds=25),
        location="Xianning",
    )
    assert late["outcome"] == "late"
    assert late["shipment"]["status"] == "delivered"
    # The same scan again is a duplicate, recorded once.
    again = shipment_event(
        client, shipment["id"], people["carrier"], "delayed", start + timedelta(seconds=25), 200
    )
    assert again["outcome"] == "duplicate"
    assert again["event"]["id"] == late["event"]["id"]

    final = call_as(client, "GET", url, people["hospital"], 200)
    assert final.headers["ETag"] == f'"{final.json["version"]}"'
    history = final.json["history"]
    assert [(h["status"], h["applied"]) for h in history] == [
        ("planned", True),
        *[(status, True) for status, _ in steps[:3]],
        ("delayed", False),
        *[(status, True) for status, _ in steps[3:]],
    ]
    held = next(h for h in history if h["status"] == "held")
    assert held["location"] == "Wuhan checkpoint"
    assert held["actor_org_id"] == people["carrier"].org_id
    assert held["previous_status"] == "in_transit"
    assert held["source"] == "api"
    assert {a.status for a in allocations_in(stack)} == {"delivered"}
    # Donations: delivered, and the shipment's events applied once however often sent.
    eventually(lambda: pledge_line(stack, pledge["lines"][0]["id"]).delivered == 300, timeout=60)
    assert set(_reservations(stack).values()) == {"delivered"}
    line = pledge_line(stack, pledge["lines"][0]["id"])
    assert (line.reserved, line.shipped, line.delivered) == (0, 300, 300)


def test_a_coordinator_consolidates_by_hand_and_an_emptied_plan_is_cancelled(
    stack: Stack,
) -> None:
    people = saga_world(stack, carriers=True)
    client = stack.client()
    _pledge, (need,) = reserved(
        stack,
        people,
        {"mask": 1000, "gloves_exam": 500},
        [("hospital", {"mask": 300, "gloves_exam": 200}, HOSPITAL_AT)],
    )
    planned = eventually(
        lambda: next(
            (s for s in list_shipments(client, people["coordinator"]) if len(s["lines"]) == 2), None
        ),
        timeout=60,
    )
    by_item = {line["item"]: line["allocation_id"] for line in planned["lines"]}
    eta = (utcnow() + timedelta(days=1)).replace(microsecond=0)

    # Refused: someone else, an unknown allocation, a wrong logistics company.
    body = {"allocation_ids": [by_item["mask"]]}
    call_as(client, "POST", "/api/v1/shipments", people["hospital"], 403, json=body)
    unknown = post_as(
        client,
        "/api/v1/shipments",
        {"allocation_ids": [by_item["mask"], str(uuid.uuid4())]},
        people["coordinator"],
        422,
    )
    assert list(unknown["errors"]) == ["allocation_ids.1"]
    wrong = post_as(
        client,
        "/api/v1/shipments",
        {**body, "logistics_org_id": people["hospital"].org_id},
        people["coordinator"],
        422,
    )
    assert "logistics_org_id" in wrong["errors"]
    assert len(list_shipments(client, people["coordinator"])) == 1

    masks = post_as(
        client,
        "/api/v1/shipments",
        {
            **body,
            "logistics_org_id": people["carrier"].org_id,
            "tracking_ref": "EMS-0001",
            "eta": eta.isoformat(),
        },
        people["coordinator"],
    )
    assert [line["allocation_id"] for line in masks["lines"]] == [by_item["mask"]]
    assert masks["status"] == "planned"
    assert masks["tracking_ref"] == "EMS-0001"
    assert datetime.fromisoformat(masks["eta"]) == eta
    assert masks["logistics_org_id"] == people["carrier"].org_id
    left = call_as(client, "GET", f"/api/v1/shipments/{planned['id']}", people["coordinator"], 200)
    assert [line["item"] for line in left.json["lines"]] == ["gloves_exam"]
    assert left.json["status"] == "planned"

    # Taking the last allocation off the old plan cancels it (it carries nothing).
    gloves = post_as(
        client,
        "/api/v1/shipments",
        {"allocation_ids": [by_item["gloves_exam"]]},
        people["coordinator"],
    )
    emptied = call_as(
        client, "GET", f"/api/v1/shipments/{planned['id']}", people["coordinator"], 200
    ).json
    assert emptied["status"] == "cancelled"
    assert emptied["lines"] == []
    # The allocations themselves are untouched, still reserved.
    assert {a.status for a in allocations_in(stack)} == {"reserved"}
    # Both allocations are of one origin and destination: they may go together again.
    together = post_as(
        client,
        "/api/v1/shipments",
        {"allocation_ids": [by_item["mask"], by_item["gloves_exam"]]},
        people["coordinator"],
    )
    assert len(together["lines"]) == 2
    for old in (masks, gloves):
        gone = call_as(client, "GET", f"/api/v1/shipments/{old['id']}", people["coordinator"], 200)
        assert gone.json["status"] == "cancelled"

    # Cancelling a planned shipment with lines gives its need back to matching, and
    # donations releases the reservations.
    cancelled = shipment_event(
        client, together["id"], people["coordinator"], "cancelled", utcnow() - timedelta(minutes=1)
    )
    assert cancelled["outcome"] == "applied"
    assert {a.status for a in allocations_in(stack)} == {"cancelled"}
    mask_line = next(line for line in need["lines"] if line["item"] == "mask")
    assert need_line(stack, mask_line["id"]).reserved == 0
    assert need_line(stack, mask_line["id"]).status == "open"
    eventually(lambda: set(_reservations(stack).values()) == {"released"}, timeout=60)


def _batch_world(stack: Stack) -> tuple[dict[str, Account], list[dict[str, Any]]]:
    """Two shipments (to the hospital and to the community), both for the carrier."""
    people = saga_world(stack, carriers=True)
    client = stack.client()
    reserved(
        stack,
        people,
        {"mask": 1000},
        [("hospital", {"mask": 300}, HOSPITAL_AT), ("community", {"mask": 200}, COMMUNITY_AT)],
    )
    shipments = eventually(
        lambda: (lambda found: found if len(found) == 2 else None)(
            list_shipments(client, people["coordinator"])
        ),
        timeout=60,
    )
    # Planned two days ago: the stories below scan hours back.
    backdate_shipments(stack)
    return people, [assign_carrier(client, s, people) for s in shipments]


def test_a_scanners_batch_keeps_the_good_rows_and_applies_once(stack: Stack) -> None:
    people, (first, second) = _batch_world(stack)
    client = stack.client()
    # A third shipment, assigned to another company.
    start = utcnow()
    stranger_id = str(uuid.uuid4())
    with stack.runtime("dispatch").unit_of_work() as session:
        theirs = session.get(Shipment, uuid.UUID(second["id"]))
        assert theirs is not None
        theirs.logistics_org_id = uuid.UUID(people["rival"].org_id)

    def at(seconds: int) -> str:
        return (start + timedelta(seconds=seconds)).isoformat()

    rows = [
        # Out of order on purpose: the batch is applied in the order things happened.
        {
            "shipment_id": first["id"],
            "status": "in_transit",
            "occurred_at": at(20),
            "location": "Xinyang",
        },
        {"shipment_id": first["id"], "status": "picked_up", "occurred_at": at(10)},
        {"shipment_id": stranger_id, "status": "picked_up", "occurred_at": at(10)},
        {"shipment_id": first["id"], "status": "teleported", "occurred_at": at(30)},
        {"shipment_id": first["id"], "status": "delayed", "occurred_at": "yesterday-ish"},
        {"shipment_id": second["id"], "status": "picked_up", "occurred_at": at(10)},
        {
            "shipment_id": first["id"],
            "status": "delayed",
            "occurred_at": at(40),
            "note": "snow on the G4",
        },
    ]
    url = "/api/v1/shipments/events:batch"
    answer = post_as(client, url, {"events": rows}, people["carrier"], 200)
    assert (answer["rows"], answer["applied"], answer["refused"]) == (7, 3, 4)
    outcomes = [r["outcome"] for r in answer["results"]]
    assert outcomes == ["applied", "applied", "refused", "refused", "refused", "refused", "applied"]
    assert [r["index"] for r in answer["results"]] == list(range(7))
    assert "shipment_id" in answer["results"][2]["errors"]
    assert "status" in answer["results"][3]["errors"]
    assert "occurred_at" in answer["results"][4]["errors"]
    assert "shipment_id" in answer["results"][5]["errors"]
    mine = call_as(client, "GET", f"/api/v1/shipments/{first['id']}", people["carrier"], 200).json
    assert mine["status"] == "delayed"
    assert [h["status"] for h in mine["history"]] == [
        "planned",
        "picked_up",
        "in_transit",
        "delayed",
    ]
    assert all(h["source"] == "batch" for h in mine["history"][1:])
    theirs_now = call_as(
        client, "GET", f"/api/v1/shipments/{second['id']}", people["coordinator"], 200
    ).json
    assert theirs_now["status"] == "planned"

    # The same batch again changes nothing: the good rows are duplicates.
    again = post_as(client, url, {"events": rows}, people["carrier"], 200)
    assert (again["applied"], again["duplicate"], again["refused"]) == (0, 3, 4)
    assert (
        len(
            call_as(client, "GET", f"/api/v1/shipments/{first['id']}", people["carrier"], 200).json[
                "history"
            ]
        )
        == 4
    )

    # As CSV, from the rival company's scanner: its own row lands, the carrier's does not.
    csv_rows = "\n".join(
        [
            "shipment_id,status,occurred_at,location,note",
            f"{second['id']},picked_up,{at(15)},Futian,",
            f"{second['id']},in_transit,{at(25)},Xiaogan,convoy 3",
            f"{first['id']},lost,{at(50)},,",
            f"{second['id']},in_transit,not a time,,",
            f"{second['id']},out_for_delivery,{at(35)},,",
        ]
    )
    csv_answer = call_as(
        client,
        "POST",
        url,
        people["rival"],
        200,
        data=csv_rows.encode(),
        content_type="text/csv",
    ).json
    assert [r["outcome"] for r in csv_answer["results"]] == [
        "applied",
        "applied",
        "refused",
        "refused",
        "applied",
    ]
    assert "occurred_at" in csv_answer["results"][3]["errors"]
    resent = call_as(
        client,
        "POST",
        url,
        people["rival"],
        200,
        data=csv_rows.encode(),
        content_type="text/csv",
    ).json
    assert (resent["applied"], resent["duplicate"], resent["refused"]) == (0, 3, 2)
    theirs_now = call_as(
        client, "GET", f"/api/v1/shipments/{second['id']}", people["rival"], 200
    ).json
    assert theirs_now["status"] == "out_for_delivery"
    assert [h["location"] for h in theirs_now["history"]][1:3] == ["Futian", "Xiaogan"]
    # The carrier's shipment did not get lost by the rival's scanner.
    assert (
        call_as(client, "GET", f"/api/v1/shipments/{first['id']}", people["carrier"], 200).json[
            "status"
        ]
        == "delayed"
    )

    # Malformed batches are refused whole, naming what is wrong.
    bad_header = call_as(
        client,
        "POST",
        url,
        people["carrier"],
        422,
        data=b"id,when\n1,2\n",
        content_type="text/csv",
    ).json
    assert "header" in bad_header["errors"]
    call_as(client, "POST", url, people["donor"], 403, json={"events": []})


def test_a_batch_reads_the_shipments_it_names_together(stack: Stack) -> None:
    """A scanner's batch naming its shipments by id reads them in one statement, not
    each on its own with its lines and history; each is then locked as its row is
    applied, and the batch answers as before."""
    from sqlalchemy import event

    people, (first, second) = _batch_world(stack)
    client = stack.client()
    start = utcnow()
    rows = [
        {
            "shipment_id": shipment["id"],
            "status": "picked_up",
            "occurred_at": (start + timedelta(seconds=n)).isoformat(),
        }
        for n, shipment in enumerate((first, second, first), start=1)
    ]
    rows[2]["status"] = "in_transit"
    engine = stack.runtime("dispatch").engine
    reads: list[str] = []

    def saw(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        flat = " ".join(statement.split()).lower()
        # A shipment loaded whole (its tracking number too); not the state re-read under
        # its lock.
        whole = "shipments.tracking_number" in flat
        if flat.startswith("select") and "from shipments" in flat and whole:
            reads.append(flat)
        if flat.startswith("select") and "from shipment_events" in flat and " in (" in flat:
            reads.append(flat)

    event.listen(engine, "before_cursor_execute", saw)
    try:
        answer = post_as(
            client, "/api/v1/shipments/events:batch", {"events": rows}, people["carrier"], 200
        )
    finally:
        event.remove(engine, "before_cursor_execute", saw)
    assert (answer["rows"], answer["applied"]) == (3, 3)
    # One read of both shipments; no history read for them (a batch does not show it).
    shipment_reads = [r for r in reads if "from shipments" in r]
    assert len(shipment_reads) == 1, reads
    assert not [r for r in reads if "from shipment_events" in r], reads
    mine = call_as(client, "GET", f"/api/v1/shipments/{first['id']}", people["carrier"], 200).json
    assert [h["status"] for h in mine["history"]] == ["planned", "picked_up", "in_transit"]


def test_a_carrier_taken_off_a_shipment_during_its_batch_cannot_move_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch reads its shipments before locking any: one given to another company
    meanwhile is refused when its row comes, under its lock, and the others go on."""
    from sqlalchemy import update

    from services.dispatch.shipments import service as shipments_service

    rt = stack.runtime("dispatch")
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("on SQLite the batch's transaction holds the one write lock from its start")
    people, (first, second) = _batch_world(stack)
    real = shipments_service._preload

    def preload_then_reassign(session: Any, references: Any) -> Any:
        found = real(session, references)
        with rt.engine.begin() as other:
            other.execute(
                update(Shipment)
                .where(Shipment.id == uuid.UUID(first["id"]))
                .values(logistics_org_id=uuid.UUID(people["rival"].org_id))
            )
        return found

    monkeypatch.setattr(shipments_service, "_preload", preload_then_reassign)
    start = utcnow()
    rows = [
        {"shipment_id": first["id"], "status": "picked_up", "occurred_at": start.isoformat()},
        {"shipment_id": second["id"], "status": "picked_up", "occurred_at": start.isoformat()},
    ]
    answer = post_as(
        stack.client(), "/api/v1/shipments/events:batch", {"events": rows}, people["carrier"], 200
    )
    assert [r["outcome"] for r in answer["results"]] == ["refused", "applied"]
    assert answer["results"][0]["errors"] == {
        "shipment_id": ["This shipment is not yours to update."]
    }
    with rt.session_factory() as session:
        taken = session.get(Shipment, uuid.UUID(first["id"]))
        assert taken is not None and taken.status == "planned"


def test_an_update_dated_before_the_shipment_existed_is_refused(stack: Stack) -> None:
    people = saga_world(stack, carriers=True)
    client = stack.client()
    reserved(stack, people, {"mask": 100}, [("hospital", {"mask": 100}, HOSPITAL_AT)])
    (shipment,) = eventually(lambda: list_shipments(client, people["coordinator"]), timeout=60)
    assign_carrier(client, shipment, people)
    refused = shipment_event(
        client,
        shipment["id"],
        people["carrier"],
        "picked_up",
        utcnow() - timedelta(hours=16),
        code=422,
    )
    assert refused["type"].endswith("/update-before-shipment")
    assert "before the shipment was created" in refused["errors"]["occurred_at"][0]
    # Sent in Beijing time, a refusal answers in Beijing time: the time sent and the
    # moment it is compared with, both in +08:00.
    beijing = timezone(timedelta(hours=8))
    for at, said in (
        (utcnow() + timedelta(hours=2), "is ahead of"),
        (utcnow() - timedelta(hours=16), "is before the shipment was created"),
    ):
        refused = shipment_event(
            client, shipment["id"], people["carrier"], "picked_up", at.astimezone(beijing), 422
        )
        (why,) = refused["errors"]["occurred_at"]
        assert said in why
        assert why.count("+08:00") == 2 and "+00:00" not in why, why
        assert why.startswith(at.astimezone(beijing).isoformat(timespec="seconds")), why
    current = client.get(f"/api/v1/shipments/{shipment['id']}", headers=people["carrier"].headers)
    assert current.json["status"] == "planned"
    assert [h["status"] for h in current.json["history"]] == ["planned"]
    # A scanner's clock a minute behind is no reason to refuse.
    shipment_event(
        client, shipment["id"], people["carrier"], "picked_up", utcnow() - timedelta(minutes=1)
    )


def test_every_shipment_has_a_tracking_number_that_scanners_and_searches_take(
    stack: Stack,
) -> None:
    people, (first, second) = _batch_world(stack)
    client = stack.client()
    numbers = [first["tracking_number"], second["tracking_number"]]
    year = utcnow().year
    assert all(re.fullmatch(rf"AL-{year}-\d{{6}}", n) for n in numbers), numbers
    assert len(set(numbers)) == 2
    # Found by the number (in any case) or by the carrier's own waybill number.
    by_number = list_shipments(client, people["carrier"], tracking=numbers[0].lower())
    assert [s["id"] for s in by_number] == [first["id"]]
    assert list_shipments(client, people["rival"], tracking=numbers[0]) == []
    assert len(list_shipments(client, people["coordinator"], tracking="SF1234567890")) == 2
    # A scanner reads the number off the waybill.
    scanned = post_as(
        client,
        "/api/v1/shipments/events:batch",
        {
            "events": [
                {
                    "shipment_id": numbers[0],
                    "status": "picked_up",
                    "occurred_at": (utcnow() - timedelta(minutes=5)).isoformat(),
                },
                {
                    "shipment_id": "AL-1999-000001",
                    "status": "picked_up",
                    "occurred_at": (utcnow() - timedelta(minutes=5)).isoformat(),
                },
            ]
        },
        people["carrier"],
        200,
    )
    assert [r["outcome"] for r in scanned["results"]] == ["applied", "refused"]
    assert scanned["results"][0]["shipment_id"] == first["id"]
    assert "AL-1999-000001" in scanned["results"][1]["reason"]
    csv = f"shipment_id,status,occurred_at\n{numbers[1]},picked_up,{utcnow().isoformat()}\n"
    sent = call_as(
        client,
        "POST",
        "/api/v1/shipments/events:batch",
        people["carrier"],
        200,
        data=csv,
        headers={"Content-Type": "text/csv"},
    )
    assert [r["outcome"] for r in sent.json["results"]] == ["applied"]


def test_lost_returns_the_quantity_to_matching_and_returned_to_the_donor(stack: Stack) -> None:
    people, shipments = _batch_world(stack)
    client = stack.client()
    by_recipient = {s["recipient_org_id"]: s for s in shipments}
    to_hospital = by_recipient[people["hospital"].org_id]
    to_community = by_recipient[people["community"].org_id]
    donated = to_hospital["lines"][0]["pledge_line_id"]
    start = utcnow() - timedelta(hours=2)
    for shipment in (to_hospital, to_community):
        shipment_event(client, shipment["id"], people["carrier"], "picked_up", start)
        shipment_event(
            client, shipment["id"], people["carrier"], "in_transit", start + timedelta(minutes=30)
        )
    eventually(lambda: pledge_line(stack, donated).shipped == 500, timeout=60)

    lost = shipment_event(
        client,
        to_hospital["id"],
        people["carrier"],
        "lost",
        start + timedelta(hours=1),
        note="truck overturned",
    )
    assert lost["outcome"] == "applied"
    hospital_line = need_line(stack, to_hospital["lines"][0]["need_line_id"])
    # The need line is open again for exactly what was lost.
    assert (hospital_line.reserved, hospital_line.shipped, hospital_line.status) == (0, 0, "open")
    with stack.runtime("dispatch").session_factory() as session:
        allocation = session.get(Allocation, uuid.UUID(to_hospital["lines"][0]["allocation_id"]))
        assert allocation is not None and allocation.status == "lost"
    # Lost is final.
    shipment_event(
        client, to_hospital["id"], people["carrier"], "in_transit", start + timedelta(hours=2), 409
    )

    returned = shipment_event(
        client, to_community["id"], people["carrier"], "returned", start + timedelta(hours=1)
    )
    assert returned["outcome"] == "applied"
    community_line = need_line(stack, to_community["lines"][0]["need_line_id"])
    assert (community_line.shipped, community_line.status) == (0, "open")

    # Donations: the lost units stay shipped (they are gone); the returned ones are the
    # donor's to give again.
    def settled() -> bool:
        reservations = _reservations(stack)
        return (
            reservations.get(to_hospital["lines"][0]["allocation_id"]) == "lost"
            and reservations.get(to_community["lines"][0]["allocation_id"]) == "released"
        )

    eventually(settled, timeout=60)
    line = pledge_line(stack, donated)
    assert (line.reserved, line.shipped, line.delivered) == (0, 300, 0)
    assert line.quantity - line.reserved - line.shipped == 700


def test_overdue_shipments_are_flagged_once_and_cleared_by_the_next_update(
    stack: Stack,
) -> None:
    people, (first, second) = _batch_world(stack)
    client = stack.client()
    rt = stack.runtime("dispatch")
    # The first is past its ETA; the second only goes stale a day later.
    eta = utcnow() + timedelta(hours=2)
    call_as(
        client,
        "PATCH",
        f"/api/v1/shipments/{first['id']}",
        people["coordinator"],
        200,
        json={"eta": eta.isoformat()},
        headers={"If-Match": "*"},
    )
    shipment_event(
        client, second["id"], people["carrier"], "picked_up", utcnow() - timedelta(hours=1)
    )

    assert flag_overdue_shipments(rt, now=utcnow()) == 0
    assert flag_overdue_shipments(rt, now=utcnow() + timedelta(hours=3)) == 1
    # Once flagged, a later run does not flag it again.
    assert flag_overdue_shipments(rt, now=utcnow() + timedelta(hours=4)) == 0
    flagged = list_shipments(client, people["coordinator"], overdue="true")
    assert [s["id"] for s in flagged] == [first["id"]]
    assert flagged[0]["overdue_reason"].startswith("past_eta")
    assert [s["id"] for s in list_shipments(client, people["coordinator"], overdue="false")] == [
        second["id"]
    ]
    # No update for a day.
    assert flag_overdue_shipments(rt, now=utcnow() + timedelta(hours=25)) == 1
    with rt.session_factory() as session:
        outbox = dispatch_messaging.outbox
        events = [
            row.message
            for row in session.scalars(
                select(outbox).where(outbox.type == "shipment.overdue").order_by(outbox.created_at)
            )
        ]
    assert [e["payload"]["shipment_id"] for e in events] == [first["id"], second["id"]]
    assert events[1]["payload"]["reason"].startswith("stale")
    assert events[0]["payload"]["logistics_org_id"] == people["carrier"].org_id

    # The next applied update clears the flag.
    shipment_event(
        client, first["id"], people["carrier"], "picked_up", utcnow() - timedelta(minutes=5)
    )
    assert [s["id"] for s in list_shipments(client, people["coordinator"], overdue="true")] == [
        second["id"]
    ]
    # Beat's task, on the real worker: a shipment whose ETA has just passed is flagged.
    call_as(
        client,
        "PATCH",
        f"/api/v1/shipments/{first['id']}",
        people["coordinator"],
        200,
        json={"eta": (utcnow() - timedelta(minutes=1)).isoformat()},
        headers={"If-Match": "*"},
    )
    rt.celery.send_task("dispatch.flag_overdue_shipments", queue="dispatch")
    eventually(
        lambda: (
            first["id"]
            in {s["id"] for s in list_shipments(client, people["coordinator"], overdue="true")}
        ),
        timeout=60,
    )


def test_an_allocation_joining_a_shipment_as_its_pickup_is_recorded_leaves_with_it(
    stack: Stack,
) -> None:
    """A carrier's update reads the shipment, then takes its row lock; an allocation
    reserved meanwhile joins the planned shipment (under that lock) and commits first.
    The update ships what the shipment carries once it holds the lock, not the lines it
    had read before: no allocation stays behind, reserved, on a shipment in transit."""
    from services.dispatch.models import ShipmentLine
    from services.dispatch.shipments.service import plan_allocations, record_update

    rt = stack.runtime("dispatch")
    if rt.session_factory.kw["bind"].dialect.name == "sqlite":
        pytest.skip("on SQLite a writer's transaction begins with the database's write lock")
    people = saga_world(stack, carriers=True)
    reserved(
        stack,
        people,
        {"mask": 1000},
        [("hospital", {"mask": 300}, HOSPITAL_AT), ("hospital", {"mask": 100}, HOSPITAL_AT)],
    )
    client = stack.client()
    (shipment,) = eventually(
        lambda: (lambda found: found if len(found) == 1 and len(found[0]["lines"]) == 2 else None)(
            list_shipments(client, people["coordinator"])
        ),
        timeout=60,
    )
    late = uuid.UUID(shipment["lines"][1]["allocation_id"])
    # The second allocation as if reserved a moment after the first: not on it yet.
    with rt.unit_of_work() as session:
        session.execute(delete(ShipmentLine).where(ShipmentLine.allocation_id == late))
    with rt.unit_of_work() as session:
        loaded = session.get_one(Shipment, uuid.UUID(shipment["id"]))
        assert len(loaded.lines) == 1
        with rt.unit_of_work() as other:
            joined = plan_allocations(other, rt.outbox, [other.get_one(Allocation, late)])
        assert joined == {late: loaded.id}
        outcome = record_update(
            session, rt.outbox, loaded, status="picked_up", occurred_at=utcnow(), source="api"
        )
        assert outcome.result == "applied"
    statuses = {a.id: a.status for a in allocations_in(stack)}
    assert set(statuses.values()) == {"shipped"} and late in statuses
