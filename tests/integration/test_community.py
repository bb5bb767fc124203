"""The community service: a residential community's committee, its buildings and
households, their orders, the distribution inside and residents' cases."""

from __future__ import annotations

import uuid
from typing import Any

from shared.catalog.display import quantity
from tests.support.auth import admin, coordinator, register, verified
from tests.support.community import (
    LIMITS,
    PASTED_2,
    add_households,
    community,
    order_round,
    post,
    vegetables_received,
)
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
        lambda: (
            (org := read_model_org(stack.runtime("community"), committee.org_id))
            and org.status == "verified"
        ),
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


def test_a_building_leader_keeps_only_their_buildings_households(stack: Stack) -> None:
    from services.community.models import AccessRecord, Household
    from services.community.residents import service as residents

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    place = community(stack, client, boss)
    add_households(client, place)
    first, second = place.buildings
    leader1 = place.leaders[0]

    # Each leader sees their own building's households, and not the other's.
    seen = client.get(f"{place.base}/households", headers=leader1.headers).json["items"]
    assert {h["building_id"] for h in seen} == {first}
    assert len(seen) == 6
    assert seen[0]["note"] == "Call before knocking; deaf"
    other = place.households[second][0]
    assert (
        client.get(f"{place.base}/households/{other}", headers=leader1.headers).status_code == 404
    )
    refused = client.get(f"{place.base}/households?building_id={second}", headers=leader1.headers)
    assert refused.status_code == 403
    assert (
        client.post(
            f"{place.base}/households",
            json={"building_id": second, "room": "999", "people": 1},
            headers=leader1.headers,
        ).status_code
        == 403
    )
    # The committee sees them all; the volunteer and the social worker see none.
    assert (
        len(client.get(f"{place.base}/households", headers=place.committee.headers).json["items"])
        == 12
    )
    for narrow in (place.volunteer, place.social_worker):
        assert client.get(f"{place.base}/households", headers=narrow.headers).json["items"] == []

    # A change names the version it was based on.
    mine = place.households[first][1]
    current = client.get(f"{place.base}/households/{mine}", headers=leader1.headers)
    changed = client.patch(
        f"{place.base}/households/{mine}",
        json={"flags": ["quarantine"], "people": 4},
        headers={**leader1.headers, "If-Match": current.headers["ETag"]},
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["vulnerable"] is True
    stale = client.patch(
        f"{place.base}/households/{mine}",
        json={"people": 5},
        headers={**leader1.headers, "If-Match": current.headers["ETag"]},
    )
    assert stale.status_code == 412

    # Another organisation sees nothing; a coordinator only with a reason, recorded.
    hospital = register(client, kind="hospital")
    assert client.get(f"{place.base}/households", headers=hospital.headers).status_code == 403
    assert client.get(f"{place.base}/households", headers=chief.headers).status_code == 403
    reason = {"X-Access-Reason": "Checking a report of a household left without food"}
    read = client.get(f"{place.base}/households", headers={**chief.headers, **reason})
    assert read.status_code == 200 and len(read.json["items"]) == 12
    with stack.runtime("community").session_factory() as session:
        records = session.query(AccessRecord).all()
    assert [(str(r.user_id), r.reason) for r in records] == [
        (chief.user_id, reason["X-Access-Reason"])
    ]

    # The organisation's data erased: the households keep only their size.
    with stack.runtime("community").unit_of_work() as session:
        residents.erase_community(session, uuid.UUID(place.committee.org_id))
    with stack.runtime("community").session_factory() as session:
        kept = session.query(Household).all()
    assert len(kept) == 12 and all(h.erased and not h.note and not h.flags for h in kept)
    assert sum(h.vulnerable for h in kept) == 9


# Who inside (and around) a community may call what, on building 1's data: each role's
# expected status. The access matrix covers the actors outside; this is the inside.
ROLES = (
    "committee",
    "leader1",
    "leader2",
    "volunteer",
    "social_worker",
    "other_committee",
    "coordinator",
    "coordinator_with_reason",
)


def _expect(default: int, **statuses: int) -> dict[str, int]:
    return {role: statuses.get(role, default) for role in ROLES}


ROLE_ROWS: list[tuple[str, str, dict[str, int], Any]] = [
    ("GET", "/me", _expect(200, other_committee=403), None),
    ("GET", "/buildings", _expect(200, other_committee=403), None),
    ("POST", "/buildings", _expect(403, committee=201), lambda: {"name": uuid.uuid4().hex[:8]}),
    ("GET", "/appointments", _expect(403, committee=200), None),
    (
        "GET",
        "/households",
        _expect(200, other_committee=403, coordinator=403),
        None,
    ),
    (
        "GET",
        "/households/{household1}",
        _expect(
            404,
            committee=200,
            leader1=200,
            other_committee=403,
            coordinator=403,
            coordinator_with_reason=200,
        ),
        None,
    ),
    (
        "GET",
        "/households?building_id={building1}",
        _expect(403, committee=200, leader1=200, coordinator_with_reason=200),
        None,
    ),
    (
        "POST",
        "/households",
        _expect(403, committee=201, leader1=201),
        lambda: {"building_id": "{building1}", "room": uuid.uuid4().hex[:8], "people": 2},
    ),
    (
        "GET",
        "/deliveries?building_id={building1}",
        _expect(403, committee=200, leader1=200, volunteer=200, coordinator_with_reason=200),
        None,
    ),
    (
        "GET",
        "/stock",
        _expect(403, committee=200, coordinator=200, coordinator_with_reason=200),
        None,
    ),
]


def test_each_role_inside_a_community_reaches_only_its_part(stack: Stack) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    place = community(stack, client, boss)
    add_households(client, place)
    other = community(stack, client, boss)
    reason = {"X-Access-Reason": "Following up a complaint of a missed delivery"}
    who = {
        "committee": place.committee.headers,
        "leader1": place.leaders[0].headers,
        "leader2": place.leaders[1].headers,
        "volunteer": place.volunteer.headers,
        "social_worker": place.social_worker.headers,
        "other_committee": other.committee.headers,
        "coordinator": chief.headers,
        "coordinator_with_reason": {**chief.headers, **reason},
    }
    names = {
        "building1": place.buildings[0],
        "household1": place.households[place.buildings[0]][0],
    }
    mismatches = []
    for method, path, expected, body in ROLE_ROWS:
        for role in ROLES:
            payload = body() if body else None
            if payload:
                payload = {
                    k: v.format(**names) if isinstance(v, str) else v for k, v in payload.items()
                }
            url = place.base + path.format(**names)
            got = client.open(url, method=method, json=payload, headers=who[role]).status_code
            if got != expected[role]:
                mismatches.append(
                    f"{method} {path} as {role}: expected {expected[role]}, got {got}"
                )
    assert not mismatches, "\n".join(mismatches)


def test_two_buildings_orders_become_the_communitys_need_in_dispatch(stack: Stack) -> None:
    from services.community.models import OrderLine, messaging
    from services.dispatch.models import Need

    for service in ("gateway", "community", "dispatch"):
        stack.start_worker(service)
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    place = community(stack, client, boss)
    add_households(client, place)
    first, second = place.buildings
    leader1, leader2 = place.leaders

    made = post(
        client, f"{place.base}/rounds", {"title": "Week 7", "limits": LIMITS}, place.committee
    )
    orders = f"{place.base}/rounds/{made['id']}/orders"
    # Over the committee's limit, or another building's: refused, and nothing is saved.
    too_much = client.post(
        orders,
        json={"building_id": second, "text": "户\t蔬菜\n1-101\t11\n1-999\t1\n"},
        headers=leader2.headers,
    )
    assert too_much.status_code == 422
    assert set(too_much.json["errors"]) == {"1-101", "row 3"}
    elsewhere = client.post(
        orders, json={"building_id": second, "text": PASTED_2}, headers=leader1.headers
    )
    assert elsewhere.status_code == 403
    with stack.runtime("community").session_factory() as session:
        assert session.query(OrderLine).count() == 0

    order_round(client, place, "Week 7 again")  # a second round, entered in full
    rounds = client.get(f"{place.base}/rounds", headers=place.committee.headers).json["items"]
    entered = rounds[0]
    sheet = client.get(
        f"{place.base}/rounds/{entered['id']}/orders?building_id={second}", headers=leader2.headers
    ).json["items"]
    assert [row["items"] for row in sheet][:3] == [
        {"vegetables": 4, "rice": 2},
        {"vegetables": 6, "eggs": 10},
        {"vegetables": 10, "rice": 5, "eggs": 30},
    ]
    totals = client.get(
        f"{place.base}/rounds/{entered['id']}/totals", headers=place.committee.headers
    ).json
    assert totals["community"] == {"vegetables": 48, "rice": 22, "eggs": 80}
    assert [b["items"] for b in totals["buildings"]] == [
        {"vegetables": 26, "rice": 14, "eggs": 40},
        {"vegetables": 22, "rice": 8, "eggs": 40},
    ]
    # A leader sees their building's figures only.
    mine = client.get(f"{place.base}/rounds/{entered['id']}/totals", headers=leader1.headers).json
    assert [b["building_id"] for b in mine["buildings"]] == [first]

    # The committee confirms, asking for less rice than ordered: the donated part
    # becomes a need in dispatch, in the relief catalogue's units.
    assert (
        client.post(
            f"{place.base}/rounds/{entered['id']}/confirm", json={}, headers=leader1.headers
        ).status_code
        == 403
    )
    confirmed = post(
        client,
        f"{place.base}/rounds/{entered['id']}/confirm",
        {"quantities": {"rice": 20}},
        place.committee,
        status=200,
    )
    assert confirmed["status"] == "confirmed"
    assert confirmed["requested"] == {"vegetables": 48, "rice": 20, "eggs": 80}

    def posted() -> Need | None:
        with stack.runtime("dispatch").session_factory() as session:
            return session.query(Need).filter_by(org_id=uuid.UUID(place.committee.org_id)).first()

    need = eventually(posted, timeout=60)
    assert need.status == "open"
    assert sorted((line.item, line.quantity) for line in need.lines) == [
        ("rice", 20_000),
        ("vegetables", 24_000),
    ]
    assert need.people_served == totals["people"]
    # Nothing personal left the community: the event names items and counts.
    with stack.runtime("community").session_factory() as session:
        [row] = session.query(messaging.outbox).filter_by(type="community.need_requested").all()
    text = str(row.message)
    for household in place.households[first] + place.households[second]:
        assert household not in text
    assert "room" not in text and "Call before" not in text


def test_seed_story_orders_to_doors_with_every_unit_accounted_for(stack: Stack) -> None:
    """Two buildings' orders become the community's need; a donor's vegetables are
    matched, shipped and received; the committee splits them vulnerable first; the
    volunteers deliver, one household is not home and its share goes back to stock;
    check-invariants finds every unit accounted for."""
    from services.invariants import check

    for service in ("gateway", "community", "dispatch", "donations"):
        stack.start_worker(service)
    client = stack.client()
    story = vegetables_received(stack, client)
    place, pledge = story.place, story.pledge
    stock_url = f"{place.base}/stock"
    assert pledge["lines"][0]["quantity"] == 10_000

    # Vulnerable households first: 20 jin over the 34 they ordered, none to the others.
    split = post(
        client, f"{place.base}/distributions", {"rule": "vulnerable_first"}, place.committee
    )
    everything = client.get(f"{place.base}/deliveries", headers=place.committee.headers).json[
        "items"
    ]
    assert split["deliveries"] == len(everything) == 6
    households = {
        h["id"]: h
        for h in client.get(f"{place.base}/households", headers=place.committee.headers).json[
            "items"
        ]
    }
    assert all(households[d["household_id"]]["vulnerable"] for d in everything)
    assert sum(d["items"]["vegetables"] for d in everything) == 10_000
    assert all(d["items"]["vegetables"] % 500 == 0 for d in everything)

    # The volunteer of building 1 carries its list: the deaf resident's note comes with it.
    first, second = place.buildings
    mine = client.get(
        f"{place.base}/deliveries?building_id={first}", headers=place.volunteer.headers
    ).json["items"]
    assert {d["building_id"] for d in mine} == {first}
    assert mine[0]["note"] == "Call before knocking; deaf"
    refused = client.get(
        f"{place.base}/deliveries?building_id={second}", headers=place.volunteer.headers
    )
    assert refused.status_code == 403
    away = mine[0]
    for delivery in mine:
        outcome = "not_home" if delivery is away else "delivered"
        post(
            client,
            f"{place.base}/deliveries/{delivery['id']}/outcome",
            {"status": outcome, "note": "Left a note on the door" if delivery is away else None},
            place.volunteer,
            status=200,
        )
    again = client.post(
        f"{place.base}/deliveries/{away['id']}/outcome",
        json={"status": "delivered"},
        headers=place.volunteer.headers,
    )
    assert again.status_code == 409
    # Building 2's deliveries are still out: the stock figures say so.
    out = sum(d["items"]["vegetables"] for d in everything if d["building_id"] == second)
    midway = client.get(stock_url, headers=place.committee.headers).json["accounts"]
    made = sum(d["items"]["vegetables"] for d in mine if d is not away)
    assert midway["vegetables"] == {
        "received": 10_000,
        "delivered": made,
        "pending": out,
        "in_stock": away["items"]["vegetables"],
        "written_off": 0,
    }
    for delivery in client.get(
        f"{place.base}/deliveries?building_id={second}", headers=place.leaders[1].headers
    ).json["items"]:
        post(
            client,
            f"{place.base}/deliveries/{delivery['id']}/outcome",
            {"status": "delivered"},
            place.leaders[1],
            status=200,
        )

    # The share of the household not at home is back in stock; a jin spoiled.
    figures = client.get(stock_url, headers=place.committee.headers).json
    back = away["items"]["vegetables"]
    assert figures["stock"] == {"vegetables": back}
    post(
        client,
        f"{place.base}/write-offs",
        {"item": "vegetables", "quantity": 500, "reason": "Spoiled in the heat"},
        place.committee,
    )
    accounts = client.get(stock_url, headers=place.committee.headers).json["accounts"]
    assert accounts["vegetables"] == {
        "received": 10_000,
        "delivered": 10_000 - back,
        "pending": 0,
        "in_stock": back - 500,
        "written_off": 500,
    }
    report = check(stack.settings, settle=60)
    assert report.violations == [], [v.as_dict() for v in report.violations]

    # The public sees counts of the community's reach, never a household.
    public = client.get(f"{place.base}/reach")
    assert public.status_code == 200
    delivered = [d for d in everything if d["id"] != away["id"]]
    assert public.json["households_reached"] == len(delivered) == 5
    assert public.json["vulnerable_households_reached"] == 5
    assert public.json["units_delivered"] == {"vegetables": 10_000 - back}
    assert public.json["people_served"] == sum(
        households[d["household_id"]]["people"] for d in delivered
    )
    text = public.get_data(as_text=True)
    for household in households:
        assert household not in text
    assert "room" not in text and "Call before" not in text
    # With ?display=true the units read as people read them, in the caller's language;
    # the exact figures stay.
    for language, accept in (("zh", "zh-CN,zh;q=0.9"), ("en", "en-GB")):
        shown = client.get(f"{place.base}/reach?display=true", headers={"Accept-Language": accept})
        assert shown.json["units_delivered"] == public.json["units_delivered"]
        vegetables = quantity(10_000 - back, "g", language)
        assert shown.json["display"] == {"units_delivered": {"vegetables": vegetables}}
        assert ("千克" if language == "zh" else " kg") in vegetables
    assert "display" not in public.json
