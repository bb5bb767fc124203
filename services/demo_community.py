"""The demo community for ``aidlink demo load``: the demo community committee's two
buildings and a dozen fictional households, two building leaders, a volunteer and a
social worker who sign in with the demo password, an open order round in which some
households have ordered, and last week's round: confirmed, its vegetables, rice and oil
received (as a receipt of a shipment to the community, taken in by the community
service's own receipt handler), split over the households vulnerable first, so the
volunteer has doors to visit; and two residents' cases in the social worker's hands.

The people are users of the community organisation at the gateway (members, as every
user of a community is) appointed to their roles in the community service; the rest
is written through the community service's own service layer, as its API would write
it. A community that already has buildings is left as it is, so loading again adds
nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from shared.config import Settings
from shared.runtime import ServiceRuntime

# The demo organisation whose community this is (services/gateway/auth/admin.py).
DEMO_COMMUNITY = "community@demo.aidlink.local"

BUILDINGS = (("Building 1", "East"), ("Building 2", "East"))

# Who works inside the community: their sign-in, name, role and building (by index).
DEMO_PEOPLE: tuple[dict[str, Any], ...] = (
    {
        "email": "leader1@demo.aidlink.local",
        "name": "Wang Guihua",
        "role": "building_leader",
        "building": 0,
    },
    {
        "email": "leader2@demo.aidlink.local",
        "name": "Liu Jianguo",
        "role": "building_leader",
        "building": 1,
    },
    {
        "email": "volunteer@demo.aidlink.local",
        "name": "Zhou Min",
        "role": "volunteer",
        "building": 0,
    },
    {
        "email": "socialworker@demo.aidlink.local",
        "name": "Chen Li",
        "role": "social_worker",
        "hours_per_day": 6,
    },
)

# Six fictional households a building: (unit, room, people, flags, note).
HOUSEHOLDS: tuple[tuple[str, str, int, list[str], str | None], ...] = (
    ("1", "101", 1, ["elderly_alone"], "Call before knocking; hard of hearing"),
    ("1", "102", 3, [], None),
    ("1", "201", 4, ["infants"], "Baby asleep after 13:00: knock softly"),
    ("2", "101", 2, ["chronic_medicine"], "Insulin: keep it cold"),
    ("2", "202", 2, [], None),
    ("2", "301", 3, ["medical_family"], "Both parents on shift at the hospital"),
)

ROUND = {
    "title": "Week 7: vegetables, rice and medicines",
    "limits": {
        "vegetables": 10,
        "rice": 5,
        "cooking_oil": 1,
        "eggs": 30,
        "metformin_500mg": 2,
        "insulin_glargine": 5,
    },
}
# What some households ordered, by building index and household index.
ORDERS: dict[int, dict[int, dict[str, int]]] = {
    0: {
        0: {"vegetables": 4, "rice": 2, "eggs": 10},
        1: {"vegetables": 6, "rice": 3, "cooking_oil": 1},
        2: {"vegetables": 8, "rice": 5, "eggs": 20},
        3: {"vegetables": 3, "metformin_500mg": 2},
    },
    1: {
        0: {"vegetables": 4, "rice": 2},
        3: {"vegetables": 2, "insulin_glargine": 3},
        5: {"vegetables": 6, "rice": 4, "eggs": 10},
    },
}


# Last week's round, confirmed: what households ordered, by building and household.
LAST_ROUND = {
    "title": "Week 6: vegetables, rice and oil",
    "limits": {"vegetables": 10, "rice": 5, "cooking_oil": 1},
}
LAST_ORDERS: dict[int, dict[int, dict[str, int]]] = {
    0: {
        0: {"vegetables": 4, "rice": 2},
        1: {"vegetables": 6, "rice": 5, "cooking_oil": 1},
        2: {"vegetables": 8, "rice": 5},
        3: {"vegetables": 3, "rice": 2},
        5: {"vegetables": 6, "rice": 4},
    },
    1: {
        0: {"vegetables": 4, "rice": 2},
        2: {"vegetables": 6, "rice": 3, "cooking_oil": 1},
        3: {"vegetables": 2, "rice": 2},
        4: {"vegetables": 5, "rice": 3},
        5: {"vegetables": 6, "rice": 4},
    },
}
# What arrived of it, in base units: 40 of the 50 jin of vegetables ordered, all the
# rice, one of the two bottles of oil. Vulnerable households are served first.
RECEIVED = {"vegetables": 20_000, "rice": 32_000, "cooking_oil": 5_000}
# Residents' cases: (building, household, kind, urgency, summary, taken in by).
CASES = (
    (
        0,
        3,
        "medicine_pickup",
        "urgent",
        "Insulin pens from the community clinic before Friday; keep them cold.",
        "leader1@demo.aidlink.local",
    ),
    (
        1,
        0,
        "counselling",
        "soon",
        "Lives alone since the lockdown began; asks for someone to talk to twice a week.",
        "socialworker@demo.aidlink.local",
    ),
)


@dataclass
class DemoCommunity:
    """What one load added: the people's sign-ins created, and the community's rows."""

    people: list[dict[str, Any]] = field(default_factory=list)
    buildings: int = 0
    households: int = 0
    orders: int = 0
    deliveries: int = 0
    cases: int = 0


def add_people(
    gateway: ServiceRuntime,
    org_id: uuid.UUID,
    password: str,
    people: tuple[dict[str, Any], ...] = DEMO_PEOPLE,
) -> dict[str, uuid.UUID]:
    """The demo ``people`` (each an ``email`` and a ``name``) as users of the community
    organisation, made where missing: each email with its user's id."""
    from services.gateway.auth.service import add_membership, create_user
    from services.gateway.models import Organisation, User

    found: dict[str, uuid.UUID] = {}
    with gateway.unit_of_work() as session:
        org = session.get(Organisation, org_id)
        assert org is not None
        for person in people:
            user_id = session.scalar(select(User.id).where(User.email == person["email"]))
            if user_id is None:
                user = create_user(
                    session, email=person["email"], password=password, name=person["name"]
                )
                add_membership(session, user, org, "recipient")
                session.flush()
                user_id = user.id
            found[person["email"]] = user_id
    return found


