"""Needs through the gateway: posting in any unit, drafts until verification, scoping,
amendments against allocations, reconfirmation, and expiry and reminders on a real
dispatch worker."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from services.dispatch.models import Need, NeedLine
from services.dispatch.models import messaging as dispatch_messaging
from services.dispatch.needs import service
from shared.db import utcnow
from tests.support.auth import Account, admin, register, verified
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually

MASKS_FRUIT_GLOVES_ALCOHOL: dict[str, Any] = {
    "lines": [
        {
            # 20 boxes of 50; 3 boxes left at 2 a day: 1.5 days of supply.
            "item": "mask",
            "standards": ["GB 19083-2010", "YY0469"],
            "quantity": "20",
            "unit": "box",
            "pack_size": 50,
            "stock_on_hand": "3",
            "daily_consumption": "2",
        },
        {"item": "fruit", "quantity": "1.5", "unit": "t"},
        {
            # Stated urgency wins over 100 days of supply.
            "item": "gloves_exam",
            "quantity": "200",
            "unit": "pair",
            "urgency": "high",
            "stock_on_hand": "1000",
            "daily_consumption": "10",
        },
        {
            # 4 l left at 1 l a day: 4 days, high.
            "item": "alcohol_75",
            "quantity": "10",
            "unit": "l",
            "stock_on_hand": "4",
            "daily_consumption": "1",
            "needed_by": str(date.today() + timedelta(days=3)),
        },
    ],
    "location": {
        "address": "1277 Jiefang Avenue, Wuhan",
        "region": "420103",
        "lat": 30.58,
        "lon": 114.27,
    },
    "people_served": 5000,
    "beds": 800,
    "notes": "ICU ward first",
}


def one_need(quantity: int = 1000, item: str = "mask", unit: str = "piece") -> dict[str, Any]:
    return {
        "lines": [{"item": item, "quantity": str(quantity), "unit": unit}],
        "location": {"region": "420103", "address": "Wuhan"},
    }


def _post(client: Any, who: Account, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/needs", json=body, headers=who.headers)
    assert response.status_code == 201, response.json
    assert response.headers["ETag"] == f'"{response.json["version"]}"'
    created: dict[str, Any] = response.json
    return created


def _events(stack: Stack, type: str) -> list[dict[str, Any]]:
    rt = stack.runtime("dispatch")
    outbox = dispatch_messaging.outbox
    with rt.session_factory() as session:
        rows = session.scalars(
            select(outbox.message).where(outbox.type == type).order_by(outbox.created_at)
        )
        return [dict(m) for m in rows]


def _need(stack: Stack, need_id: str) -> Need:
    with stack.runtime("dispatch").session_factory() as session:
        need = session.get(Need, uuid.UUID(need_id))
        assert need is not None
        return need


def _set_need(stack: Stack, need_id: str, **values: Any) -> None:
    with stack.runtime("dispatch").unit_of_work() as session:
        session.execute(update(Need).where(Need.id == uuid.UUID(need_id)).values(**values))


def _allocate(stack: Stack, line_id: str, quantity: int) -> None:
    """What an allocation does to a need line: a conditional UPDATE of ``proposed``."""
    with stack.runtime("dispatch").unit_of_work() as session:
        done = session.execute(
            update(NeedLine)
            .where(
                NeedLine.id == uuid.UUID(line_id),
                NeedLine.quantity - NeedLine.proposed - NeedLine.reserved - NeedLine.shipped
                >= quantity,
            )
            .values(proposed=NeedLine.proposed + quantity)
            .returning(NeedLine.id)
        ).first()
        assert done is not None


def _hospital(stack: Stack, boss: Account) -> Account:
    """A verified hospital the dispatch service knows to be verified."""
    hospital = verified(stack.client(), boss, kind="hospital")
    dispatch = stack.runtime("dispatch")
    eventually(
        lambda: (
            (org := read_model_org(dispatch, hospital.org_id)) is not None
            and org.status == "verified"
        )
    )
    return hospital


def _about(when: str, expected: datetime, slack: timedelta = timedelta(minutes=2)) -> bool:
    return abs(datetime.fromisoformat(when) - expected) < slack


def test_a_verified_hospital_posts_in_boxes_and_tonnes_and_urgency_follows_supply(
    stack: Stack,
) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = verified(client, boss, kind="hospital")
    need = _post(client, hospital, MASKS_FRUIT_GLOVES_ALCOHOL)

    assert need["status"] == "open"
    assert need["org_id"] == hospital.org_id
    assert need["location"]["region"] == "420103" and need["location"]["lat"] == 30.58
    assert (need["people_served"], need["beds"]) == (5000, 800)
    assert _about(need["expires_at"], utcnow() + timedelta(days=7))
    masks, fruit, gloves, alcohol = need["lines"]
    assert (masks["quantity"], masks["base_unit"]) == (1000, "piece")
    assert masks["standards"] == ["GB19083-2010", "YY0469-2011"]
    assert (masks["entered_quantity"], masks["entered_unit"]) == ("20", "box")
    assert (masks["stock_on_hand"], masks["daily_consumption"]) == (150, 100)
    assert masks["days_of_supply"] == 1.5
    assert masks["urgency"] == "critical"
    assert (fruit["quantity"], fruit["base_unit"]) == (1_500_000, "g")
    assert fruit["urgency"] == "normal" and fruit["days_of_supply"] is None
    assert (gloves["urgency"], gloves["days_of_supply"]) == ("high", 100.0)
    assert (alcohol["quantity"], alcohol["stock_on_hand"]) == (10_000, 4_000)
    assert (alcohol["urgency"], alcohol["days_of_supply"]) == ("high", 4.0)
    assert alcohol["needed_by"] == MASKS_FRUIT_GLOVES_ALCOHOL["lines"][3]["needed_by"]
    for line in need["lines"]:
        assert line["status"] == "open"
        assert (line["allocated"], line["proposed"], line["reserved"]) == (0, 0, 0)
        assert (line["shipped"], line["received"]) == (0, 0)
        assert line["open"] == line["quantity"]
    [posted] = _events(stack, "need.posted")
    assert posted["payload"]["id"] == need["id"]
    assert posted["aggregate_version"] == need["version"]
    assert posted["payload"]["lines"][0]["urgency"] == "critical"

    got = client.get(f"/api/v1/needs/{need['id']}", headers=hospital.headers)
    assert got.status_code == 200
    assert got.headers["ETag"] == f'"{need["version"]}"'
    assert got.json["lines"] == need["lines"]
    listed = client.get("/api/v1/needs", headers=hospital.headers).json["items"]
    assert [n["id"] for n in listed] == [need["id"]]
    for query, found in (
        ("urgency=critical", [need["id"]]),
        ("item=fruit", [need["id"]]),
        ("item=rice", []),
        ("status=open&region=4201", [need["id"]]),
        ("region=44", []),
        ("status=draft", []),
    ):
        items = client.get(f"/api/v1/needs?{query}", headers=hospital.headers).json["items"]
        assert [n["id"] for n in items] == found, query


def test_an_unverified_hospitals_need_is_a_draft_until_it_is_verified(stack: Stack) -> None:
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = register(client, kind="hospital")
    need = _post(client, hospital, one_need(500))
    assert need["status"] == "draft"
    assert [line["status"] for line in need["lines"]] == ["draft"]
    assert _events(stack, "need.posted")[0]["payload"]["status"] == "draft"
    # Drafts are kept out of matching but may be changed.
    url = f"/api/v1/needs/{need['id']}"
    changed = client.patch(
        url, json={"notes": "two wards"}, headers={**hospital.headers, "If-Match": '"1"'}
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["status"] == "draft"

    dispatch = stack.runtime("dispatch")
    eventually(lambda: read_model_org(dispatch, hospital.org_id) is not None)
    verify = client.post(
        f"/api/v1/orgs/{hospital.org_id}/verify",
        json={"evidence": "licence checked"},
        headers=boss.headers,
    )
    assert verify.status_code == 200, verify.json
    eventually(lambda: _need(stack, need["id"]).status == "open")
    opened = client.get(url, headers=hospital.headers).json
    assert [line["status"] for line in opened["lines"]] == ["open"]
    assert opened["lines"][0]["open"] == 500
    assert _about(opened["expires_at"], utcnow() + timedelta(days=7))
    [event] = [
        e
        for e in _events(stack, "need.updated")
        if e["payload"]["reason"] == "organisation verified"
    ]
    assert event["payload"]["status"] == "open"
    assert event["aggregate_version"] == opened["version"]


def test_open_drafts_of_opens_only_that_organisations_drafts(stack: Stack) -> None:
    client = stack.client()
    first = register(client, kind="hospital")
    second = register(client, kind="community_committee")
    mine = _post(client, first, one_need(10))
    theirs = _post(client, second, one_need(20))
    dispatch = stack.runtime("dispatch")
    later = utcnow() + timedelta(hours=1)
    with dispatch.unit_of_work() as session:
        opened = service.open_drafts_of(
            session, dispatch.outbox, uuid.UUID(first.org_id), ttl=timedelta(days=3), now=later
        )
    assert opened == 1
    need = _need(stack, mine["id"])
    assert need.status == "open"
    assert need.expires_at == later + timedelta(days=3)
    assert need.confirmed_at == later
    assert _need(stack, theirs["id"]).status == "draft"
    with dispatch.unit_of_work() as session:
        assert service.open_drafts_of(session, dispatch.outbox, uuid.UUID(first.org_id)) == 0


def test_needs_are_scoped_to_their_organisation(stack: Stack) -> None:
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = _hospital(stack, boss)
    other = register(client, kind="hospital")
    donor = verified(client, boss, kind="foundation")
    carrier = verified(client, boss, kind="logistics_company")
    need = _post(client, hospital, one_need(100))
    url = f"/api/v1/needs/{need['id']}"

    assert client.get(url, headers=other.headers).status_code == 404
    assert client.get(url, headers=donor.headers).status_code == 404
    patched = client.patch(url, json={"notes": "x"}, headers={**other.headers, "If-Match": '"1"'})
    assert patched.status_code == 404
    assert client.post(f"{url}/cancel", json={}, headers=other.headers).status_code == 404
    assert client.post(f"{url}/reconfirm", headers=other.headers).status_code == 404
    assert client.get("/api/v1/needs", headers=other.headers).json["items"] == []
    assert client.get("/api/v1/needs", headers=donor.headers).status_code == 403
    assert client.get("/api/v1/needs", headers=carrier.headers).status_code == 403
    assert client.post("/api/v1/needs", json=one_need(5), headers=donor.headers).status_code == 403
    as_other = client.post(
        "/api/v1/needs", json={**one_need(5), "org_id": other.org_id}, headers=hospital.headers
    )
    assert as_other.status_code == 403
    assert client.get("/api/v1/needs").status_code == 401

    # Coordinators see everyone's and post on a recipient's behalf, naming it.
    assert client.get(url, headers=boss.headers).status_code == 200
    nameless = client.post("/api/v1/needs", json=one_need(5), headers=boss.headers)
    assert nameless.status_code == 422
    assert "org_id" in nameless.json["errors"]
    for_donor = client.post(
        "/api/v1/needs", json={**one_need(5), "org_id": donor.org_id}, headers=boss.headers
    )
    assert for_donor.status_code == 422
    on_behalf = _post(client, boss, {**one_need(5), "org_id": hospital.org_id})
    assert on_behalf["org_id"] == hospital.org_id and on_behalf["status"] == "open"
    everyone = client.get("/api/v1/needs", headers=boss.headers).json["items"]
    assert {n["id"] for n in everyone} == {need["id"], on_behalf["id"]}
    one_org = client.get(f"/api/v1/needs?org_id={other.org_id}", headers=boss.headers).json["items"]
    assert one_org == []
    mine = client.get("/api/v1/needs?limit=1", headers=hospital.headers).json
    assert len(mine["items"]) == 1 and mine["next_cursor"]
    rest = client.get(
        f"/api/v1/needs?limit=1&cursor={mine['next_cursor']}", headers=hospital.headers
    ).json
    assert {mine["items"][0]["id"], rest["items"][0]["id"]} == {need["id"], on_behalf["id"]}
    assert rest["next_cursor"] is None

    # A suspended organisation changes nothing, whatever its token still says.
    suspend = client.post(
        f"/api/v1/orgs/{hospital.org_id}/suspend",
        json={"reason": "licence revoked"},
        headers=boss.headers,
    )
    assert suspend.status_code == 200, suspend.json
    dispatch = stack.runtime("dispatch")
    eventually(lambda: read_model_org(dispatch, hospital.org_id).status == "suspended")
    tag = client.get(url, headers=hospital.headers).headers["ETag"]
    assert (
        client.patch(
            url, json={"notes": "x"}, headers={**hospital.headers, "If-Match": tag}
        ).status_code
        == 403
    )
    assert client.post(f"{url}/cancel", json={}, headers=hospital.headers).status_code == 403
    assert client.post(f"{url}/reconfirm", headers=hospital.headers).status_code == 403
    assert (
        client.post("/api/v1/needs", json=one_need(5), headers=hospital.headers).status_code == 403
    )
    assert _need(stack, need["id"]).status == "open"


def test_amendments_respect_allocations_and_versions(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = verified(client, boss, kind="hospital")
    need = _post(
        client,
        hospital,
        {
            "lines": [
                {
                    "item": "mask",
                    "standards": ["GB19083-2010"],
                    "quantity": "1000",
                    "unit": "piece",
                }
            ],
            "location": {"region": "420103"},
        },
    )
    url = f"/api/v1/needs/{need['id']}"
    line_id = need["lines"][0]["id"]

    assert client.patch(url, json={"notes": "x"}, headers=hospital.headers).status_code == 428
    first = client.patch(
        url, json={"notes": "ICU"}, headers={**hospital.headers, "If-Match": '"1"'}
    )
    assert first.status_code == 200, first.json
    assert first.headers["ETag"] == '"2"'
    stale = client.patch(url, json={"notes": "x"}, headers={**hospital.headers, "If-Match": '"1"'})
    assert stale.status_code == 412

    _allocate(stack, line_id, 300)
    current = client.get(url, headers=hospital.headers)
    tag = current.headers["ETag"]
    line = current.json["lines"][0]
    assert (line["proposed"], line["allocated"], line["open"]) == (300, 300, 700)

    def patch(body: dict[str, Any]) -> Any:
        return client.patch(url, json=body, headers={**hospital.headers, "If-Match": tag})

    too_low = patch({"lines": [{"id": line_id, "quantity": "299"}]})
    assert too_low.status_code == 422
    assert "lines.0.quantity" in too_low.json["errors"]
    new_item = patch({"lines": [{"id": line_id, "item": "goggles", "unit": "piece"}]})
    assert new_item.status_code == 422
    assert "lines.0.item" in new_item.json["errors"]
    new_standards = patch({"lines": [{"id": line_id, "standards": ["KN95"]}]})
    assert new_standards.status_code == 422
    assert "lines.0.standards" in new_standards.json["errors"]
    unknown_line = patch({"lines": [{"id": str(uuid.uuid4()), "quantity": "5"}]})
    assert unknown_line.status_code == 422
    assert "lines.0.id" in unknown_line.json["errors"]
    assert _need(stack, need["id"]).version == 2  # nothing written

    lowered = patch(
        {
            "lines": [
                {"id": line_id, "quantity": "3", "unit": "box", "pack_size": 100},
                {"item": "goggles", "quantity": "40", "unit": "piece", "urgency": "critical"},
            ],
            "people_served": 1200,
        }
    )
    assert lowered.status_code == 200, lowered.json
    masks, goggles = lowered.json["lines"]
    assert (masks["quantity"], masks["status"], masks["open"]) == (300, "allocated", 0)
    assert (goggles["line_no"], goggles["quantity"], goggles["urgency"]) == (2, 40, "critical")
    assert goggles["status"] == "open"
    assert lowered.json["status"] == "partially_allocated"
    assert lowered.json["people_served"] == 1200
    assert lowered.headers["ETag"] != tag
    updated = _events(stack, "need.updated")[-1]
    assert updated["payload"]["lines"][0]["quantity"] == 300
    assert updated["aggregate_version"] == lowered.json["version"]

    # New facts derive the urgency again; a stated urgency wins.
    facts = client.patch(
        url,
        json={"lines": [{"id": goggles["id"], "stock_on_hand": "10", "daily_consumption": "10"}]},
        headers={**hospital.headers, "If-Match": lowered.headers["ETag"]},
    )
    assert facts.status_code == 200, facts.json
    assert facts.json["lines"][1]["urgency"] == "critical"
    assert facts.json["lines"][1]["days_of_supply"] == 1.0
    stated = client.patch(
        url,
        json={"lines": [{"id": goggles["id"], "urgency": "normal", "stock_on_hand": "100"}]},
        headers={**hospital.headers, "If-Match": facts.headers["ETag"]},
    )
    assert stated.status_code == 200, stated.json
    assert stated.json["lines"][1]["urgency"] == "normal"
    assert stated.json["lines"][1]["daily_consumption"] == 10
    in_pieces = client.patch(
        url,
        json={"lines": [{"id": line_id, "quantity": "300", "unit": "piece"}]},
        headers={**hospital.headers, "If-Match": stated.headers["ETag"]},
    )
    assert in_pieces.status_code == 200, in_pieces.json
    masks = in_pieces.json["lines"][0]
    assert (masks["quantity"], masks["entered_unit"], masks["pack_size"]) == (300, "piece", None)

    cancelled = client.post(
        f"{url}/cancel", json={"reason": "supplied locally"}, headers=hospital.headers
    )
    assert cancelled.status_code == 200, cancelled.json
    assert cancelled.json["status"] == "cancelled"
    assert cancelled.json["cancelled_at"] is not None
    assert {line["status"] for line in cancelled.json["lines"]} == {"cancelled"}
    assert {line["open"] for line in cancelled.json["lines"]} == {0}
    [event] = _events(stack, "need.cancelled")
    assert event["payload"]["reason"] == "supplied locally"
    again = client.post(f"{url}/cancel", json={}, headers=hospital.headers)
    assert again.status_code == 200
    assert len(_events(stack, "need.cancelled")) == 1
    after = client.patch(
        url,
        json={"notes": "x"},
        headers={**hospital.headers, "If-Match": cancelled.headers["ETag"]},
    )
    assert after.status_code == 409
    assert client.post(f"{url}/reconfirm", headers=hospital.headers).status_code == 409


def test_reconfirming_extends_the_expiry_and_rearms_the_reminder(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = verified(client, boss, kind="hospital")
    need = _post(client, hospital, one_need(100))
    soon = utcnow() + timedelta(hours=1)
    _set_need(stack, need["id"], expires_at=soon, reminded_at=utcnow())

    url = f"/api/v1/needs/{need['id']}"
    before = client.get(url, headers=hospital.headers)
    reconfirmed = client.post(f"{url}/reconfirm", headers=hospital.headers)
    assert reconfirmed.status_code == 200, reconfirmed.json
    assert reconfirmed.json["reminded_at"] is None
    assert _about(reconfirmed.json["expires_at"], utcnow() + timedelta(days=7))
    assert _about(reconfirmed.json["confirmed_at"], utcnow())
    assert reconfirmed.headers["ETag"] != before.headers["ETag"]
    [event] = _events(stack, "need.updated")
    assert event["payload"]["reason"] == "reconfirmed"
    assert _about(event["payload"]["expires_at"], utcnow() + timedelta(days=7))


def test_needs_expire_and_are_reminded_once_on_a_real_worker(stack: Stack) -> None:
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = verified(client, boss, kind="hospital")
    lapsed = _post(
        client,
        hospital,
        {
            "lines": [
                {"item": "mask", "quantity": "1000", "unit": "piece"},
                {"item": "goggles", "quantity": "50", "unit": "piece"},
            ],
            "location": {"region": "420103"},
        },
    )
    expiring = _post(client, hospital, one_need(200))
    fresh = _post(client, hospital, one_need(300))
    # Part of the masks and all the goggles are allocated already.
    _allocate(stack, lapsed["lines"][0]["id"], 400)
    _allocate(stack, lapsed["lines"][1]["id"], 50)
    _set_need(stack, lapsed["id"], expires_at=utcnow() - timedelta(minutes=1))
    _set_need(stack, expiring["id"], expires_at=utcnow() + timedelta(hours=2))
    dispatch = stack.runtime("dispatch")

    dispatch.celery.send_task("dispatch.expire_needs", queue="dispatch")
    eventually(lambda: _need(stack, lapsed["id"]).status == "expired")
    got = client.get(f"/api/v1/needs/{lapsed['id']}", headers=hospital.headers).json
    masks, goggles = got["lines"]
    # The remainder left matching; what was allocated stays.
    assert (masks["status"], masks["proposed"], masks["open"]) == ("expired", 400, 0)
    assert (goggles["status"], goggles["proposed"]) == ("allocated", 50)
    [expired] = _events(stack, "need.expired")
    assert expired["payload"]["id"] == lapsed["id"]
    assert expired["payload"]["status"] == "expired"
    assert expired["aggregate_version"] == got["version"]
    assert _need(stack, expiring["id"]).status == "open"
    assert _need(stack, fresh["id"]).status == "open"
    reconfirm = client.post(f"/api/v1/needs/{lapsed['id']}/reconfirm", headers=hospital.headers)
    assert reconfirm.status_code == 409

    dispatch.celery.send_task("dispatch.remind_needs", queue="dispatch")
    eventually(lambda: len(_events(stack, "need.reconfirm_due")) == 1)
    dispatch.celery.send_task("dispatch.remind_needs", queue="dispatch")
    # The worker takes one task at a time: once a later expiry is done, so is the reminder.
    _set_need(stack, fresh["id"], expires_at=utcnow() - timedelta(seconds=1))
    dispatch.celery.send_task("dispatch.expire_needs", queue="dispatch")
    eventually(lambda: _need(stack, fresh["id"]).status == "expired")
    [due] = _events(stack, "need.reconfirm_due")
    assert due["payload"]["id"] == expiring["id"]
    assert _need(stack, expiring["id"]).reminded_at is not None
    with dispatch.unit_of_work() as session:
        assert (
            service.remind_need(session, dispatch.outbox, uuid.UUID(expiring["id"]), utcnow())
            is False
        )

    # Reconfirming re-arms the reminder for the new expiry.
    assert (
        client.post(f"/api/v1/needs/{expiring['id']}/reconfirm", headers=hospital.headers).json[
            "reminded_at"
        ]
        is None
    )
    with dispatch.session_factory() as session:
        later = utcnow() + timedelta(days=6, hours=1)
        assert service.due_for_reminder(session, later) == [uuid.UUID(expiring["id"])]


def test_bad_input_names_the_fields_and_nothing_is_written(stack: Stack) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    hospital = verified(client, boss, kind="hospital")
    body = {
        "lines": [
            {"item": "mask", "quantity": "10", "unit": "kg"},
            {"item": "unobtainium", "quantity": "1", "unit": "piece"},
            {"item": "mask", "quantity": "2", "unit": "box"},
            {"item": "mask", "standards": ["YY0469", "ISO 9999"], "quantity": "2", "unit": "piece"},
            {"item": "mask", "quantity": "1.5", "unit": "piece"},
            {"item": "mask", "quantity": "5", "unit": "piece", "stock_on_hand": "-1"},
            {"item": "mask", "quantity": "5", "unit": "piece", "daily_consumption": "0"},
            {
                "item": "mask",
                "quantity": "5",
                "unit": "piece",
                "needed_by": str(date.today() - timedelta(days=1)),
            },
        ],
        "location": {"region": "420103"},
    }
    response = client.post("/api/v1/needs", json=body, headers=hospital.headers)
    assert response.status_code == 422
    errors = response.json["errors"]
    assert {
        "lines.0.unit",
        "lines.1.item",
        "lines.2.pack_size",
        "lines.3.standards.1",
        "lines.4.quantity",
        "lines.5.stock_on_hand",
        "lines.6.daily_consumption",
        "lines.7.needed_by",
    } == set(errors)

    shape = client.post(
        "/api/v1/needs",
        json={
            "lines": [{"item": "mask", "quantity": "5", "unit": "piece", "urgency": "panic"}],
            "location": {"region": "42x"},
            "beds": -1,
        },
        headers=hospital.headers,
    )
    assert shape.status_code == 422
    assert {"lines.0.urgency", "location.region", "beds"} <= set(shape.json["errors"])
    no_lines = client.post(
        "/api/v1/needs", json={"lines": [], "location": {"region": "42"}}, headers=hospital.headers
    )
    assert no_lines.status_code == 422
    assert "lines" in no_lines.json["errors"]

    assert client.get("/api/v1/needs", headers=hospital.headers).json["items"] == []
    assert _events(stack, "need.posted") == []
