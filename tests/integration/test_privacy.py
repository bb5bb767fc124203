"""Personal data is seen only by those whose work needs it: the organisation directory
per role and relation, and anonymous donors kept anonymous outside coordinators."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.auth import PASSWORD, Account, admin, coordinator, register, verified
from tests.support.matching import approve
from tests.support.stack import Stack, eventually


@dataclass
class Directory:
    client: Any
    actors: dict[str, Account]
    # Organisations someone may look up, by what they are.
    orgs: dict[str, str]


@pytest.fixture
def directory(stack: Stack) -> Directory:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    contact = [{"name": "王女士", "phone": "+86 138 0000 0000"}]
    person = verified(
        client,
        boss,
        kind="individual",
        name="李明",
        address="武昌区某小区 3 栋 201",
        contacts=contact,
    )
    actors = {
        "admin": boss,
        "coordinator": chief,
        "donor": verified(client, boss, kind="foundation", contacts=contact),
        "recipient": verified(client, boss, kind="hospital"),
        "logistics": verified(client, boss, kind="logistics_company"),
        "individual": person,
        "unverified": register(client, kind="hospital"),
    }
    orgs = {
        "verified_foundation": actors["donor"].org_id,
        "verified_hospital": actors["recipient"].org_id,
        "individual_donor": person.org_id,
        "pending_foundation": register(client, kind="foundation").org_id,
    }
    return Directory(client=client, actors=actors, orgs=orgs)


# Who sees which organisation in the directory (list and look-up alike), besides
# their own: coordinators everything; members of a verified organisation the verified
# organisations that are not individuals; members of one not yet verified nothing.
SEES: dict[str, set[str]] = {
    "admin": {"verified_foundation", "verified_hospital", "individual_donor", "pending_foundation"},
    "coordinator": {
        "verified_foundation",
        "verified_hospital",
        "individual_donor",
        "pending_foundation",
    },
    "donor": {"verified_foundation", "verified_hospital"},
    "recipient": {"verified_foundation", "verified_hospital"},
    "logistics": {"verified_foundation", "verified_hospital"},
    "individual": {"verified_foundation", "verified_hospital", "individual_donor"},
    "unverified": set(),
}


def _listed(client: Any, who: Account) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        query = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/orgs", query_string=query, headers=who.headers)
        assert page.status_code == 200, page.json
        ids |= {item["id"] for item in page.json["items"]}
        cursor = page.json["next_cursor"]
        if not cursor:
            return ids


@pytest.mark.parametrize("actor", sorted(SEES))
def test_the_directory_shows_each_organisation_only_to_those_whose_work_needs_it(
    directory: Directory, actor: str
) -> None:
    client, who = directory.client, directory.actors[actor]
    listed = _listed(client, who)
    assert who.org_id in listed, "everyone sees their own organisation"
    for label, org_id in directory.orgs.items():
        visible = label in SEES[actor] or org_id == who.org_id
        looked_up = client.get(f"/api/v1/orgs/{org_id}", headers=who.headers)
        assert looked_up.status_code == (200 if visible else 404), (label, looked_up.json)
        assert (org_id in listed) == visible, label
        if looked_up.status_code == 404:
            # Not told apart from an organisation that does not exist.
            assert looked_up.json["type"].endswith("/organisation-not-found")
    # An individual is a person: never listed to anyone but coordinators (and themself).
    individuals = client.get(
        "/api/v1/orgs", query_string={"kind": "individual"}, headers=who.headers
    )
    names = {item["name"] for item in individuals.json["items"]}
    if actor in ("admin", "coordinator", "individual"):
        assert "李明" in names
    else:
        assert names == set()


def test_contacts_licence_and_address_of_a_person_stay_with_coordinators_and_themself(
    directory: Directory,
) -> None:
    client = directory.client
    person = directory.orgs["individual_donor"]
    for actor in ("coordinator", "individual"):
        seen = client.get(f"/api/v1/orgs/{person}", headers=directory.actors[actor].headers)
        assert seen.status_code == 200
        assert seen.json["address"] == "武昌区某小区 3 栋 201"
        assert seen.json["contacts"][0]["phone"] == "+86 138 0000 0000"
    # A verified foundation's contacts: its own members and coordinators only.
    foundation = directory.orgs["verified_foundation"]
    for actor, private in (("donor", True), ("coordinator", True), ("recipient", False)):
        seen = client.get(f"/api/v1/orgs/{foundation}", headers=directory.actors[actor].headers)
        assert seen.status_code == 200
        assert ("contacts" in seen.json) is private, actor
        assert ("licence_number" in seen.json) is private, actor


# Anonymous donors ----------------------------------------------------------------------


def _match_and_approve(client: Any, chief: Account) -> None:
    """A coordinator's preview of the masks, once it has something, approved."""

    def planned() -> dict[str, Any] | None:
        run = client.post(
            "/api/v1/matching/runs",
            json={"dry_run": True, "items": ["mask"]},
            headers=chief.headers,
        )
        return run.json if run.json.get("allocations") else None

    run = eventually(planned, timeout=60)
    approve(client, run["id"], chief)


