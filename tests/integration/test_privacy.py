"""Personal data is seen only by those whose work needs it: the organisation directory
per role and relation, and anonymous donors kept anonymous outside coordinators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.auth import Account, admin, coordinator, register, verified
from tests.support.stack import Stack


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
