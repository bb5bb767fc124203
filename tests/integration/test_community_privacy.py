"""A community's residents' data in the export of its organisation (for its committee,
and a coordinator with a reason), and erased on request with every count kept."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select

from services.invariants import check
from tests.support.auth import admin, coordinator, verified
from tests.support.community import add_households, community, order_round, post
from tests.support.community_stock import receive
from tests.support.stack import Stack, eventually

# Text about residents the test writes; none of it may outlive the erasure.
SECRETS = (
    "Call before knocking; deaf",
    "Wheelchair; ring twice",
    "13912345678",
    "Lost her husband in January",
    "Called her; a visit on Monday",
    "Neighbour says she is in hospital",
)


def _community_rows(stack: Stack) -> str:
    """Every row of every table of the community database, as text."""
    from services.community.models import Base

    found: list[str] = []
    with stack.runtime("community").session_factory() as session:
        for table in Base.metadata.sorted_tables:
            found.extend(str(tuple(row)) for row in session.execute(select(table)))
    return "\n".join(found)


def _community_part(answer: Any) -> dict[str, Any]:
    part = next(s for s in answer.json["services"] if s["service"] == "community")
    records: dict[str, Any] = part["records"]
    return records


def test_a_communitys_export_and_erasure_hold_its_residents_data(stack: Stack) -> None:
    from services.community.models import AccessRecord, Appointment, Case, Household

    for service in ("gateway", "donations", "dispatch", "community"):
        stack.start_worker(service)
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    place = community(stack, client, boss)
    other_committee = verified(client, boss, kind="community_committee", region="420106")
    committee = place.committee
    first, _second = place.buildings
    add_households(client, place)
    extra = post(
        client,
        f"{place.base}/households",
        {
            "building_id": first,
            "unit": "3",
            "room": "501",
            "people": 2,
            "flags": ["disability"],
            "note": "Wheelchair; ring twice",
            "phone": "13912345678",
        },
        committee,
    )
    order_round(client, place)
    case = post(
        client,
        f"{place.base}/cases",
        {
            "kind": "counselling",
            "urgency": "soon",
            "summary": "Lost her husband in January",
            "household_id": place.households[first][0],
        },
        committee,
    )
    case_url = f"{place.base}/cases/{case['id']}"
    post(
        client,
        f"{case_url}/assign",
        {"social_worker_id": place.social_worker.user_id},
        committee,
        status=200,
    )
    post(
        client,
        f"{case_url}/follow-ups",
        {"note": "Called her; a visit on Monday"},
        place.social_worker,
    )
    receive(stack, place, {"vegetables": 13_000})
    post(client, f"{place.base}/distributions", {"rule": "per_person"}, committee)
    mine = client.get(
        f"{place.base}/deliveries?building_id={first}", headers=place.volunteer.headers
    ).json["items"]
    away, *others = mine
    post(
        client,
        f"{place.base}/deliveries/{away['id']}/outcome",
        {"status": "not_home", "note": "Neighbour says she is in hospital"},
        place.volunteer,
        status=200,
    )
    post(
        client,
        f"{place.base}/deliveries/{others[0]['id']}/outcome",
        {"status": "delivered"},
        place.volunteer,
        status=200,
    )

    # The committee's export holds every household, order, delivery and case.
    url = f"/api/v1/orgs/{committee.org_id}/personal-data"
    exported = client.get(url, headers=committee.headers)
    assert exported.status_code == 200, exported.json
    records = _community_part(exported)
    assert {s["service"] for s in exported.json["services"]} == {
        "donations",
        "dispatch",
        "community",
    }
    assert records["households"] == 13
    people = sum(h["people"] for h in records["household_records"])
    assert people == records["people"] == 32
    assert {b["name"] for b in records["buildings"]} == {"Building 1", "Building 2"}
    assert {a["user_id"] for a in records["appointments"]} == {
        place.leaders[0].user_id,
        place.leaders[1].user_id,
        place.volunteer.user_id,
        place.social_worker.user_id,
    }
    door = next(h for h in records["household_records"] if h["id"] == extra["id"])
    assert (door["room"], door["phone"], door["note"], door["flags"]) == (
        "501",
        "13912345678",
        "Wheelchair; ring twice",
        ["disability"],
    )
    assert sum(len(r["orders"]) for r in records["order_rounds"]) > 0
    assert "Neighbour says she is in hospital" in {d["note"] for d in records["deliveries"]}
    [kept_case] = records["cases"]
    assert kept_case["summary"] == "Lost her husband in January"
    assert [f["note"] for f in kept_case["follow_ups"]] == ["Called her; a visit on Monday"]
    assert exported.json["gateway"]["organisation"]["id"] == committee.org_id

    # The operator's export holds the same.
    from click.testing import CliRunner

    from services.cli import main

    printed = CliRunner().invoke(
        main, ["personal-data", "export", committee.org_id], env=stack.settings.to_env()
    )
    assert printed.exit_code == 0, printed.output
    document = json.loads(printed.stdout)
    by_cli = next(s for s in document["services"] if s["service"] == "community")["records"]
    assert len(by_cli["household_records"]) == 13 and by_cli["cases"][0]["summary"]

    # Only for the committee: another community's admin, a building leader and a
    # volunteer are refused; a coordinator only with a reason, which is recorded.
    assert client.get(url, headers=other_committee.headers).status_code == 403
    assert client.get(url, headers=place.leaders[0].headers).status_code == 403
    assert client.get(url, headers=place.volunteer.headers).status_code == 403
    assert client.get(url, headers=chief.headers).status_code == 403
    reason = {"X-Access-Reason": "The committee's request of 2026-12-04, by letter"}
    read = client.get(url, headers={**chief.headers, **reason})
    assert read.status_code == 200, read.json
    with stack.runtime("community").session_factory() as session:
        assert session.scalars(
            select(AccessRecord.what).where(AccessRecord.org_id == uuid.UUID(committee.org_id))
        ).all() == ["personal-data export"]

    reach = f"{place.base}/reach"
    reach_before = client.get(reach).json
    stock_before = client.get(f"{place.base}/stock", headers=committee.headers).json

    # Erasure: only coordinators; the committee's own record stays.
    erase = f"/api/v1/orgs/{committee.org_id}/erase"
    body = {"reason": "the committee's request of 2026-12-04"}
    assert client.post(erase, json=body, headers=committee.headers).status_code == 403
    erased = client.post(erase, json=body, headers=chief.headers)
    assert erased.status_code == 200, erased.json
    assert erased.json["name"] == committee.org["name"]

    def blank() -> bool:
        with stack.runtime("community").session_factory() as session:
            households = session.scalars(
                select(Household).where(Household.org_id == uuid.UUID(committee.org_id))
            ).all()
            return all(h.erased for h in households)

    eventually(blank, timeout=60)
    rows = _community_rows(stack)
    for secret in SECRETS:
        assert secret not in rows, secret
    with stack.runtime("community").session_factory() as session:
        households = session.scalars(select(Household)).all()
        assert len(households) == 13
        assert all(
            h.note is None and h.phone is None and not h.flags and h.room.startswith("~")
            for h in households
        )
        assert sum(h.people for h in households) == people
        [gone_case] = session.scalars(select(Case)).all()
        assert gone_case.erased and gone_case.summary is None
        assert all(a.name is None for a in session.scalars(select(Appointment)))

    # The counts stay, and what the community still holds is exported without text.
    assert client.get(reach).json == reach_before
    assert client.get(f"{place.base}/stock", headers=committee.headers).json == stock_before
    again = client.get(url, headers=committee.headers)
    assert again.status_code == 200
    assert not any(secret in str(again.json) for secret in SECRETS)
    assert _community_part(again)["households"] == 0

    report = check(stack.settings, settle=60)
    assert report.settled, report.in_flight
    assert report.violations == []
