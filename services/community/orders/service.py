"""Use cases of household orders: rounds, batches entered by building leaders, the
totals the committee confirms, and the need it asks of relief supplies.

The need goes out as ``community.need_requested`` with item totals and counts only.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.community.models import Building, Household, OrderLine, OrderRound
from services.community.orders import domain
from services.community.residents import service as residents
from services.community.residents.domain import Standing
from shared.catalog import get_item
from shared.catalog.community import COMMUNITY_ITEMS, community_item
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken
from shared.events import new_event
from shared.outbox import Outbox

log = logging.getLogger(__name__)


def list_rounds(session: Session, standing: Standing) -> list[OrderRound]:
    return list(
        session.scalars(
            select(OrderRound)
            .where(OrderRound.org_id == standing.org_id)
            .order_by(OrderRound.created_at.desc(), OrderRound.id)
        )
    )


def open_round(session: Session, standing: Standing, data: dict[str, Any]) -> OrderRound:
    residents.require_committee(standing)
    limits = data.get("limits") or {}
    unknown = [code for code in limits if community_item(code) is None]
    if unknown:
        raise RuleBroken(
            "Limits are set per item of the community catalogue.",
            errors={"limits": [f"{code!r} is not an item to order." for code in unknown]},
        )
    order_round = OrderRound(
        id=uuid.uuid4(),
        org_id=standing.org_id,
        title=data["title"],
        status="open",
        limits={community_item(code).code: int(n) for code, n in limits.items()},  # type: ignore[union-attr]
    )
    session.add(order_round)
    session.flush()
    return order_round


def get_round(session: Session, standing: Standing, round_id: uuid.UUID) -> OrderRound:
    order_round = session.get(OrderRound, round_id)
    if order_round is None or order_round.org_id != standing.org_id:
        raise NotFound(f"No order round {round_id}.", slug="round-not-found")
    return order_round


def _building_households(
    session: Session, standing: Standing, building_id: uuid.UUID
) -> dict[uuid.UUID, Household]:
    residents.get_building(session, standing.org_id, building_id)
    if not standing.keeps_households_of(building_id):
        raise Forbidden(
            "Orders are entered by the committee and the building's leader.", slug="forbidden"
        )
    return {
        h.id: h
        for h in session.scalars(
            select(Household).where(
                Household.building_id == building_id, Household.erased.is_(False)
            )
        )
    }


def enter_batch(
    session: Session,
    standing: Standing,
    order_round: OrderRound,
    *,
    building_id: uuid.UUID,
    rows: list[dict[str, Any]] | None = None,
    text: str | None = None,
) -> int:
    """A building's orders, one row a household: each row replaces what that household
    ordered in the round. All rows or none: a batch with a wrong row changes nothing
    and names every row at fault. Returns how many households the batch set."""
    if order_round.status != "open":
        raise Conflict("This round is confirmed; orders are closed.", slug="round-confirmed")
    households = _building_households(session, standing, building_id)
    label = {h.id: domain.address_key(h.unit, h.room) for h in households.values()}
    if text is not None:
        batch = domain.parse_paste(text, {key: hid for hid, key in label.items()})
    else:
        batch = domain.Batch()
        for number, row in enumerate(rows or [], start=1):
            if row["household_id"] not in households:
                batch.refuse(f"row {number}", "No such household in this building.")
                continue
            batch.rows.append((row["household_id"], dict(row["items"])))
    domain.check_rows(batch, order_round.limits, label)
    if batch.errors:
        raise RuleBroken("Some rows cannot be taken; nothing was saved.", errors=batch.errors)
    for household_id, wanted in batch.rows:
        session.execute(
            delete(OrderLine).where(
                OrderLine.round_id == order_round.id, OrderLine.household_id == household_id
            )
        )
        for code, quantity in wanted.items():
            if quantity > 0:
                session.add(
                    OrderLine(
                        id=uuid.uuid4(),
                        round_id=order_round.id,
                        household_id=household_id,
                        building_id=building_id,
                        item=community_item(code).code,  # type: ignore[union-attr]
                        quantity=quantity,
                        entered_by=standing.user_id,
                    )
                )
    session.flush()
    log.info("order round %s: %d household(s) entered", order_round.id, len(batch.rows))
    return len(batch.rows)


def orders_of(
    session: Session, standing: Standing, order_round: OrderRound, building_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Each household of the building with what it ordered (the leader's sheet)."""
    if not standing.sees_households_of(building_id):
        raise Forbidden("Another building's orders are its leader's.", slug="forbidden")
    residents.get_building(session, standing.org_id, building_id)
    ordered: dict[uuid.UUID, dict[str, int]] = {}
    for line in session.scalars(
        select(OrderLine).where(
            OrderLine.round_id == order_round.id, OrderLine.building_id == building_id
        )
    ):
        ordered.setdefault(line.household_id, {})[line.item] = line.quantity
    households = residents.list_households(session, standing, building_id)
    return [
        {
            "household_id": h.id,
            "unit": h.unit,
            "room": h.room,
            "people": h.people,
            "items": ordered.get(h.id, {}),
        }
        for h in households
    ]