def load_demo_community(
    settings: Settings, gateway: ServiceRuntime, org_id: uuid.UUID, password: str
) -> DemoCommunity:
    """The demo community of the organisation ``org_id`` (whose people are made in
    ``gateway``, with ``password``), unless it already has buildings."""
    from services.community.app import create_app
    from services.community.distribution import service as distribution
    from services.community.models import Building
    from services.community.orders import service as orders
    from services.community.residents import service as residents
    from services.community.residents.domain import Standing

    added = DemoCommunity()
    app = create_app(settings)
    with app.app_context():
        rt: ServiceRuntime = app.extensions["aidlink"]
        try:
            with rt.session_factory() as session:
                if session.scalar(select(Building.id).where(Building.org_id == org_id).limit(1)):
                    return added
            users = add_people(gateway, org_id, password)
            committee = Standing(org_id=org_id, committee=True)
            with rt.unit_of_work() as session:
                buildings = [
                    residents.add_building(session, committee, name=name, area=area).id
                    for name, area in BUILDINGS
                ]
                for person in DEMO_PEOPLE:
                    residents.appoint(
                        session,
                        committee,
                        {
                            "user_id": users[person["email"]],
                            "role": person["role"],
                            "building_id": (
                                buildings[person["building"]] if "building" in person else None
                            ),
                            "name": person["name"],
                            "hours_per_day": person.get("hours_per_day"),
                        },
                    )
                households = [
                    [
                        residents.add_household(
                            session,
                            committee,
                            {
                                "building_id": building,
                                "unit": unit,
                                "room": room,
                                "people": people,
                                "flags": flags,
                                "note": note,
                            },
                        ).id
                        for unit, room, people, flags, note in HOUSEHOLDS
                    ]
                    for building in buildings
                ]
                last_round = orders.open_round(session, committee, LAST_ROUND)
                for title, chosen, wanted_by in (
                    (LAST_ROUND, last_round, LAST_ORDERS),
                    (ROUND, None, ORDERS),
                ):
                    order_round = chosen or orders.open_round(session, committee, title)
                    for index, wanted in wanted_by.items():
                        added.orders += orders.enter_batch(
                            session,
                            committee,
                            order_round,
                            building_id=buildings[index],
                            rows=[
                                {"household_id": households[index][row], "items": items}
                                for row, items in wanted.items()
                            ],
                        )
                    if chosen is not None:
                        # Last week's round: confirmed (its need goes to dispatch), then
                        # what arrived split over the households, vulnerable first.
                        orders.confirm(session, rt.outbox, committee, order_round, None)
                        _known(session, gateway, org_id)
                        distribution.on_receipt_confirmed(
                            session, _receipt(org_id, order_round.id, RECEIVED)
                        )
                        made = distribution.distribute(
                            session,
                            committee,
                            {"rule": "vulnerable_first", "round_id": order_round.id},
                        )
                        added.deliveries = len(
                            distribution.deliveries(session, committee, distribution_id=made.id)
                        )
                added.cases = _cases(session, org_id, users, buildings, households)
            added.people = list(DEMO_PEOPLE)
            added.buildings = len(buildings)
            added.households = sum(len(of_building) for of_building in households)
        finally:
            rt.dispose()
    return added