def _signed_in(stack: Stack, who: Account, language: str = "en") -> Any:
    """A browser session of ``who`` in the web UI."""
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    form = client.get("/signin")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', form.data)
    assert token is not None
    done = client.post(
        "/signin",
        data={"csrf_token": token.group(1).decode(), "email": who.email, "password": PASSWORD},
    )
    assert done.status_code == 302
    return client


def test_an_anonymous_donor_is_named_only_to_itself_and_coordinators(stack: Stack) -> None:
    """Through the allocation, the shipment (its origin too) and the recipient's webhook:
    nothing names the donor, nor its pledge, which would name it by a join."""
    from services.gateway.models import WebhookDelivery

    for service in ("gateway", "donations", "dispatch"):
        stack.start_worker(service)
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    person = verified(client, boss, kind="individual", name="张三", region="420106")
    hospital = verified(client, boss, kind="hospital", region="420106")
    carrier = verified(client, boss, kind="logistics_company", region="4201")
    hook = client.post(
        "/api/v1/webhooks",
        json={
            "url": "https://example.org/hook",
            "event_types": ["shipment.created", "reservation.accepted"],
        },
        headers=hospital.headers,
    )
    assert hook.status_code == 201, hook.json
    pledge = client.post(
        "/api/v1/pledges",
        json={
            "anonymous": True,
            "lines": [{"item": "mask", "quantity": "500", "unit": "piece"}],
            "origin": {
                "region": "420106",
                "address": "某小区 5 栋",
                "contact": {"name": "门卫", "phone": "+86 27 5000 0001"},
                "lat": 30.55,
                "lon": 114.31,
            },
        },
        headers=person.headers,
    )
    assert pledge.status_code == 201, pledge.json
    need = client.post(
        "/api/v1/needs",
        json={
            "lines": [{"item": "mask", "quantity": "300", "unit": "piece", "urgency": "high"}],
            "location": {
                "region": "420106",
                "address": "发热门诊",
                "contact": {"name": "护士长", "phone": "+86 27 8888 0000"},
            },
        },
        headers=hospital.headers,
    )
    assert need.status_code == 201, need.json

    _match_and_approve(client, chief)

    def shipment() -> dict[str, Any] | None:
        page = client.get("/api/v1/shipments", headers=chief.headers)
        return page.json["items"][0] if page.json["items"] else None

    found = eventually(shipment, timeout=60)
    etag = client.get(f"/api/v1/shipments/{found['id']}", headers=chief.headers).headers["ETag"]
    assigned = client.patch(
        f"/api/v1/shipments/{found['id']}",
        json={"logistics_org_id": carrier.org_id},
        headers={**chief.headers, "If-Match": etag},
    )
    assert assigned.status_code == 200, assigned.json

    def seen(who: Account) -> tuple[dict[str, Any], dict[str, Any]]:
        allocations = client.get("/api/v1/allocations", headers=who.headers)
        one = client.get(f"/api/v1/shipments/{found['id']}", headers=who.headers)
        assert one.status_code == 200, one.json
        if who is carrier:
            # Logistics companies see shipments, not allocations.
            assert allocations.status_code == 403
            return {}, one.json
        assert allocations.status_code == 200, allocations.json
        return allocations.json["items"][0], one.json

    for who in (chief, person):
        allocation, carried = seen(who)
        assert allocation["donor_org_id"] == person.org_id
        assert allocation["pledge_id"] == pledge.json["id"]
        assert carried["donor_org_id"] == person.org_id
        assert carried["donor_name"] == "张三"
        assert carried["origin"]["lat"] == 30.55
        assert carried["lines"][0]["pledge_id"] == pledge.json["id"]
    for who, picks_up in ((hospital, False), (carrier, True)):
        allocation, carried = seen(who)
        if who is hospital:
            assert allocation["donor_anonymous"] is True
            assert allocation["donor_org_id"] is None
            assert allocation["pledge_id"] is None and allocation["pledge_line_id"] is None
        assert carried["donor_anonymous"] is True
        assert carried["donor_org_id"] is None and carried["donor_name"] is None
        assert {line["pledge_id"] for line in carried["lines"]} == {None}
        assert {line["pledge_line_id"] for line in carried["lines"]} == {None}
        # The pickup is the carrier's work; the recipient learns the region only.
        assert carried["origin"] == (
            found["origin"] if picks_up else {"region": found["origin"]["region"]}
        )
        if picks_up:
            assert carried["origin"]["address"] == "某小区 5 栋"
            assert carried["origin"]["contact"]["phone"] == "+86 27 5000 0001"
        # Whom to call at the delivery: the recipient and its carrier see it.
        assert carried["destination"]["contact"]["phone"] == "+86 27 8888 0000"
        assert person.org_id not in str(carried) and pledge.json["id"] not in str(carried)
    # The donor sees its own pickup contact, not the hospital's delivery contact.
    _, donors_view = seen(person)
    assert donors_view["origin"]["contact"]["name"] == "门卫"
    assert "contact" not in donors_view["destination"]

    # Organisations with no part in it see nothing of the shipment at all.
    unrelated = verified(client, boss, kind="hospital")
    unverified = register(client, kind="hospital")
    for who in (unrelated, unverified):
        assert client.get(f"/api/v1/shipments/{found['id']}", headers=who.headers).status_code in (
            403,
            404,
        )
        listed = client.get("/api/v1/allocations", headers=who.headers)
        assert listed.status_code in (200, 403)
        if listed.status_code == 200:
            assert listed.json["items"] == []
    # The recipient's web page says "an anonymous donor", in either language.
    for language, said in (("en", "An anonymous donor"), ("zh", "匿名捐赠者")):
        web = _signed_in(stack, hospital, language)
        page = web.get(f"/shipments/{found['id']}")
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        assert said in text and "张三" not in text and "某小区" not in text
    coordinators_page = _signed_in(stack, chief).get(f"/shipments/{found['id']}")
    assert "张三" in coordinators_page.get_data(as_text=True)

    def delivered_payload(kind: str) -> dict[str, Any] | None:
        with stack.runtime("gateway").session_factory() as session:
            row = session.query(WebhookDelivery).filter_by(event_type=kind).first()
            return dict(row.payload) if row is not None else None

    line_id = pledge.json["lines"][0]["id"]
    for kind in ("shipment.created", "reservation.accepted"):
        payload = eventually(functools.partial(delivered_payload, kind), timeout=60)
        assert payload["data"]["donor_anonymous"] is True, kind
        assert payload["data"]["donor_org_id"] is None, kind
        for held in (person.org_id, pledge.json["id"], line_id):
            assert held not in str(payload), (kind, held)

    # Promised to someone already: the donor cannot now choose to be named.
    current = client.get(f"/api/v1/pledges/{pledge.json['id']}", headers=person.headers)
    named = client.patch(
        f"/api/v1/pledges/{pledge.json['id']}",
        json={"anonymous": False},
        headers={**person.headers, "If-Match": current.headers["ETag"]},
    )
    assert named.status_code == 422, named.json
    assert "anonymous" in named.json["errors"]


