"""Hotlines in the community service: a social-work station's operators log calls in a
few keystrokes; an emergency call for goods becomes, in one step, a household delivery
from the caller's community's stock that a volunteer brings to the door, or an urgent
case; a counselling call becomes a request for help; and the daily figures per hotline
and per organisation add up. A call keeps nothing of the caller."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.auth import Account, admin, coordinator, register, verified
from tests.support.community import community, post, vegetables_received
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually

HOTLINES = "/api/v1/community/hotlines"
# A code no region has, for the refusals (not data: see test_display).
UNKNOWN_REGION = "990000"
PHONE = "+86 139 0271 5566"
NOTE = "Mrs Li, 82, lives alone; knock loudly"


def _station(stack: Stack, client: Any, boss: Account) -> Account:
    """A verified social-work station of Wuhan, known to the community service."""
    station = verified(client, boss, kind="civil_affairs_bureau", region="4201")
    eventually(
        lambda: (
            (org := read_model_org(stack.runtime("community"), station.org_id))
            and org.status == "verified"
        ),
        timeout=60,
    )
    return station


def _hotline(client: Any, who: Account, name: str = "Wuchang help line") -> dict[str, Any]:
    made: dict[str, Any] = post(
        client,
        HOTLINES,
        {"name": name, "phone": "027-8888 1234", "languages": ["zh", "en"], "region": "4201"},
        who,
    )
    return made


def _call(client: Any, hotline: dict[str, Any], who: Account, **body: Any) -> dict[str, Any]:
    made: dict[str, Any] = post(client, f"{HOTLINES}/{hotline['id']}/calls", body, who)
    return made


def _today() -> str:
    return datetime.now(UTC).astimezone(_beijing()).date().isoformat()


def _beijing() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")


def test_an_emergency_call_ends_as_a_delivered_household_order_with_every_unit_accounted_for(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A woman living alone calls for vegetables: the operator makes it a delivery from
    the community's stock in one step (after asking for more than there is, and for a
    medicine the stock does not hold: refused, nothing written); the volunteer of her
    building brings it; the stock, the delivery and the report's "fulfilled" agree."""
    from services.community.models import HotlineCall, Household, HouseholdDelivery

    caplog.set_level(logging.INFO)
    for service in ("gateway", "community", "dispatch", "donations"):
        stack.start_worker(service)
    client = stack.client()
    story = vegetables_received(stack, client)
    place = story.place
    boss = admin(stack.apps["gateway"], client)
    station = _station(stack, client, boss)
    hotline = _hotline(client, station)
    call = _call(
        client,
        hotline,
        station,
        category="emergency",
        community_org_id=place.committee.org_id,
        minutes=6,
    )
    assert call["region"] == "420102" and call["became"] is None
    emergency = f"{HOTLINES}/{hotline['id']}/calls/{call['id']}/emergency"
    door = {"building": "Building 1", "unit": "3", "room": "601", "note": NOTE, "phone": PHONE}

    def households() -> int:
        with stack.runtime("community").session_factory() as session:
            return session.query(Household).count()

    before = households()
    # 30 jin asked for, 20 in stock; a medicine relief supplies never brought: refused
    # whole, naming the item, nothing written.
    for items, item in (({"vegetables": 30}, "vegetables"), ({"胰岛素": 1}, "insulin_glargine")):
        short = client.post(
            emergency,
            json={"as": "delivery", "household": door, "items": items},
            headers=station.headers,
        )
        assert short.status_code == 409, short.get_json()
        problem = short.get_json()
        assert problem["item"] == item and item in problem["detail"]
        assert list(problem["errors"]) == [f"items.{next(iter(items))}"]
    unknown = client.post(
        emergency,
        json={"as": "delivery", "household": door, "items": {"masks": 2}},
        headers=station.headers,
    )
    assert unknown.status_code == 422 and "items.masks" in unknown.get_json()["errors"]
    no_door = client.post(
        emergency,
        json={
            "as": "delivery",
            "household": {**door, "building": "Building 9"},
            "items": {"vegetables": 4},
        },
        headers=station.headers,
    )
    assert no_door.status_code == 422 and "household.building" in no_door.get_json()["errors"]
    assert households() == before
    stock_url = f"{place.base}/stock"
    assert client.get(stock_url, headers=place.committee.headers).json["stock"] == {
        "vegetables": 10_000
    }

    made = post(
        client,
        emergency,
        {"as": "delivery", "household": door, "items": {"vegetables": 4}},
        station,
    )
    # Where it goes, not which household: no door is probed through the answer.
    assert made["became"] == "delivery" and "household_id" not in made
    assert made["delivery_items"] == {"vegetables": 2_000}
    assert households() == before + 1
    again = client.post(
        emergency,
        json={"as": "delivery", "household": door, "items": {"vegetables": 4}},
        headers=station.headers,
    )
    assert again.status_code == 409 and again.get_json()["current_status"] == "delivery"
    as_case = client.post(
        emergency, json={"as": "case", "summary": "Needs insulin"}, headers=station.headers
    )
    assert as_case.status_code == 409

    # A second emergency call, taken further by two operators at the same moment: one
    # delivery, the other step refused whole.
    from concurrent.futures import ThreadPoolExecutor

    second = _call(
        client,
        hotline,
        station,
        category="emergency",
        community_org_id=place.committee.org_id,
        minutes=3,
    )
    neighbour = {**door, "room": "602", "note": None, "phone": None}

    def take(_n: int) -> int:
        return int(
            stack.client()
            .post(
                f"{HOTLINES}/{hotline['id']}/calls/{second['id']}/emergency",
                json={"as": "delivery", "household": neighbour, "items": {"vegetables": 1}},
                headers=station.headers,
            )
            .status_code
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert sorted(pool.map(take, range(2))) == [201, 409]
    assert households() == before + 2

    # The volunteer of Building 1 finds her door on their list, with the note, and
    # brings the vegetables (the neighbour's are still on their way).
    first = place.buildings[0]
    mine = client.get(
        f"{place.base}/deliveries?building_id={first}", headers=place.volunteer.headers
    ).json["items"]
    [hers] = [d for d in mine if d["id"] == made["delivery_id"]]
    assert hers["note"] == NOTE and (hers["unit"], hers["room"]) == ("3", "601")
    post(
        client,
        f"{place.base}/deliveries/{hers['id']}/outcome",
        {"status": "delivered"},
        place.volunteer,
        status=200,
    )

    accounts = client.get(stock_url, headers=place.committee.headers).json["accounts"]
    assert accounts["vegetables"] == {
        "received": 10_000,
        "delivered": 2_000,
        "pending": 500,
        "in_stock": 7_500,
        "written_off": 0,
    }
    report = client.get(
        f"{HOTLINES}/{hotline['id']}/report?day={_today()}", headers=station.headers
    ).json
    assert report["calls"] == 2 and report["by_category"]["emergency"] == 2
    assert report["emergency"] == {"requests": 2, "deliveries": 2, "cases": 0, "fulfilled": 1}
    assert report["minutes"] == 6 + 3
    public = client.get(f"{place.base}/reach").json
    assert public["units_delivered"] == {"vegetables": 2_000}

    # The caller's name and phone are the household's, never the call's nor a log line's.
    with stack.runtime("community").session_factory() as session:
        row = session.get(HotlineCall, uuid.UUID(call["id"]))
        assert row is not None and row.delivery_id == uuid.UUID(made["delivery_id"])
        assert PHONE not in repr(vars(row)) and "Mrs Li" not in repr(vars(row))
        delivery = session.get(HouseholdDelivery, uuid.UUID(made["delivery_id"]))
        assert delivery is not None
        household = session.get(Household, delivery.household_id)
        assert household is not None and household.phone == PHONE
        assert household.flags == ["elderly_alone"]
    assert PHONE not in caplog.text and "Mrs Li" not in caplog.text


def test_operators_log_calls_and_the_daily_reports_add_up(stack: Stack) -> None:
    """Two hotlines of a station: calls of each category, one of yesterday; the log of a
    day newest first, a page at a time; a counselling call booked as a request for
    help; an emergency call made an urgent case that its social worker closes; the
    figures per hotline and per organisation; and who may see and do what."""
    from services.community.models import HelpRequest, HotlineCall

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    place = community(stack, client, boss)
    station = _station(stack, client, boss)
    rival = _station(stack, client, boss)
    stranger = register(client, kind="hospital")
    line = _hotline(client, station)
    other_line = _hotline(client, station, "Wuchang night line")
    rivals = _hotline(client, rival, "Another station's line")
    by_office = post(
        client,
        HOTLINES,
        {
            "name": "Office line",
            "org_id": rival.org_id,
            "phone": "12345",
            "languages": ["zh"],
            "region": "42",
        },
        office,
    )
    assert by_office["org_id"] == rival.org_id

    # Setting up: the names of each field at fault; a station not yet verified refused.
    bad = client.post(
        HOTLINES,
        json={"name": "X", "phone": "call us", "languages": [], "region": UNKNOWN_REGION},
        headers=station.headers,
    )
    assert bad.status_code == 422
    assert {"phone", "languages", "region"} <= set(bad.get_json()["errors"])
    twice = client.post(
        HOTLINES,
        json={"name": line["name"], "phone": "12345", "languages": ["zh"], "region": "4201"},
        headers=station.headers,
    )
    assert twice.status_code == 409 and "name" in twice.get_json()["errors"]
    unverified = client.post(
        HOTLINES,
        json={"name": "Mine", "phone": "12345", "languages": ["zh"], "region": "4201"},
        headers=stranger.headers,
    )
    assert unverified.status_code == 403
    no_org = client.post(
        HOTLINES,
        json={"name": "Y", "phone": "12345", "languages": ["zh"], "region": "42"},
        headers=office.headers,
    )
    assert no_org.status_code == 422 and "org_id" in no_org.get_json()["errors"]

    # Calls in a few keystrokes; a call dated yesterday counts for yesterday.
    community_id = place.committee.org_id
    yesterday = datetime.now(UTC) - timedelta(days=1)
    info = [
        _call(client, line, station, category="information", region="420106", minutes=m)
        for m in (2, 3, 4)
    ]
    _call(client, line, station, category="other", minutes=0)
    _call(client, line, station, category="information", minutes=5, at=yesterday.isoformat())
    counselling = _call(
        client, line, station, category="counselling", community_org_id=community_id, minutes=25
    )
    urgent = _call(
        client, line, station, category="emergency", community_org_id=community_id, minutes=8
    )
    _call(client, other_line, station, category="information", minutes=1)
    for body, field in (
        ({"category": "gossip", "minutes": 1}, "category"),
        ({"category": "other", "minutes": 601}, "minutes"),
        ({"category": "other", "minutes": -1}, "minutes"),
        ({"category": "other"}, "minutes"),
        ({"category": "other", "minutes": 1, "region": UNKNOWN_REGION}, "region"),
        (
            {"category": "other", "minutes": 1, "community_org_id": station.org_id},
            "community_org_id",
        ),
        (
            {
                "category": "other",
                "minutes": 1,
                "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            "at",
        ),
    ):
        refused = client.post(f"{HOTLINES}/{line['id']}/calls", json=body, headers=station.headers)
        assert refused.status_code == 422, (body, refused.get_json())
        assert field in refused.get_json()["errors"], (body, refused.get_json())

    calls = f"{HOTLINES}/{line['id']}/calls"
    today = _today()
    page = client.get(f"{calls}?day={today}&limit=4", headers=station.headers).json
    rest = client.get(
        f"{calls}?day={today}&limit=4&cursor={page['next_cursor']}", headers=station.headers
    ).json
    assert rest["next_cursor"] is None
    listed = page["items"] + rest["items"]
    assert [c["id"] for c in listed][:2] == [urgent["id"], counselling["id"]]
    assert len(listed) == 6 and listed[-1]["id"] == info[0]["id"]
    assert all(c["day"] == today for c in listed)
    assert len(client.get(calls, headers=station.headers).json["items"]) == 7

    # A counselling call booked: a request for help in the queue, the caller's contact
    # kept there alone; only a counselling call, and once.
    booking = f"{calls}/{counselling['id']}/booking"
    ask = {"topic": "anxiety", "languages": ["zh"], "contact": PHONE, "text": "Cannot sleep"}
    stale = client.post(booking, json=ask, headers={**station.headers, "If-Match": '"99"'})
    assert stale.status_code == 412
    booked = post(client, booking, ask, station)
    assert booked["became"] == "booking" and booked["crisis"] is False
    assert client.post(booking, json=ask, headers=station.headers).status_code == 409
    not_counselling = client.post(
        f"{calls}/{info[0]['id']}/booking", json=ask, headers=station.headers
    )
    assert not_counselling.status_code == 409
    queue = client.get("/api/v1/community/help/requests", headers=office.headers).json["items"]
    assert booked["help_request_id"] in [r["id"] for r in queue]
    with stack.runtime("community").session_factory() as session:
        asked = session.get(HelpRequest, uuid.UUID(booked["help_request_id"]))
        assert asked is not None and asked.contact == PHONE and asked.user_id is None
        for row in session.query(HotlineCall):
            assert PHONE not in repr(vars(row))

    # An emergency call made an urgent case in the caller's community; its social worker
    # closes it, and the case counts as fulfilled.
    made = post(
        client,
        f"{calls}/{urgent['id']}/emergency",
        {"as": "case", "kind": "medicine_pickup", "summary": "Insulin pens; " + PHONE},
        station,
    )
    assert made["became"] == "case" and made["case_number"].startswith("C-")
    # A hotline acts only in the communities of the region it serves.
    far = post(
        client,
        HOTLINES,
        {"name": "Shenzhen line", "phone": "0755-1234", "languages": ["zh"], "region": "4403"},
        station,
    )
    far_call = _call(
        client, far, station, category="emergency", community_org_id=community_id, minutes=1
    )
    unserved = client.post(
        f"{HOTLINES}/{far['id']}/calls/{far_call['id']}/emergency",
        json={"as": "case", "summary": "Needs insulin"},
        headers=station.headers,
    )
    assert unserved.status_code == 403
    assert unserved.get_json()["type"].endswith("/community-not-served")
    assert "community_org_id" in unserved.get_json()["errors"]
    not_emergency = client.post(
        f"{calls}/{info[1]['id']}/emergency",
        json={"as": "case", "summary": "x"},
        headers=station.headers,
    )
    assert not_emergency.status_code == 409
    case_url = f"{place.base}/cases/{made['case_id']}"
    post(client, f"{case_url}/assign", {"auto": True}, place.committee, status=200)
    case = client.get(case_url, headers=place.social_worker.headers).json
    assert case["urgency"] == "urgent" and case["summary"].endswith(PHONE)
    report_url = f"{HOTLINES}/{line['id']}/report?day={today}"
    before = client.get(report_url, headers=station.headers).json
    assert before["emergency"] == {"requests": 1, "deliveries": 0, "cases": 1, "fulfilled": 0}
    post(client, f"{case_url}/close", {"closing_note": "Pens delivered"}, place.social_worker, 200)

    report = client.get(report_url, headers=station.headers).json
    assert report["calls"] == 6
    assert report["by_category"] == {"information": 3, "counselling": 1, "emergency": 1, "other": 1}
    assert report["minutes"] == 2 + 3 + 4 + 0 + 25 + 8
    assert report["emergency"] == {"requests": 1, "deliveries": 0, "cases": 1, "fulfilled": 1}
    assert report["bookings"] == 1
    day_before = (datetime.now(_beijing()) - timedelta(days=1)).date()
    past = client.get(
        f"{HOTLINES}/{line['id']}/report?day={day_before}",
        headers=station.headers,
    ).json
    assert past["calls"] == 1 and past["minutes"] == 5
    whole = client.get(f"{HOTLINES}/report?day={today}", headers=station.headers).json
    assert whole["org_id"] == station.org_id and whole["calls"] == 8 and whole["minutes"] == 44
    assert {h["hotline_id"]: h["calls"] for h in whole["hotlines"]} == {
        line["id"]: 6,
        other_line["id"]: 1,
        far["id"]: 1,
    }
    as_office = client.get(
        f"{HOTLINES}/report?org_id={station.org_id}&day={today}", headers=office.headers
    ).json
    assert as_office["calls"] == 8

    # Who sees what: another organisation is answered as if nothing existed; a
    # coordinator reads everything and logs nothing; anonymous callers sign in first.
    own = {h["id"] for h in client.get(HOTLINES, headers=station.headers).json["items"]}
    assert own == {line["id"], other_line["id"], far["id"]}
    every = {h["id"] for h in client.get(HOTLINES, headers=office.headers).json["items"]}
    assert {line["id"], rivals["id"], by_office["id"]} <= every
    for url in (
        f"{HOTLINES}/{line['id']}",
        calls,
        f"{calls}/{urgent['id']}",
        report_url,
        f"{HOTLINES}/report?org_id={station.org_id}",
    ):
        assert client.get(url, headers=rival.headers).status_code == 404, url
        assert client.get(url, headers=office.headers).status_code == 200, url
        assert client.get(url).status_code == 401, url
    writes: tuple[tuple[str, dict[str, Any]], ...] = (
        (calls, {"category": "other", "minutes": 1}),
        (f"{calls}/{info[2]['id']}/booking", ask),
        (f"{calls}/{urgent['id']}/emergency", {"as": "case", "summary": "x"}),
    )
    for url, body in writes:
        assert client.post(url, json=body, headers=rival.headers).status_code == 404, url
        assert client.post(url, json=body, headers=office.headers).status_code == 403, url
        assert client.post(url, json=body).status_code == 401, url
    theirs = {h["id"] for h in client.get(HOTLINES, headers=rival.headers).json["items"]}
    assert theirs == {rivals["id"], by_office["id"]}

    # The community erased: what its caller said when booked, and how to reach them,
    # go with its residents' data; the request's topic and status stay, for the counts.
    erased = client.post(
        f"/api/v1/orgs/{community_id}/erase", json={"reason": "asked"}, headers=office.headers
    )
    assert erased.status_code == 200, erased.json

    def forgotten() -> bool:
        with stack.runtime("community").session_factory() as session:
            row = session.get(HelpRequest, uuid.UUID(booked["help_request_id"]))
            return row is not None and row.contact is None and row.text is None

    eventually(forgotten, timeout=60)
