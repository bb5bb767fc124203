"""`aidlink demo load`: demo organisations, users, pledges and needs, once."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from services.cli import main
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
    assert _count(stack, "donations", Pledge) == 2
    assert _count(stack, "dispatch", Need) == 3