def totals_of(session: Session, standing: Standing, order_round: OrderRound) -> dict[str, Any]:
    """Per building and for the community: what was ordered, per item, with how many
    households ordered and how many people they are. A leader sees their buildings'
    figures; the committee (and a coordinator) all of them."""
    lines = list(session.scalars(select(OrderLine).where(OrderLine.round_id == order_round.id)))
    seen = standing.buildings_seen()
    if seen is not None:
        lines = [line for line in lines if line.building_id in seen]
    people = dict(
        session.execute(
            select(Household.id, Household.people).where(
                Household.id.in_({line.household_id for line in lines})
            )
        ).all()
    )
    found = domain.totals(
        ((line.building_id, line.household_id, line.item, line.quantity) for line in lines),
        people,
    )
    names = {
        b.id: b.name
        for b in session.scalars(select(Building).where(Building.org_id == standing.org_id))
    }
    per_building = []
    for building_id, items in sorted(found.by_building.items(), key=lambda b: names.get(b[0], "")):
        of_building = [line for line in lines if line.building_id == building_id]
        households = {line.household_id for line in of_building}
        per_building.append(
            {
                "building_id": building_id,
                "name": names.get(building_id, ""),
                "items": items,
                "households": len(households),
                "people": sum(people.get(h, 0) for h in households),
            }
        )
    return {
        "round_id": order_round.id,
        "status": order_round.status,
        "buildings": per_building,
        "community": found.community,
        "households": found.households,
        "people": found.people,
        "requested": order_round.requested,
    }


def confirm(
    session: Session,
    outbox: Outbox,
    standing: Standing,
    order_round: OrderRound,
    quantities: dict[str, int] | None,
) -> OrderRound:
    """The committee confirms the round's totals (as ordered, or as it edited them);
    what relief supplies carry goes to dispatch as the community's need."""
    residents.require_committee(standing)
    if order_round.status != "open":
        raise Conflict("This round is already confirmed.", slug="round-confirmed")
    figures = totals_of(session, standing, order_round)
    requested = dict(figures["community"])
    for code, quantity in (quantities or {}).items():
        item = community_item(code)
        if item is None:
            raise RuleBroken(
                "Confirm items of the community catalogue.",
                errors={"quantities": [f"{code!r} is not an item to order."]},
            )
        if quantity > 0:
            requested[item.code] = quantity
        else:
            requested.pop(item.code, None)
    if not requested:
        raise RuleBroken(
            "Nothing was ordered in this round.", errors={"quantities": ["Nothing to confirm."]}
        )
    order_round.status = "confirmed"
    order_round.requested = requested
    order_round.people_served = figures["people"]
    order_round.confirmed_at = utcnow()
    order_round.confirmed_by = standing.user_id
    lines = []
    for item in COMMUNITY_ITEMS:
        if item.relief_item and requested.get(item.code):
            lines.append(
                {
                    "item": item.relief_item,
                    "quantity": requested[item.code] * item.base_per_unit,
                    "unit": get_item(item.relief_item).base_unit,
                }
            )
    session.flush()
    if lines:
        outbox.add(
            session,
            new_event(
                "community.need_requested",
                {
                    "org_id": standing.org_id,
                    "round_id": order_round.id,
                    "title": order_round.title,
                    "lines": lines,
                    "households": figures["households"],
                    "people_served": figures["people"],
                },
                producer="community",
                aggregate_id=order_round.id,
                aggregate_version=order_round.version,
            ),
        )
    return order_round
