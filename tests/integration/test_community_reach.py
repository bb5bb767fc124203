"""What the public and donors see of a community's last mile: the seed story driven to
the volunteers' doors, then the public ledger (its API and its page, in both
languages) and the donor's trace (API and page) show the community's counts
(households reached, people served, vulnerable households reached, units delivered
inside), and nothing personal leaves the community: not in the events it sent, not in
the ledger, not in the trace. A snapshot delivered again or late counts once; a
receipt corrected afterwards sends a new one."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from typing import Any, cast

from sqlalchemy import select, update

from services.gateway.models import Organisation as GatewayOrganisation
from tests.support.auth import PASSWORD, Account
from tests.support.community import Community, post, vegetables_received
from tests.support.stack import Stack, eventually

PHONE = "13800138000"
CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


def _signed_in(stack: Stack, who: Account, language: str) -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    page = client.get("/signin")
    token = CSRF.search(page.data)
    assert token
    done = client.post(
        "/signin",
        data={"csrf_token": token.group(1).decode(), "email": who.email, "password": PASSWORD},
    )
    assert done.status_code == 302
    return client


def _to_the_doors(stack: Stack, client: Any) -> dict[str, Any]:
    """The seed story up to the volunteers' outcomes: two buildings' orders become the
    community's need, a donor's 10 kg of vegetables are matched, shipped and received,
    split vulnerable first, and delivered, one household not at home."""
    from services.community.models import Household

    def phone_on_record(place: Community) -> None:
        # The deaf resident's phone is on record: it must never leave the community.
        with stack.runtime("community").unit_of_work() as session:
            session.execute(
                update(Household)
                .where(Household.id == uuid.UUID(place.households[place.buildings[0]][0]))
                .values(phone=PHONE)
            )

    received = vegetables_received(stack, client, before_orders=phone_on_record)
    place, donor, pledge, shipment = (
        received.place,
        received.donor,
        received.pledge,
        received.shipment,
    )
    post(client, f"{place.base}/distributions", {"rule": "vulnerable_first"}, place.committee)
    households = {
        h["id"]: h
        for h in client.get(f"{place.base}/households", headers=place.committee.headers).json[
            "items"
        ]
    }
    first, second = place.buildings
    mine = client.get(
        f"{place.base}/deliveries?building_id={first}", headers=place.volunteer.headers
    ).json["items"]
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
    everything = client.get(f"{place.base}/deliveries", headers=place.committee.headers).json[
        "items"
    ]
    delivered = [d for d in everything if d["status"] == "delivered"]
    return {
        "place": place,
        "donor": donor,
        "pledge": pledge,
        "shipment": shipment,
        "households": households,
        "delivered": delivered,
        "units": sum(d["items"]["vegetables"] for d in delivered),
    }


def _personal(place: Community, households: dict[str, Any]) -> list[str]:
    """What must never leave the community: households' ids, rooms, notes and phones,
    the volunteer's note at the door, who the community appointed."""
    found = [*households, PHONE, "Call before knocking", "Left a note on the door"]
    found += ['"room"', '"household_id"', '"note"', '"phone"', '"flags"']
    found += [place.volunteer.user_id, place.social_worker.user_id]
    found += [leader.user_id for leader in place.leaders]
    return found


def other(language: str) -> str:
    return "en" if language == "zh" else "zh"


def _leaks(text: str, personal: list[str]) -> list[str]:
    return [each for each in personal if each in text]


def _community_of(ledger: dict[str, Any], org_id: str) -> dict[str, Any] | None:
    return next((c for c in ledger["communities"] if c["org_id"] == org_id), None)


