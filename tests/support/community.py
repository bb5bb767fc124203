"""A residential community for tests: its committee, buildings and the users it
appoints (members of the community organisation, as the gateway keeps them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.support.auth import PASSWORD, Account, login, verified
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually


def member(stack: Stack, client: Any, community: Account, name: str = "Member") -> Account:
    """A new user of ``community``'s organisation, signed in: its admin invites them and
    they join with the invitation's link, as people do."""
    email = f"member-{uuid.uuid4().hex[:10]}@example.org"
    invited = client.post(
        f"/api/v1/orgs/{community.org_id}/invitations",
        json={"email": email, "name": name, "roles": ["recipient"]},
        headers=community.headers,
    )
    assert invited.status_code == 201, invited.get_json()
    joined = client.post(
        "/api/v1/auth/invitations/accept",
        json={"token": invited.get_json()["token"], "password": PASSWORD},
    )
    assert joined.status_code == 201, joined.get_json()
    tokens = login(client, email)
    return Account(
        email=email,
        user_id=joined.get_json()["user_id"],
        org_id=community.org_id,
        org=community.org,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


@dataclass
class Community:
    """A verified community with two buildings, a leader for each, a volunteer for the
    first and a social worker."""

    committee: Account
    buildings: list[str]
    leaders: list[Account]
    volunteer: Account
    social_worker: Account
    households: dict[str, list[str]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"/api/v1/community/{self.committee.org_id}"


@dataclass
class Hotline:
    """A hotline a civil-affairs station runs over Wuhan, and a community it serves."""

    station: Account
    community: Account
    id: str


def hotline(
    stack: Stack, client: Any, boss: Account, *, name: str, community: dict[str, str]
) -> Hotline:
    """A verified station's hotline (``name``) over Wuhan (4201) and a verified
    community committee in Wuchang (``community``: its name fields), both known to the
    community service before the hotline is set up."""
    station = verified(client, boss, kind="civil_affairs_bureau", region="4201")
    served = verified(client, boss, kind="community_committee", region="420106", **community)
    known = {station.org_id, served.org_id}
    eventually(
        lambda: all(read_model_org(stack.runtime("community"), o) for o in known), timeout=60
    )
    made = client.post(
        "/api/v1/community/hotlines",
        json={"name": name, "phone": "027-8888 1234", "languages": ["zh"], "region": "4201"},
        headers=station.headers,
    )
    assert made.status_code == 201, made.get_json()
    return Hotline(station=station, community=served, id=str(made.get_json()["id"]))


def post(client: Any, url: str, body: Any, who: Account, status: int = 201) -> Any:
    response = client.post(url, json=body, headers=who.headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def community(stack: Stack, client: Any, boss: Account) -> Community:
    """The community of the seed story, known to the community service (whose worker
    the caller has started)."""
    committee = verified(client, boss, kind="community_committee", region="420102")
    eventually(
        lambda: (
            (org := read_model_org(stack.runtime("community"), committee.org_id))
            and org.status == "verified"
        ),
        timeout=60,
    )
    base = f"/api/v1/community/{committee.org_id}"
    buildings = [
        post(client, f"{base}/buildings", {"name": name, "area": "East"}, committee)["id"]
        for name in ("Building 1", "Building 2")
    ]
    leaders = []
    for building in buildings:
        leader = member(stack, client, committee, "Leader")
        post(
            client,
            f"{base}/appointments",
            {"user_id": leader.user_id, "role": "building_leader", "building_id": building},
            committee,
        )
        leaders.append(leader)
    volunteer = member(stack, client, committee, "Volunteer")
    post(
        client,
        f"{base}/appointments",
        {"user_id": volunteer.user_id, "role": "volunteer", "building_id": buildings[0]},
        committee,
    )
    worker = member(stack, client, committee, "Social worker")
    post(
        client,
        f"{base}/appointments",
        {"user_id": worker.user_id, "role": "social_worker", "hours_per_day": 6},
        committee,
    )
    return Community(committee, buildings, leaders, volunteer, worker)


# Six households a building: (unit, room, people, flags, note).
HOUSEHOLDS = [
    ("1", "101", 1, ["elderly_alone"], "Call before knocking; deaf"),
    ("1", "102", 3, [], None),
    ("1", "201", 4, ["infants"], None),
    ("2", "101", 2, ["chronic_medicine"], None),
    ("2", "202", 2, [], None),
    ("2", "301", 3, ["medical_family"], None),
]


def add_households(client: Any, place: Community) -> None:
    """Each leader records their building's households."""
    for building, leader in zip(place.buildings, place.leaders, strict=True):
        place.households[building] = [
            post(
                client,
                f"{place.base}/households",
                {
                    "building_id": building,
                    "unit": unit,
                    "room": room,
                    "people": people,
                    "flags": flags,
                    "note": note,
                },
                leader,
            )["id"]
            for unit, room, people, flags, note in HOUSEHOLDS
        ]


# What each building's households order (rows in HOUSEHOLDS order): vegetables in jin,
# rice in kg, eggs. Building 1 is entered as rows, building 2 pasted as a table.
ORDERS_1 = [
    {"vegetables": 4, "rice": 2, "eggs": 10},
    {"vegetables": 6, "rice": 3},
    {"vegetables": 8, "rice": 5, "eggs": 20},
    {},
    {"vegetables": 2},
    {"vegetables": 6, "rice": 4, "eggs": 10},
]
PASTED_2 = (
    "户\t蔬菜\t大米\t鸡蛋\n1-101\t4\t2\t\n1单元102\t6\t\t10\n1-201\t10\t5\t30\n2-101\t2\t1\t\n"
)
LIMITS = {"vegetables": 10, "rice": 5, "eggs": 30}


def order_round(client: Any, place: Community, title: str = "Week 7") -> dict[str, Any]:
    """A round opened by the committee, each building's orders entered by its leader."""
    made: dict[str, Any] = post(
        client, f"{place.base}/rounds", {"title": title, "limits": LIMITS}, place.committee
    )
    orders = f"{place.base}/rounds/{made['id']}/orders"
    first, second = place.buildings
    rows = [
        {"household_id": household, "items": items}
        for household, items in zip(place.households[first], ORDERS_1, strict=True)
    ]
    post(client, orders, {"building_id": first, "rows": rows}, place.leaders[0], status=200)
    post(client, orders, {"building_id": second, "text": PASTED_2}, place.leaders[1], status=200)
    return made


@dataclass
class Received:
    """The seed story up to the community's stock: two buildings' orders confirmed as
    the community's need, a donor's 10 kg of vegetables matched, shipped and received."""

    place: Community
    coordinator: Account
    donor: Account
    pledge: dict[str, Any]
    shipment: dict[str, Any]
    need_id: str


def vegetables_received(stack: Stack, client: Any, *, before_orders: Any = None) -> Received:
    """The seed story's first half (the caller has started the gateway's, community's,
    dispatch's and donations' workers); ``before_orders(place)`` runs once the
    households are recorded."""
    from datetime import date, timedelta

    from services.dispatch.models import Need
    from tests.support.auth import admin, coordinator
    from tests.support.shipping import deliver, match, receipt_lines

    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    place = community(stack, client, boss)
    add_households(client, place)
    if before_orders is not None:
        before_orders(place)
    entered = order_round(client, place)
    post(client, f"{place.base}/rounds/{entered['id']}/confirm", {}, place.committee, status=200)

    def posted() -> Need | None:
        with stack.runtime("dispatch").session_factory() as session:
            return session.query(Need).filter_by(org_id=uuid.UUID(place.committee.org_id)).first()

    need = eventually(posted, timeout=60)
    # A donor gives 10 kg of vegetables (20 jin) for the 48 jin ordered.
    donor = verified(client, boss, kind="foundation", region="4403")
    pledge = post(
        client,
        "/api/v1/pledges",
        {
            "lines": [
                {
                    "item": "vegetables",
                    "quantity": "10",
                    "unit": "kg",
                    "best_before": (date.today() + timedelta(days=10)).isoformat(),
                }
            ],
            "origin": {"region": "4403", "address": "Futian warehouse"},
        },
        donor,
    )
    people = {"coordinator": chief}
    eventually(
        lambda: client.post(
            "/api/v1/matching/runs",
            json={"dry_run": True, "items": ["vegetables"]},
            headers=chief.headers,
        ).json["allocations"],
        timeout=60,
    )
    match(client, people, "vegetables")
    [shipment] = deliver(client, people, str(need.id))
    post(
        client,
        f"/api/v1/shipments/{shipment['id']}/receipt",
        {"lines": receipt_lines(shipment)},
        place.committee,
    )
    eventually(
        lambda: (
            client.get(f"{place.base}/stock", headers=place.committee.headers).json["stock"]
            == {"vegetables": 10_000}
        ),
        timeout=60,
    )
    return Received(place, chief, donor, pledge, shipment, str(need.id))
