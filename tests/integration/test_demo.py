"""`aidlink demo load`: demo organisations, users, pledges and needs, and the demo
community inside (with last week's round delivered door to door and two cases), and
its help from people's time (helpers, requests, sessions, a hotline's calls), once."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from services.cli import main
from services.community.models import (
    Appointment,
    Building,
    Case,
    Helper,
    HelpSession,
    HotlineCall,
    Household,
    HouseholdDelivery,
    OrderLine,
    OrderRound,
)
from services.dispatch.models import Need, SupplyLine
from services.donations.models import Pledge
from tests.support.stack import Stack, eventually


def _count(stack: Stack, service: str, model: type) -> int:
    with stack.runtime(service).session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_demo_load_gives_a_new_installation_supply_and_demand_once(stack: Stack) -> None:
    runner = CliRunner()
    env = stack.settings.to_env()

    first = runner.invoke(main, ["demo", "load"], env=env)
    assert first.exit_code == 0, first.output
    assert "6 organisation(s) registered" in first.output
    assert "2 pledge(s) and 3 need(s) added" in first.output
    assert "donor@demo.aidlink.local" in first.output
    assert (
        "community: 2 building(s), 12 household(s), 17 household order(s), "
        "10 delivery(ies) and 2 case(s) added"
    ) in first.output
    for person in ("leader1", "leader2", "volunteer", "socialworker", "counsellor"):
        assert f"{person}@demo.aidlink.local" in first.output
    assert (
        "help: 2 helper(s), 5 request(s), 5 session(s) and 6 hotline call(s) added"
    ) in first.output
    # Help: two verified helpers, each with sessions booked ahead to confirm.
    with stack.runtime("community").session_factory() as session:
        helpers = session.scalars(select(Helper)).all()
        booked = session.execute(select(HelpSession.helper_id, HelpSession.status)).all()
    assert {h.status for h in helpers} == {"verified"} and len(helpers) == 2
    assert {status for _h, status in booked} == {"booked"}

    # The community inside: two buildings, a dozen households, its people appointed, an
    # open round in which seven households ordered, and last week's round confirmed.
    assert _count(stack, "community", Building) == 2
    assert _count(stack, "community", Household) == 12
    with stack.runtime("community").session_factory() as session:
        roles = sorted(session.scalars(select(Appointment.role)))
        rounds = dict(session.execute(select(OrderRound.status, OrderRound.id)).all())
        ordering = session.scalar(
            select(func.count(func.distinct(OrderLine.household_id))).where(
                OrderLine.round_id == rounds["open"]
            )
        )
    assert roles == ["building_leader", "building_leader", "social_worker", "volunteer"]
    assert sorted(rounds) == ["confirmed", "open"]
    assert ordering == 7

    # What arrived of last week's round is split vulnerable first: the volunteer of
    # Building 1 has five doors to visit; the elderly resident living alone gets all
    # the vegetables she ordered; every unit received is out for delivery.
    from services.community.distribution.service import accounts

    with stack.runtime("community").session_factory() as session:
        names = dict(session.execute(select(Building.id, Building.name)).all())
        doors = session.execute(
            select(HouseholdDelivery, Household).join(
                Household, Household.id == HouseholdDelivery.household_id
            )
        ).all()
        org_id = session.scalar(select(Building.org_id))
        assert org_id is not None
        figures = accounts(session, org_id)
        cases = list(session.scalars(select(Case)))
    assert len(doors) == 10
    assert all(delivery.status == "pending" for delivery, _h in doors)
    first_building = sorted(
        (h.unit, h.room) for d, h in doors if names[d.building_id] == "Building 1"
    )
    assert first_building == [("1", "101"), ("1", "102"), ("1", "201"), ("2", "101"), ("2", "301")]
    [alone] = [
        d
        for d, h in doors
        if names[d.building_id] == "Building 1" and h.room == "101" and h.unit == "1"
    ]
    assert alone.items == {"vegetables": 2_000, "rice": 2_000}
    assert figures["vegetables"] == {
        "received": 20_000,
        "delivered": 0,
        "pending": 20_000,
        "in_stock": 0,
        "written_off": 0,
    }
    # Two residents' cases, each in the social worker's hands.
    assert sorted(case.kind for case in cases) == ["counselling", "medicine_pickup"]
    assert {case.status for case in cases} == {"assigned"}
    assert len({case.assigned_to for case in cases}) == 1

    # Needs of verified organisations are open; the unverified hospital's is a draft.
    with stack.runtime("dispatch").session_factory() as session:
        statuses = sorted(session.scalars(select(Need.status)))
    assert statuses == ["draft", "open", "open"]
    assert _count(stack, "donations", Pledge) == 2

    # The pledges reach dispatch's supply read model through the events.
    stack.start_worker("gateway")
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    eventually(lambda: _count(stack, "dispatch", SupplyLine) == 6, timeout=60)
    # Last week's confirmed round became the community's need.
    eventually(lambda: _count(stack, "dispatch", Need) == 4, timeout=60)

    again = runner.invoke(main, ["demo", "load"], env=env)
    assert again.exit_code == 0, again.output
    assert "0 organisation(s) registered, 6 already there" in again.output
    assert "0 pledge(s) and 0 need(s) added" in again.output
    assert (
        "community: 0 building(s), 0 household(s), 0 household order(s), 0 delivery(ies) "
        "and 0 case(s)"
    ) in again.output
    assert "demo sign-ins" not in again.output
    assert _count(stack, "donations", Pledge) == 2
    assert _count(stack, "dispatch", Need) == 4
    assert _count(stack, "community", HouseholdDelivery) == 10
    assert _count(stack, "community", Case) == 2
    assert "help: 0 helper(s), 0 request(s), 0 session(s) and 0 hotline call(s)" in again.output
    assert _count(stack, "community", HelpSession) == 5
    assert _count(stack, "community", HotlineCall) == 6