def _known(session: Any, gateway: ServiceRuntime, org_id: uuid.UUID) -> None:
    """The community service's copy of the organisation, as the gateway's org.* events
    leave it, where they have not arrived yet (no worker runs while the demo loads): a
    receipt is taken in only for a community the service knows. Events arriving later
    are older than this copy, and change nothing."""
    from services.community.models import Organisation
    from services.gateway.models import Organisation as GatewayOrganisation
    from shared.db import utcnow

    if session.get(Organisation, org_id) is not None:
        return
    with gateway.session_factory() as at_gateway:
        org = at_gateway.get(GatewayOrganisation, org_id)
        assert org is not None
        session.add(
            Organisation(
                id=org.id,
                name=org.name,
                kind=org.kind,
                region=org.region,
                address=org.address,
                status=org.status,
                source_version=org.version,
                synced_at=utcnow(),
            )
        )
        session.flush()


def _receipt(org_id: uuid.UUID, round_id: uuid.UUID, items: dict[str, int]) -> Any:
    """A receipt of the demo's shipment to the community, as dispatch announces one:
    everything accepted. Its ids are derived from the round, so they are the same on
    every installation."""
    from shared.db import utcnow
    from shared.events import new_event

    shipment_id = uuid.uuid5(round_id, "demo shipment")
    return new_event(
        "receipt.confirmed",
        {
            "receipt_id": uuid.uuid5(round_id, "demo receipt"),
            "shipment_id": shipment_id,
            "sequence": 1,
            "recipient_org_id": org_id,
            "confirmed_at": utcnow(),
            "lines": [
                {
                    "shipment_line_id": uuid.uuid5(shipment_id, item),
                    "allocation_id": uuid.uuid5(shipment_id, f"allocation {item}"),
                    "pledge_line_id": uuid.uuid5(shipment_id, f"pledge line {item}"),
                    "need_line_id": uuid.uuid5(shipment_id, f"need line {item}"),
                    "item": item,
                    "quantity": quantity,
                    "accepted": quantity,
                    "damaged": 0,
                    "short": 0,
                }
                for item, quantity in items.items()
            ],
        },
        producer="dispatch",
        aggregate_id=shipment_id,
        aggregate_version=1,
    )


def _cases(
    session: Any,
    org_id: uuid.UUID,
    users: dict[str, uuid.UUID],
    buildings: list[uuid.UUID],
    households: list[list[uuid.UUID]],
) -> int:
    """The demo's cases, each taken in by a leader or the social worker and handed to
    the social worker with most hours to spare (the demo's one)."""
    from services.community.cases import service as cases
    from services.community.residents.domain import Standing

    committee = Standing(org_id=org_id, committee=True)
    by_email = {person["email"]: person for person in DEMO_PEOPLE}
    for building, household, kind, urgency, summary, taker in CASES:
        person = by_email[taker]
        standing = Standing(
            org_id=org_id,
            user_id=users[taker],
            leads=frozenset(
                {buildings[building]} if person["role"] == "building_leader" else set()
            ),
            social_worker=person["role"] == "social_worker",
        )
        case = cases.take_in(
            session,
            standing,
            {
                "kind": kind,
                "urgency": urgency,
                "summary": summary,
                "household_id": households[building][household],
            },
        )
        cases.assign(session, committee, case.id, social_worker_id=None, auto=True)
    return len(CASES)
