"""The organisations of an allocation saga on real donations and dispatch workers, and
the lines tests read back from each service's database."""

from __future__ import annotations

import uuid
from typing import Any

from services.dispatch.models import NeedLine, SupplyLine
from services.donations.models import PledgeLine
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.stack import Stack


def saga_world(stack: Stack, *, carriers: bool = False, **extra: str) -> dict[str, Account]:
    """Donations and dispatch workers running, and verified organisations: a
    coordinator, a donor in Shenzhen, a hospital and a community committee in Wuhan,
    with ``carriers`` two logistics companies (``carrier`` and ``rival``), and the
    ``extra`` organisations by name -> kind, in Wuhan."""
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    people = {
        "coordinator": coordinator(client, boss),
        "donor": verified(client, boss, kind="foundation", region="4403"),
        "hospital": verified(client, boss, kind="hospital", region="420103"),
        "community": verified(client, boss, kind="community_committee", region="420102"),
    }
    if carriers:
        for name in ("carrier", "rival"):
            people[name] = verified(client, boss, kind="logistics_company", region="4201")
    for name, kind in extra.items():
        people[name] = verified(client, boss, kind=kind, region="420102")
    return people


def supply_known(stack: Stack, pledge: dict[str, Any]) -> bool:
    """Dispatch has heard of every line of the pledge."""
    with stack.runtime("dispatch").session_factory() as session:
        return all(
            session.get(SupplyLine, uuid.UUID(line["id"])) is not None for line in pledge["lines"]
        )


def need_line(stack: Stack, line_id: str) -> NeedLine:
    with stack.runtime("dispatch").session_factory() as session:
        line = session.get(NeedLine, uuid.UUID(line_id))
        assert line is not None, line_id
        return line


def pledge_line(stack: Stack, line_id: str) -> PledgeLine:
    with stack.runtime("donations").session_factory() as session:
        line = session.get(PledgeLine, uuid.UUID(line_id))
        assert line is not None, line_id
        return line


def supply_line(session: Any, quantity: int, donor: uuid.UUID | None = None) -> uuid.UUID:
    """A pledge line of masks in dispatch's supply read model, as ``pledge.created``
    would leave it (one line, open); returns its id."""
    from services.dispatch.allocations import service as saga

    line_id = uuid.uuid4()
    saga.apply_pledge(
        session,
        {
            "id": uuid.uuid4(),
            "org_id": donor or uuid.uuid4(),
            "status": "open",
            "origin": {"region": "4403"},
            "lines": [
                {
                    "id": line_id,
                    "item": "mask",
                    "quantity": quantity,
                    "reserved": 0,
                    "shipped": 0,
                    "delivered": 0,
                    "status": "available",
                }
            ],
        },
        1,
    )
    return line_id