def test_the_ledger_and_a_donors_trace_show_a_communitys_reach_as_counts(stack: Stack) -> None:
    from services.community.models import messaging as community_messaging
    from services.dispatch.models import CommunityReach, CommunityShare
    from services.invariants import check
    from shared.inbox import Outcome

    for service in ("gateway", "community", "dispatch", "donations"):
        stack.start_worker(service)
    client = stack.client()
    story = _to_the_doors(stack, client)
    place: Community = story["place"]
    org_id = place.committee.org_id
    households = story["households"]
    delivered = story["delivered"]
    expected = {
        "households_reached": len(delivered),
        "people_served": sum(households[d["household_id"]]["people"] for d in delivered),
        "vulnerable_households_reached": sum(
            1 for d in delivered if households[d["household_id"]]["vulnerable"]
        ),
    }
    assert expected["households_reached"] == 5
    # The household not at home took its share back to stock.
    assert 0 < story["units"] < 10_000

    # The reach as kept while the deliveries were made, and counted again from them (the
    # households reached by a subquery, never as a list of their ids: on SQLite allowed
    # six bound values, the query's own, both still count; the five households' ids
    # listed beside them would pass it).
    from services.community.distribution.service import counted_reach, reach

    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        with stack.runtime("community").unit_of_work() as session:
            raw = cast(Any, session.connection().connection.dbapi_connection)
            was = None
            if isinstance(raw, sqlite3.Connection):
                was = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 6)
            try:
                return reach(session, uuid.UUID(org_id)), counted_reach(session, uuid.UUID(org_id))
            finally:
                if was is not None:
                    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, was)

    kept, counted = both()
    assert {key: counted[key] for key in expected} == expected
    assert kept == counted
    assert kept["units_delivered"] == {"vegetables": story["units"]}
    # The committee's stock figures read what is kept, and agree with the deliveries.
    from services.community.distribution.service import accounts

    with stack.runtime("community").session_factory() as session:
        stock = accounts(session, uuid.UUID(org_id))
        assert stock == accounts(session, uuid.UUID(org_id), counted=True)
    assert stock["vegetables"]["delivered"] == story["units"]
    assert stock["vegetables"]["pending"] == 0

    # The public ledger's API: the community by name, its counts, the units inside.
    def shown() -> dict[str, Any] | None:
        found = _community_of(client.get("/api/v1/transparency/ledger").json, org_id)
        if found and found["households_reached"] == expected["households_reached"]:
            return found
        return None

    entry = eventually(shown, timeout=60)
    assert {k: entry[k] for k in expected} == expected
    assert entry["name"] == place.committee.org["name"]
    assert entry["units_delivered"] == [
        {"item": "vegetables", "base_unit": "g", "quantity": story["units"]}
    ]
    # Asked for as people read it, in Chinese: the same figure, in 千克.
    readable = client.get(
        "/api/v1/transparency/ledger?display=true", headers={"Accept-Language": "zh"}
    ).json
    [units] = _community_of(readable, org_id)["units_delivered"]  # type: ignore[index]
    assert units["display"] == {"quantity": f"{story['units'] / 1000:g} 千克"}
    # Filtered by another region, or by an item it did not hand out: not there.
    assert _community_of(client.get("/api/v1/transparency/ledger?region=4403").json, org_id) is None
    assert _community_of(client.get("/api/v1/transparency/ledger?item=mask").json, org_id) is None
    assert _community_of(client.get("/api/v1/transparency/ledger?region=42").json, org_id)

    # The events the community sent: counts only, one snapshot per delivery made,
    # numbered in order, the last one the whole story.
    with stack.runtime("community").session_factory() as session:
        rows = (
            session.query(community_messaging.outbox)
            .filter_by(type="community.units_distributed")
            .all()
        )
    messages = sorted((row.message for row in rows), key=lambda m: m["payload"]["sequence"])
    assert [m["payload"]["sequence"] for m in messages] == list(range(1, len(delivered) + 1))
    latest = messages[-1]["payload"]
    assert {k: latest[k] for k in expected} == expected
    assert latest["units_delivered"] == [
        {"item": "vegetables", "quantity": story["units"], "unit": "g"}
    ]
    assert latest["from_shipments"] == [
        {
            "shipment_id": story["shipment"]["id"],
            "receipt_id": latest["from_shipments"][0]["receipt_id"],
            "item": "vegetables",
            "quantity": story["units"],
        }
    ]
    personal = _personal(place, households)
    for message in messages:
        assert _leaks(json.dumps(message), personal) == [], message

    # The donor's trace: beside the community it reached, the community's counts.
    trace = client.get(
        f"/api/v1/pledges/{story['pledge']['id']}/trace", headers=story["donor"].headers
    )
    assert trace.status_code == 200
    [line] = trace.json["lines"]
    [recipient] = line["recipients"]
    assert recipient["org_id"] == org_id
    figures = recipient["community"]
    assert {k: figures[k] for k in expected} == expected
    assert figures["item"] == "vegetables"
    assert figures["units_delivered"] == story["units"]
    assert figures["delivered_from_these_shipments"] == story["units"]
    assert _leaks(trace.get_data(as_text=True), personal) == []
    readable = client.get(
        f"/api/v1/pledges/{story['pledge']['id']}/trace?display=true",
        headers={**story["donor"].headers, "Accept-Language": "en"},
    ).json
    assert readable["lines"][0]["recipients"][0]["community"]["display"] == {
        "units_delivered": f"{story['units'] / 1000:g} kg",
        "delivered_from_these_shipments": f"{story['units'] / 1000:g} kg",
    }

    # A snapshot delivered again, or an older one arriving late (as a new copy):
    # nothing moves, the ledger's version included.
    dispatch = stack.runtime("dispatch")
    before = client.get("/api/v1/transparency/ledger")
    assert dispatch.inbox.handle(messages[-1]) is Outcome.DUPLICATE
    late = dict(messages[0], id=str(uuid.uuid4()))
    # Taken for what it alone says of a share: nothing, its share named since.
    assert dispatch.inbox.handle(late) is Outcome.APPLIED
    with dispatch.session_factory() as session:
        held = session.get(CommunityReach, uuid.UUID(org_id))
        assert held is not None
        assert held.sequence == len(delivered)
        assert held.households_reached == expected["households_reached"]
    after = client.get("/api/v1/transparency/ledger")
    assert after.headers["ETag"] == before.headers["ETag"]
    assert _community_of(after.json, org_id) == entry

    # Even past the inbox (another aggregate's version, the same old snapshot), the
    # read model keeps the highest snapshot.
    from services.dispatch.transparency.community import on_units_distributed
    from shared.events import Event

    with dispatch.unit_of_work() as session:
        on_units_distributed(session, Event.from_message(messages[0]))
    assert _community_of(client.get("/api/v1/transparency/ledger").json, org_id) == entry

    ledger_text = client.get("/api/v1/transparency/ledger").get_data(as_text=True)
    assert _leaks(ledger_text, personal) == []

    # The community registered its name in both languages: each page names it in its own.
    named = {"zh": "百步亭社区居委会", "en": "Baibuting Community Committee"}
    with stack.runtime("gateway").unit_of_work() as session:
        session.execute(
            update(GatewayOrganisation)
            .where(GatewayOrganisation.id == uuid.UUID(org_id))
            .values(name_zh=named["zh"], name_en=named["en"])
        )
    # The ledger's page, in both languages: the community's row, in human units.
    for language, heading, weight in (
        ("en", "Inside the communities", "kg"),
        ("zh", "社区内的分发", "千克"),
    ):
        reader = stack.client()
        reader.set_cookie("aidlink_lang", language)
        page = reader.get("/transparency")
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert heading in text
        row = re.search(r'<tr data-community="' + org_id + r'">(.*?)</tr>', text, re.S)
        assert row, text[-3000:]
        cells = row.group(1)
        assert named[language] in cells and named[other(language)] not in cells
        assert f'class="households-reached">{expected["households_reached"]}<' in cells
        assert f'class="people-served">{expected["people_served"]}<' in cells
        assert f'class="vulnerable-reached">{expected["vulnerable_households_reached"]}<' in cells
        assert f"{story['units'] / 1000:g} {weight}" in cells
        assert _leaks(text, personal) == []

        # The donor's pledge page: the counts beside the community.
        donor_page = _signed_in(stack, story["donor"], language).get(
            f"/pledges/{story['pledge']['id']}"
        )
        assert donor_page.status_code == 200
        shown_text = donor_page.get_data(as_text=True)
        assert 'class="community-reach"' in shown_text
        party = shown_text.split('class="community-reach"', 1)[0].rsplit('class="party-name"', 1)[1]
        assert named[language] in party.split("</td>", 1)[0]
        reach_row = shown_text.split('class="community-reach"', 1)[1].split("</tr>", 1)[0]
        for figure in expected.values():
            assert str(figure) in reach_row
        assert f"{story['units'] / 1000:g} {weight}" in reach_row
        assert _leaks(shown_text, personal) == []

    # The community corrects its receipt (half a kilo was crushed): the units
    # delivered now come from the corrected receipt, and dispatch hears it in a new
    # snapshot; the counts stay as they were.
    from tests.support.shipping import receipt_lines

    shipment = story["shipment"]
    [first] = client.get(
        f"/api/v1/shipments/{shipment['id']}/receipts", headers=place.committee.headers
    ).json["items"]
    correction = post(
        client,
        f"/api/v1/shipments/{shipment['id']}/receipt",
        {"corrects": first["id"], "lines": receipt_lines(shipment, accepted=9_500, damaged=500)},
        place.committee,
    )

    def corrected() -> CommunityReach | None:
        with dispatch.session_factory() as session:
            held = session.get(CommunityReach, uuid.UUID(org_id))
            return held if held is not None and held.sequence > len(delivered) else None

    held = eventually(corrected, timeout=60)
    assert held.households_reached == expected["households_reached"]
    with dispatch.session_factory() as session:
        shares = session.scalars(
            select(CommunityShare).where(CommunityShare.org_id == uuid.UUID(org_id))
        ).all()
        assert [
            (str(s.shipment_id), s.receipt_id, s.item, s.quantity, s.sequence) for s in shares
        ] == [
            (
                shipment["id"],
                uuid.UUID(correction["id"]),
                "vegetables",
                min(story["units"], 9_500),
                held.sequence,
            )
        ]

    report = check(stack.settings, settle=60)
    assert report.violations == [], [v.as_dict() for v in report.violations]

    # A household reached grows by one person: the reach kept counts it as the
    # deliveries do (the people of the households reached, as they are now).
    from services.community.models import ReachUnits

    reached_one = delivered[0]["household_id"]
    grown = households[reached_one]["people"] + 1
    changed = client.patch(
        f"{place.base}/households/{reached_one}",
        json={"people": grown},
        headers={**place.committee.headers, "If-Match": "*"},
    )
    assert changed.status_code == 200, changed.get_data(as_text=True)
    kept, counted = both()
    assert kept == counted
    assert kept["people_served"] == expected["people_served"] + 1
    # Dispatch hears the new counts in a snapshot of their own.

    def grown_shown() -> CommunityReach | None:
        with dispatch.session_factory() as session:
            held = session.get(CommunityReach, uuid.UUID(org_id))
            return held if held and held.people_served == expected["people_served"] + 1 else None

    eventually(grown_shown, timeout=60)
    report = check(stack.settings, settle=60)
    assert report.violations == [], [v.as_dict() for v in report.violations]

    # What is kept drifting from the deliveries is found and named.
    with stack.runtime("community").unit_of_work() as session:
        session.execute(
            update(ReachUnits)
            .where(ReachUnits.org_id == uuid.UUID(org_id))
            .values(quantity=ReachUnits.quantity + 1)
        )
    report = check(stack.settings, settle=5)
    drifted = [v for v in report.violations if v.invariant == "community-reach-kept"]
    assert len(drifted) == 1, [v.as_dict() for v in report.violations]
    # Dispatch shows what was sent, which the figures now read differ from too.
    assert {v.invariant for v in report.violations} == {
        "community-reach-kept",
        "community-reach-shown",
    }
    assert "units_delivered" in drifted[0].detail
