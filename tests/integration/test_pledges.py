"""Pledges through the gateway, and the donations half of the allocation saga on a real
worker: reservations, releases, shipments, expiry."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from services.donations.models import Reservation
from services.donations.models import messaging as donations_messaging
from services.donations.pledges import service
from shared.db import make_engine, make_session_factory, utcnow
from shared.outbox import Outbox
from tests.support.auth import Account, admin, register, verified
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually
from tests.support.supply import MASKS_AND_ORANGES, one_line, proposal, send_as_dispatch
from tests.support.world import pledge_line


def _pledge(client: Any, donor: Account, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/pledges", json=body, headers=donor.headers)
    assert response.status_code == 201, response.json
    assert response.headers["ETag"] == f'"{response.json["version"]}"'
    created: dict[str, Any] = response.json
    return created


def _verified_donor(stack: Stack, *, worker: bool = True) -> Account:
    """A verified donor, once the donations service knows it is verified (its worker
    applies the gateway's events)."""
    if worker:
        stack.start_worker("donations")
    client = stack.client()
    donor = verified(client, admin(stack.apps["gateway"], client), kind="foundation")
    donations = stack.runtime("donations")
    eventually(
        lambda: (
            (org := read_model_org(donations, donor.org_id)) is not None
            and org.status == "verified"
        )
    )
    return donor


def _events(stack: Stack, type: str) -> list[dict[str, Any]]:
    rt = stack.runtime("donations")
    outbox = donations_messaging.outbox
    with rt.session_factory() as session:
        rows = session.scalars(
            select(outbox.message).where(outbox.type == type).order_by(outbox.created_at)
        )
        return [dict(m) for m in rows]


FIGURES = ("quantity", "reserved", "shipped", "delivered")


def test_a_donor_pledges_in_boxes_and_tonnes_and_gets_base_units(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    pledge = _pledge(client, donor, MASKS_AND_ORANGES)

    masks, oranges = pledge["lines"]
    assert (masks["quantity"], masks["base_unit"]) == (1000, "piece")
    assert masks["standard"] == "GB19083-2010"
    assert masks["restrictions"]["note"] == "frontline medical staff only"
    assert oranges["quantity"] == 1_500_000 and oranges["base_unit"] == "g"
    assert oranges["best_before"] is not None  # produce keeps for its shelf life
    assert {line["status"] for line in pledge["lines"]} == {"available"}
    assert pledge["status"] == "open"
    assert [e["payload"]["id"] for e in _events(stack, "pledge.created")] == [pledge["id"]]

    got = client.get(f"/api/v1/pledges/{pledge['id']}", headers=donor.headers)
    assert got.status_code == 200
    assert got.headers["ETag"] == '"1"'
    listed = client.get("/api/v1/pledges", headers=donor.headers).json["items"]
    assert [p["id"] for p in listed] == [pledge["id"]]
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    for query, found in (
        ({"item": "fruit"}, [pledge["id"]]),
        ({"item": "rice"}, []),
        ({"line_status": "available", "region": "4403"}, [pledge["id"]]),
        ({"line_status": "reserved"}, []),
        ({"status": "open", "created_before": later}, [pledge["id"]]),
        ({"created_after": later}, []),
        ({"region": "42"}, []),
    ):
        items = client.get("/api/v1/pledges", query_string=query, headers=donor.headers)
        assert [p["id"] for p in items.json["items"]] == found, query
    bad = client.get("/api/v1/pledges", query_string={"region": "Hubei"}, headers=donor.headers)
    assert bad.status_code == 422 and "region" in bad.json["errors"], bad.json
    export = client.get("/api/v1/pledges/export.csv", headers=donor.headers)
    assert export.mimetype == "text/csv"
    rows = export.get_data(as_text=True).splitlines()
    assert rows[0].startswith("pledge_id,org_id,pledge_status")
    assert len(rows) == 3
    assert "_display" not in rows[0]
    # With ?display=true each figure also reads as people read it, after the exact ones.
    for accept, oranges_read in (("zh-CN", "1.5 吨"), ("en", "1.5 t")):
        shown = client.get(
            "/api/v1/pledges/export.csv?display=true",
            headers={**donor.headers, "Accept-Language": accept},
        ).get_data(as_text=True)
        head, *lines = list(csv.reader(io.StringIO(shown)))
        assert head == [*rows[0].split(","), *(f"{f}_display" for f in FIGURES)]
        by_item = {line[head.index("item")]: dict(zip(head, line, strict=True)) for line in lines}
        assert by_item["fruit"]["quantity"] == "1500000"
        assert by_item["fruit"]["quantity_display"] == oranges_read


def test_liquids_are_pledged_by_mass_through_the_density_on_the_label(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    body = {
        "lines": [
            {"item": "disinfectant_84", "quantity": "2", "unit": "t", "density_g_per_l": 1000},
            {"item": "alcohol_75", "quantity": "10", "unit": "kg", "density_g_per_l": 800},
        ],
        "origin": {"region": "4403"},
    }
    pledge = _pledge(client, donor, body)
    assert [(line["quantity"], line["base_unit"]) for line in pledge["lines"]] == [
        (2_000_000, "ml"),
        (12_500, "ml"),
    ]
    refused = client.post(
        "/api/v1/pledges",
        json={
            "lines": [
                {"item": "alcohol_75", "quantity": "10", "unit": "kg"},
                {"item": "alcohol_75", "quantity": "1", "unit": "kg", "density_g_per_l": 877},
                {"item": "mask", "quantity": "1", "unit": "piece", "density_g_per_l": 877},
            ],
            "origin": {"region": "4403"},
        },
        headers=donor.headers,
    )
    assert refused.status_code == 422
    errors = refused.json["errors"]
    assert set(errors) == {
        "lines.0.density_g_per_l",
        "lines.1.quantity",
        "lines.2.density_g_per_l",
    }
    assert "1140.25" in errors["lines.1.quantity"][0]
    listed = client.get("/api/v1/pledges", headers=donor.headers).json["items"]
    assert [p["id"] for p in listed] == [pledge["id"]]


def test_bad_lines_name_the_field_and_nothing_is_written(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    body = {
        "lines": [
            {"item": "mask", "quantity": "1.5", "unit": "piece"},
            {"item": "mask", "quantity": "10", "unit": "kg"},
            {"item": "unobtainium", "quantity": "1", "unit": "piece"},
            {"item": "mask", "quantity": "-3", "unit": "piece"},
            {"item": "mask", "quantity": "2", "unit": "box"},
            {"item": "mask", "standard": "ISO 9999", "quantity": "2", "unit": "piece"},
        ],
        "origin": {"region": "4403"},
    }
    response = client.post("/api/v1/pledges", json=body, headers=donor.headers)
    assert response.status_code == 422
    errors = response.json["errors"]
    assert {
        "lines.0.quantity",
        "lines.1.unit",
        "lines.2.item",
        "lines.3.quantity",
        "lines.4.pack_size",
        "lines.5.standard",
    } <= set(errors)
    assert client.get("/api/v1/pledges", headers=donor.headers).json["items"] == []
    assert _events(stack, "pledge.created") == []


def test_goods_past_their_best_before_are_refused_and_goods_about_to_spoil_flagged(
    stack: Stack,
) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    today = date.today()
    past = {
        "lines": [
            {"item": "mask", "quantity": "10", "unit": "piece"},
            {
                "item": "fruit",
                "quantity": "1",
                "unit": "t",
                "best_before": str(today - timedelta(days=1)),
            },
        ],
        "origin": {"region": "4201"},
    }
    refused = client.post("/api/v1/pledges", json=past, headers=donor.headers)
    assert refused.status_code == 422
    errors: dict[str, list[str]] = refused.json["errors"]
    assert list(errors) == ["lines.1.best_before"]
    assert "already past" in errors["lines.1.best_before"][0]
    assert _events(stack, "pledge.created") == []

    soon: dict[str, Any] = {
        "lines": [
            {"item": "fruit", "quantity": "1", "unit": "t", "best_before": str(today)},
            {"item": "vegetables", "quantity": "1", "unit": "t"},
        ],
        "origin": {"region": "4201"},
        "available_from": str(today),
    }
    pledge = _pledge(client, donor, soon)
    spoiling, fresh = pledge["lines"]
    assert spoiling["spoils_before_delivery"] is True
    assert fresh["spoils_before_delivery"] is False
    # Goods that keep a week from today, but leave only in six days: flagged too.
    later = _pledge(
        client,
        donor,
        {**soon, "available_from": str(today + timedelta(days=6)), "lines": soon["lines"][1:]},
    )
    assert later["lines"][0]["spoils_before_delivery"] is True

    # An amendment that leaves the date alone is not refused for it once it has passed.
    from services.donations.models import PledgeLine

    donations = stack.runtime("donations")
    with donations.unit_of_work() as session:
        line = session.get(PledgeLine, uuid.UUID(spoiling["id"]))
        assert line is not None
        line.best_before = today - timedelta(days=3)
    current = client.get(f"/api/v1/pledges/{pledge['id']}", headers=donor.headers)
    amended = client.patch(
        f"/api/v1/pledges/{pledge['id']}",
        json={"notes": "loaded at dawn", "lines": [{"id": fresh["id"], "quantity": "2"}]},
        headers={**donor.headers, "If-Match": current.headers["ETag"]},
    )
    assert amended.status_code == 200, amended.json
    moved = client.patch(
        f"/api/v1/pledges/{pledge['id']}",
        json={"lines": [{"id": fresh["id"], "best_before": str(today - timedelta(days=1))}]},
        headers={**donor.headers, "If-Match": amended.headers["ETag"]},
    )
    assert moved.status_code == 422
    assert "lines.0.best_before" in moved.json["errors"]


def test_pledges_are_scoped_to_their_donor(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    donor = register(client, kind="foundation")
    other_donor = register(client, kind="company")
    hospital = register(client, kind="hospital")
    pledge = _pledge(client, donor, one_line(100))

    assert (
        client.get(f"/api/v1/pledges/{pledge['id']}", headers=other_donor.headers).status_code
        == 404
    )
    assert client.get("/api/v1/pledges", headers=other_donor.headers).json["items"] == []
    assert client.get("/api/v1/pledges", headers=hospital.headers).status_code == 403
    assert (
        client.post("/api/v1/pledges", json=one_line(5), headers=hospital.headers).status_code
        == 403
    )
    assert client.get(f"/api/v1/pledges/{pledge['id']}", headers=boss.headers).status_code == 200
    # A coordinator sees every donor's pledges, or one donor's.
    theirs = _pledge(client, other_donor, one_line(7))
    for query, found in (
        ({}, [pledge["id"], theirs["id"]]),
        ({"org_id": other_donor.org_id}, [theirs["id"]]),
    ):
        items = client.get("/api/v1/pledges", query_string=query, headers=boss.headers)
        assert [p["id"] for p in items.json["items"]] == found, query
    # A coordinator pledges on a donor's behalf, naming it.
    on_behalf = client.post(
        "/api/v1/pledges", json={**one_line(5), "org_id": donor.org_id}, headers=boss.headers
    )
    assert on_behalf.status_code == 201
    assert on_behalf.json["org_id"] == donor.org_id
    cancel = client.post(
        f"/api/v1/pledges/{pledge['id']}/cancel", json={}, headers=other_donor.headers
    )
    assert cancel.status_code == 404


def test_amendments_follow_the_lifecycle_rules(stack: Stack) -> None:
    donor = _verified_donor(stack)
    client = stack.client()
    pledge = _pledge(client, donor, one_line(1000))
    line_id = pledge["lines"][0]["id"]
    url = f"/api/v1/pledges/{pledge['id']}"

    no_etag = client.patch(url, json={"notes": "x"}, headers=donor.headers)
    assert no_etag.status_code == 428
    donations = stack.runtime("donations")
    with donations.unit_of_work() as session:
        decision = service.reserve(session, donations.outbox, proposal(pledge, 300), utcnow())
    assert decision.accepted

    stale = client.patch(url, json={"notes": "x"}, headers={**donor.headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    current = client.get(url, headers=donor.headers)
    tag = current.headers["ETag"]
    assert current.json["lines"][0]["reserved"] == 300
    assert current.json["lines"][0]["status"] == "partially_reserved"

    too_low = client.patch(
        url,
        json={"lines": [{"id": line_id, "quantity": "299"}]},
        headers={**donor.headers, "If-Match": tag},
    )
    assert too_low.status_code == 422
    assert "lines.0.quantity" in too_low.json["errors"]
    new_item = client.patch(
        url,
        json={"lines": [{"id": line_id, "item": "goggles", "unit": "piece"}]},
        headers={**donor.headers, "If-Match": tag},
    )
    assert new_item.status_code == 422
    assert "lines.0.item" in new_item.json["errors"]

    lowered = client.patch(
        url,
        json={
            "lines": [
                {"id": line_id, "quantity": "300"},
                {"item": "goggles", "quantity": "40", "unit": "piece"},
            ]
        },
        headers={**donor.headers, "If-Match": tag},
    )
    assert lowered.status_code == 200, lowered.json
    assert lowered.json["lines"][0]["quantity"] == 300
    assert lowered.json["lines"][0]["status"] == "reserved"
    assert lowered.json["lines"][1]["quantity"] == 40
    assert lowered.headers["ETag"] != tag
    assert _events(stack, "pledge.amended")[-1]["payload"]["lines"][0]["quantity"] == 300

    cancelled = client.post(
        f"{url}/cancel", json={"reason": "warehouse flooded"}, headers=donor.headers
    )
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"
    assert {line["status"] for line in cancelled.json["lines"]} == {"cancelled"}
    assert cancelled.json["lines"][0]["reserved"] == 0
    released = _events(stack, "reservation.released")
    assert [e["payload"]["quantity"] for e in released] == [300]
    assert released[0]["payload"]["reason"] == "pledge cancelled"
    again = client.patch(
        url, json={"notes": "x"}, headers={**donor.headers, "If-Match": cancelled.headers["ETag"]}
    )
    assert again.status_code == 409


def test_fifty_concurrent_proposals_never_overcommit_a_line(stack: Stack) -> None:
    donor = _verified_donor(stack)
    pledge = _pledge(stack.client(), donor, one_line(1000))
    donations = stack.runtime("donations")
    # Fifty connections, as fifty worker processes would have between them.
    engine = make_engine(stack.settings.database_url("donations"), pool_size=55, max_overflow=0)
    factory = make_session_factory(engine)
    outbox = Outbox(donations_messaging.outbox, factory, donations.outbox.publisher)
    decisions: list[service.Decision] = []
    failures: list[BaseException] = []
    start = threading.Barrier(50)

    def propose() -> None:
        try:
            start.wait()
            with factory() as session, session.begin():
                decisions.append(service.reserve(session, outbox, proposal(pledge, 30), utcnow()))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=propose) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    engine.dispose()
    assert not failures, failures
    accepted = [d for d in decisions if d.accepted]
    assert len(decisions) == 50
    assert len(accepted) == 33  # 33 x 30 = 990; a 34th would need 1,020
    line = pledge_line(stack, pledge["lines"][0]["id"])
    assert line.reserved == 990 and line.reserved + line.shipped <= line.quantity
    with donations.session_factory() as session:
        total = session.scalar(
            select(func.sum(Reservation.quantity)).where(Reservation.status == "active")
        )
    assert total == 990
    assert len(_events(stack, "reservation.accepted")) == 33
    rejected = _events(stack, "reservation.rejected")
    assert len(rejected) == 17
    assert all(e["payload"]["available"] == 10 for e in rejected)


def test_the_saga_on_a_real_worker_reserves_once_releases_and_ships(stack: Stack) -> None:
    donor = _verified_donor(stack)
    client = stack.client()
    pledge = _pledge(client, donor, one_line(500))
    dispatch = stack.runtime("dispatch")
    line_id = pledge["lines"][0]["id"]

    first = proposal(pledge, 200)
    message = send_as_dispatch(
        dispatch,
        "allocation.proposed",
        first,
        aggregate_id=first["allocation_id"],
        aggregate_version=1,
        version=1,
    )
    eventually(lambda: pledge_line(stack, line_id).reserved == 200)
    # The same event delivered again, and a new event for the same allocation: one reservation.
    dispatch.celery.send_task("donations.handle_event", args=[message], queue="donations")
    send_as_dispatch(
        dispatch,
        "allocation.proposed",
        first,
        aggregate_id=first["allocation_id"],
        aggregate_version=1,
        version=1,
    )
    second = proposal(pledge, 400)  # only 300 left
    send_as_dispatch(
        dispatch,
        "allocation.proposed",
        second,
        aggregate_id=second["allocation_id"],
        aggregate_version=1,
        version=1,
    )
    eventually(lambda: len(_events(stack, "reservation.rejected")) == 1)
    eventually(lambda: _count_inbox(stack) >= 4)
    assert pledge_line(stack, line_id).reserved == 200
    assert len(_events(stack, "reservation.accepted")) == 1
    assert _events(stack, "reservation.rejected")[0]["payload"]["available"] == 300

    # A cancellation that overtakes its proposal: the late proposal is ignored.
    third = proposal(pledge, 100)
    _cancel(dispatch, third, line_id)
    send_as_dispatch(
        dispatch,
        "allocation.proposed",
        third,
        aggregate_id=third["allocation_id"],
        aggregate_version=1,
        version=1,
    )
    eventually(lambda: _count_inbox(stack) >= 6)
    assert pledge_line(stack, line_id).reserved == 200

    # The shipment leaves, then arrives.
    shipment_id = uuid.uuid4()
    shipped = {
        "shipment_id": shipment_id,
        "status": "picked_up",
        "occurred_at": utcnow(),
        "lines": [
            {"allocation_id": first["allocation_id"], "pledge_line_id": line_id, "quantity": 200}
        ],
    }
    send_as_dispatch(
        dispatch, "shipment.status_changed", shipped, aggregate_id=shipment_id, aggregate_version=2
    )
    eventually(lambda: pledge_line(stack, line_id).shipped == 200)
    assert pledge_line(stack, line_id).reserved == 0
    delivered = {**shipped, "status": "delivered", "previous_status": "picked_up"}
    send_as_dispatch(
        dispatch,
        "shipment.status_changed",
        delivered,
        aggregate_id=shipment_id,
        aggregate_version=3,
    )
    eventually(lambda: pledge_line(stack, line_id).delivered == 200)
    line = pledge_line(stack, line_id)
    assert (line.quantity, line.reserved, line.shipped, line.delivered) == (500, 0, 200, 200)
    assert line.status == "partially_delivered"  # 200 of 500 arrived, 300 available


def test_proposals_carried_by_one_event_are_reserved_once_each_and_a_cancelled_one_is_left_out(
    stack: Stack,
) -> None:
    """``allocation.proposed`` version 2 on a real worker: each allocation it carries
    is decided as a version 1 event's would be, in order; one whose cancellation came
    first is left out; the event delivered again changes nothing; a cancellation that
    comes after releases its reservation."""
    donor = _verified_donor(stack)
    client = stack.client()
    pledge = _pledge(client, donor, one_line(500))
    dispatch = stack.runtime("dispatch")
    line_id = pledge["lines"][0]["id"]
    first, overtaken, too_many = proposal(pledge, 200), proposal(pledge, 100), proposal(pledge, 400)
    _cancel(dispatch, overtaken, line_id)
    eventually(lambda: _count_inbox(stack) >= 1)
    message = send_as_dispatch(
        dispatch,
        "allocation.proposed",
        {"allocations": [first, overtaken, too_many]},
        aggregate_id=uuid.uuid4(),
        aggregate_version=1,
    )
    assert message["version"] == 2
    eventually(lambda: len(_events(stack, "reservation.rejected")) == 1)
    dispatch.celery.send_task("donations.handle_event", args=[message], queue="donations")
    eventually(lambda: _count_inbox(stack) >= 3)
    assert pledge_line(stack, line_id).reserved == 200
    [accepted] = _events(stack, "reservation.accepted")
    assert accepted["payload"]["allocation_id"] == str(first["allocation_id"])
    [rejected] = _events(stack, "reservation.rejected")
    assert rejected["payload"]["allocation_id"] == str(too_many["allocation_id"])
    assert rejected["payload"]["available"] == 300
    donations = stack.runtime("donations")
    with donations.session_factory() as session:
        decided = set(session.scalars(select(Reservation.allocation_id)))
    assert overtaken["allocation_id"] not in decided
    # A cancellation after the proposal releases what it reserved.
    _cancel(dispatch, first, line_id)
    eventually(lambda: pledge_line(stack, line_id).reserved == 0)
    assert len(_events(stack, "reservation.released")) == 1


def _cancel(dispatch: Any, allocation: dict[str, Any], line_id: Any) -> None:
    """``allocation.cancelled`` of ``allocation`` (its second event), as dispatch sends it."""
    send_as_dispatch(
        dispatch,
        "allocation.cancelled",
        {
            "allocation_id": allocation["allocation_id"],
            "pledge_line_id": line_id,
            "reason": "need cancelled",
        },
        aggregate_id=allocation["allocation_id"],
        aggregate_version=2,
    )


def _count_inbox(stack: Stack) -> int:
    rt = stack.runtime("donations")
    with rt.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(donations_messaging.inbox)) or 0)


def test_unverified_donors_pledges_are_not_reserved(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation")
    pledge = _pledge(client, donor, one_line(100))
    donations = stack.runtime("donations")
    with donations.unit_of_work() as session:
        decision = service.reserve(session, donations.outbox, proposal(pledge, 10), utcnow())
    assert not decision.accepted
    assert decision.reason == "the donor organisation is not verified"
    assert pledge_line(stack, pledge["lines"][0]["id"]).reserved == 0


def test_perishables_expire_and_overdue_reservations_are_released(stack: Stack) -> None:
    donor = _verified_donor(stack)
    client = stack.client()
    oranges = {
        "lines": [
            {
                "item": "fruit",
                "quantity": "500",
                "unit": "kg",
                "best_before": str(date.today() + timedelta(days=1)),
            },
            {"item": "mask", "quantity": "100", "unit": "piece"},
        ],
        "origin": {"region": "4403"},
    }
    pledge = _pledge(client, donor, oranges)
    donations = stack.runtime("donations")
    with donations.unit_of_work() as session:
        service.reserve(session, donations.outbox, proposal(pledge, 100_000, line=0), utcnow())
        service.reserve(
            session,
            donations.outbox,
            proposal(pledge, 60, line=1, deadline=utcnow() - timedelta(minutes=1)),
            utcnow(),
        )

    with donations.unit_of_work() as session:
        expired = service.expire_perishables(
            session, donations.outbox, date.today() + timedelta(days=2)
        )
    assert expired == 1
    fruit = pledge_line(stack, pledge["lines"][0]["id"])
    assert (fruit.status, fruit.reserved) == ("expired", 0)

    donations.celery.send_task("donations.release_overdue_reservations", queue="donations")
    eventually(lambda: pledge_line(stack, pledge["lines"][1]["id"]).reserved == 0)
    reasons = sorted(e["payload"]["reason"] for e in _events(stack, "reservation.released"))
    assert reasons == ["not shipped by its deadline", "past best-before"]


def test_goods_picked_up_after_their_reservation_lapsed_are_taken_back_if_still_there(
    stack: Stack,
) -> None:
    """The deadline release and the pickup race; the road wins when the line can."""
    donor = _verified_donor(stack)
    pledge = _pledge(stack.client(), donor, one_line(100))
    line_id = pledge["lines"][0]["id"]
    donations = stack.runtime("donations")
    late, lost_race = proposal(pledge, 60), proposal(pledge, 40)
    with donations.unit_of_work() as session:
        for offer in (late, lost_race):
            service.reserve(session, donations.outbox, offer, utcnow())
        for offer in (late, lost_race):
            assert service.release_allocation(
                session, donations.outbox, offer["allocation_id"], "not shipped by its deadline"
            )
    # Meanwhile the freed 40 went to another need.
    with donations.unit_of_work() as session:
        service.reserve(session, donations.outbox, proposal(pledge, 40), utcnow())

    def picked_up(offer: dict[str, Any]) -> dict[str, Any]:
        return {
            "shipment_id": uuid.uuid4(),
            "status": "picked_up",
            "occurred_at": utcnow(),
            "lines": [
                {
                    "allocation_id": offer["allocation_id"],
                    "pledge_line_id": uuid.UUID(line_id),
                    "quantity": offer["quantity"],
                }
            ],
        }

    with donations.unit_of_work() as session:
        assert service.apply_shipment(session, donations.outbox, picked_up(late)) == 1
    line = pledge_line(stack, line_id)
    assert (line.reserved, line.shipped) == (40, 60)
    # The other 40 are taken: nothing can be taken back, and nothing over-commits.
    with donations.unit_of_work() as session:
        assert service.apply_shipment(session, donations.outbox, picked_up(lost_race)) == 0
    line = pledge_line(stack, line_id)
    assert (line.reserved, line.shipped) == (40, 60)
    with donations.session_factory() as session:
        statuses = {
            r.allocation_id: r.status
            for r in session.scalars(
                select(Reservation).where(Reservation.pledge_line_id == line.id)
            )
        }
    assert statuses[late["allocation_id"]] == "shipped"
    assert statuses[lost_race["allocation_id"]] == "released"


def test_a_runs_proposals_reserved_together_decide_and_announce_as_one_by_one(
    stack: Stack,
) -> None:
    donor = _verified_donor(stack)
    client = stack.client()
    donations = stack.runtime("donations")
    one_by_one = _pledge(client, donor, one_line(100))
    together = _pledge(client, donor, one_line(100))

    def plan(pledge: dict[str, Any]) -> list[dict[str, Any]]:
        proposals = [proposal(pledge, q) for q in (30, 50, 40, 20)]  # the third: 20 left
        missing = proposal(pledge, 5)
        missing["pledge_line_id"] = uuid.uuid4()
        return [*proposals, proposals[0], missing]  # a redelivered one, an unknown line

    decisions = []
    for each in plan(one_by_one):
        with donations.unit_of_work() as session:
            decisions.append(service.reserve(session, donations.outbox, each, utcnow()))
    with donations.unit_of_work() as session:
        batch = service.reserve_many(session, donations.outbox, plan(together), utcnow())

    assert batch == decisions
    assert [d.accepted for d in batch] == [True, True, False, True, True, False]
    assert batch[2].reason == "not enough left on the line"

    answers = [
        (message["type"], message["payload"])
        for kind in ("reservation.accepted", "reservation.rejected")
        for message in _events(stack, kind)
    ]

    def announced(pledge: dict[str, Any]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                kind,
                data["quantity"],
                data["available"],
                data["reason"],
                {k: v for k, v in data["line"].items() if k != "id"},
                data["pledge_version"],
            )
            for kind, data in answers
            if data["pledge_id"] == pledge["id"]
        )

    assert announced(together) == announced(one_by_one)
    assert len(announced(together)) == 4  # the redelivered proposal is not answered again
    # A line that does not exist is refused once in each run, with no line to show.
    unknown = [data for kind, data in answers if data["pledge_id"] is None]
    assert [(d["reason"], d["line"]) for d in unknown] == [("no such pledge line", None)] * 2
    for pledge in (one_by_one, together):
        line = pledge_line(stack, pledge["lines"][0]["id"])
        assert (line.reserved, line.status) == (100, "reserved")
        current = client.get(f"/api/v1/pledges/{pledge['id']}", headers=donor.headers)
        assert current.json["version"] == 4  # created, then three reservations