# A person's data, exported and erased on request ---------------------------------------


def test_a_person_exports_their_data_and_erasure_leaves_every_total_intact(
    stack: Stack,
) -> None:
    from services.dispatch.models import Organisation as DispatchOrg
    from services.dispatch.models import SupplyLine
    from services.donations.models import Pledge
    from services.gateway.orgs.personal_data import ERASED_NAME
    from services.invariants import check

    for service in ("gateway", "donations", "dispatch", "community"):
        stack.start_worker(service)
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    person = verified(
        client,
        boss,
        kind="individual",
        name="王五",
        region="420106",
        address="武昌区某小区 7 栋 302",
        contacts=[{"name": "王五", "phone": "+86 139 0000 1111"}],
    )
    hospital = verified(client, boss, kind="hospital", region="420106")
    stranger = verified(client, boss, kind="foundation")
    pledge = client.post(
        "/api/v1/pledges",
        json={
            "lines": [{"item": "mask", "quantity": "200", "unit": "piece"}],
            "origin": {
                "region": "420106",
                "address": "武昌区某小区 7 栋",
                "lat": 30.5,
                "lon": 114.3,
            },
        },
        headers=person.headers,
    )
    assert pledge.status_code == 201, pledge.json
    need = client.post(
        "/api/v1/needs",
        json={
            "lines": [{"item": "mask", "quantity": "150", "unit": "piece"}],
            "location": {"region": "420106", "address": "急诊"},
        },
        headers=hospital.headers,
    )
    assert need.status_code == 201, need.json

    _match_and_approve(client, chief)
    eventually(
        lambda: client.get("/api/v1/shipments", headers=chief.headers).json["items"] or None,
        timeout=60,
    )

    # The person (and a coordinator) sees all that is held; anyone else, nothing.
    url = f"/api/v1/orgs/{person.org_id}/personal-data"
    mine = client.get(url, headers=person.headers)
    assert mine.status_code == 200, mine.json
    assert mine.json["gateway"]["organisation"]["address"] == "武昌区某小区 7 栋 302"
    assert mine.json["gateway"]["users"][0]["email"] == person.email
    donations_part = next(s for s in mine.json["services"] if s["service"] == "donations")
    assert donations_part["records"]["pledges"][0]["origin"]["address"] == "武昌区某小区 7 栋"
    dispatch_part = next(s for s in mine.json["services"] if s["service"] == "dispatch")
    assert dispatch_part["records"]["supply_lines"][0]["lat"] == 30.5
    assert 30.5 in _values_of(mine.json, "lat", "lon")
    assert client.get(url, headers=chief.headers).status_code == 200
    assert client.get(url, headers=stranger.headers).status_code == 404
    assert client.get(url, headers=hospital.headers).status_code == 404

    ledger_before = client.get("/api/v1/transparency/ledger").json["totals"]
    assert ledger_before

    # Only a coordinator erases, only a person, and only once.
    erase = f"/api/v1/orgs/{person.org_id}/erase"
    body = {"reason": "the person's request of 2026-12-04"}
    assert client.post(erase, json=body, headers=person.headers).status_code == 403
    not_a_person = client.post(
        f"/api/v1/orgs/{stranger.org_id}/erase", json=body, headers=chief.headers
    )
    assert not_a_person.status_code == 422, not_a_person.json
    erased = client.post(erase, json=body, headers=chief.headers)
    assert erased.status_code == 200, erased.json
    assert erased.json["name"] == ERASED_NAME
    assert erased.json["address"] is None and erased.json["contacts"] == []
    assert client.post(erase, json=body, headers=chief.headers).status_code == 409

    # Every service follows.
    def followed() -> bool:
        with stack.runtime("donations").session_factory() as session:
            held = session.get(Pledge, uuid.UUID(pledge.json["id"]))
            pledged_place = held is not None and held.origin_address
        with stack.runtime("dispatch").session_factory() as session:
            org = session.get(DispatchOrg, uuid.UUID(person.org_id))
            lines = session.query(SupplyLine).filter_by(pledge_id=uuid.UUID(pledge.json["id"]))
            places = [line.lat for line in lines]
        return (
            not pledged_place and org is not None and org.name == ERASED_NAME and places == [None]
        )

    eventually(followed, timeout=60)
    # The person's account is closed; its data is gone from the export.
    before = client.post("/api/v1/auth/login", json={"email": person.email, "password": PASSWORD})
    assert before.status_code == 401
    assert client.get("/api/v1/auth/me", headers=person.headers).status_code == 401
    after = client.get(url, headers=chief.headers).json
    text = str(after)
    for held in ("王五", "武昌区某小区", "+86 139", person.email):
        assert held not in text, held
    # The coordinates, as values (a timestamp such as 22:02:30.508 holds "30.5" too).
    assert not {30.5, 114.3} & set(_values_of(after, "lat", "lon"))
    # Quantities stay: the ledger adds up as before, and every invariant holds.
    assert client.get("/api/v1/transparency/ledger").json["totals"] == ledger_before
    report = check(stack.settings, settle=60)
    assert report.settled, report.in_flight
    assert report.violations == []


