"""`aidlink demo load`: demo organisations, users, pledges and needs, and the demo
community inside, once."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from services.cli import main
from services.community.models import Appointment, Building, Household, OrderLine, OrderRound
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
    assert "community: 2 building(s), 12 household(s) and 7 household order(s) added" in (
        first.output
    )
    for person in ("leader1", "leader2", "volunteer", "socialworker"):
        assert f"{person}@demo.aidlink.local" in first.output

    # The community inside: two buildings, a dozen households, its people appointed, an
    # open round in which seven households ordered.
    assert _count(stack, "community", Building) == 2
    assert _count(stack, "community", Household) == 12
    with stack.runtime("community").session_factory() as session:
        roles = sorted(session.scalars(select(Appointment.role)))
        rounds = list(session.scalars(select(OrderRound.status)))
        ordering = session.scalar(select(func.count(func.distinct(OrderLine.household_id))))
    assert roles == ["building_leader", "building_leader", "social_worker", "volunteer"]
    assert rounds == ["open"]
    assert ordering == 7

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

    again = runner.invoke(main, ["demo", "load"], env=env)
    assert again.exit_code == 0, again.output
    assert "0 organisation(s) registered, 6 already there" in again.output
    assert "0 pledge(s) and 0 need(s) added" in again.output
    assert "community: 0 building(s), 0 household(s) and 0 household order(s)" in again.output
    assert "demo sign-ins" not in again.output
    assert _count(stack, "donations", Pledge) == 2
    assert _count(stack, "dispatch", Need) == 3