def test_the_operator_exports_and_erases_a_persons_data_from_the_command_line(
    stack: Stack,
) -> None:
    import json

    from click.testing import CliRunner

    from services.cli import main
    from services.gateway.orgs.personal_data import ERASED_NAME

    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    person = verified(client, boss, kind="individual", name="赵六", address="江汉区某路 9 号")
    foundation = verified(client, boss, kind="foundation")
    env = stack.settings.to_env()
    runner = CliRunner()

    exported = runner.invoke(main, ["personal-data", "export", person.org_id], env=env)
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.stdout)
    assert document["gateway"]["organisation"]["address"] == "江汉区某路 9 号"
    # The community service holds anyone's help, as a helper or a seeker.
    assert {s["service"] for s in document["services"]} == {"donations", "dispatch", "community"}
    community_part = next(s for s in document["services"] if s["service"] == "community")
    assert community_part["records"]["help_requests"] == []

    refused = runner.invoke(
        main, ["personal-data", "erase", foundation.org_id, "--reason", "asked", "--yes"], env=env
    )
    assert refused.exit_code == 1 and "not an individual" in refused.output
    not_a_person = runner.invoke(main, ["personal-data", "export", foundation.org_id], env=env)
    assert not_a_person.exit_code == 1 and "not an individual" in not_a_person.output
    unknown = runner.invoke(main, ["personal-data", "export", "nobody"], env=env)
    assert unknown.exit_code == 2 and "ORG_ID" in unknown.output

    erased = runner.invoke(
        main,
        ["personal-data", "erase", person.org_id, "--reason", "asked by phone", "--yes"],
        env=env,
    )
    assert erased.exit_code == 0, erased.output
    shown = client.get(f"/api/v1/orgs/{person.org_id}", headers=boss.headers).json
    assert (shown["name"], shown["address"]) == (ERASED_NAME, None)
    again = json.loads(
        runner.invoke(main, ["personal-data", "export", person.org_id], env=env).output
    )
    assert "江汉区" not in str(again) and "赵六" not in str(again)


def _values_of(document: Any, *keys: str) -> list[Any]:
    """Every value held under one of ``keys``, however deep in ``document``."""
    found: list[Any] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key in keys:
                found.append(value)
            found.extend(_values_of(value, *keys))
    elif isinstance(document, list):
        for value in document:
            found.extend(_values_of(value, *keys))
    return found
