"""Use cases of the distribution inside a community: what its receipts put in stock,
the committee's split of it over households into delivery lists per building, the
volunteers' outcomes, and write-offs. Every unit received is delivered, in stock, out
for delivery or written off with a reason (``check-invariants`` checks it)."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from services.community.distribution import domain
from services.community.models import (
    Distribution,
    Household,
    HouseholdDelivery,
    OrderLine,
    OrderRound,
    Organisation,
    ReachSnapshot,
    ReachUnits,
    ReceivedGoods,
    StockMove,
)
from services.community.residents import service as residents
from services.community.residents.domain import Standing
from shared.catalog import CatalogError, get_item
from shared.catalog.community import COMMUNITY_ITEMS, CommunityItem
from shared.db import upsert_insert, utcnow
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken
from shared.events import Event, new_event
from shared.events.community import reach_aggregate_id
from shared.inbox import Handler
from shared.outbox import Outbox

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "not_home", "refused", "returned")
# Outcomes whose goods go back to the community's stock.
BACK_TO_STOCK = ("not_home", "refused", "returned")

_BY_RELIEF = {item.relief_item: item for item in COMMUNITY_ITEMS if item.relief_item}


def community_item_of(relief_item: str) -> CommunityItem | None:
    return _BY_RELIEF.get(relief_item)


def receipt_handler(outbox: Outbox) -> Handler:
    """``receipt.confirmed`` as the community service takes it in: into stock, and,
    when the goods change which shipments the units already delivered came from (a
    correction, or goods that arrive after more was delivered than received), a new
    snapshot of the community's reach for dispatch naming those shares, if it has sent
    one."""

    def handle(session: Session, event: Event) -> None:
        taken = on_receipt_confirmed(session, event)
        if taken is None:
            return
        org_id, moved = taken
        held = session.get(ReachSnapshot, org_id)
        if held is None or held.sequence == 0:
            return
        session.flush()
        delivered = _units_delivered(session, org_id)
        shares = [
            share
            for item, (lo, hi) in sorted(moved.items())
            for share in _shares_in(session, org_id, item, lo, hi, delivered.get(item, 0))
        ]
        if shares:
            announce_reach(session, outbox, org_id, _next_snapshot(session, org_id), shares)

    return handle


def on_receipt_confirmed(
    session: Session, event: Event
) -> tuple[uuid.UUID, dict[str, tuple[int, int]]] | None:
    """A receipt (or its correction) of a shipment to a community: what it accepted goes
    into stock, and its goods into line (first in, first out); a correction moves only
    the difference, and the goods after it in line. Returns the community and, per
    item, the stretch of the item's units whose goods may now be different
    (:func:`_shares_in`), or None if the recipient is not a community."""
    data = event.data()
    org = session.get(Organisation, uuid.UUID(str(data["recipient_org_id"])))
    if org is None or org.kind != residents.COMMUNITY_KIND:
        return None
    # After the deliveries being recorded, before the next: their snapshots and the
    # goods' places in line agree.
    lock_reach(session, org.id)
    delivered = _units_delivered(session, org.id)
    accepted: dict[str, int] = defaultdict(int)
    for line in data["lines"]:
        accepted[line["item"]] += int(line["accepted"])
    shipment_id = uuid.UUID(str(data["shipment_id"]))
    sequence = int(data["sequence"])
    moved: dict[str, tuple[int, int]] = {}
    for item, quantity in sorted(accepted.items()):
        held = session.get(ReceivedGoods, (shipment_id, item))
        if held is not None and (
            held.receipt_sequence > sequence
            # (goods from before receipts were numbered here count as a first receipt:
            # a first receipt other than the one they hold came before a correction)
            or (sequence == 1 and str(held.receipt_id) != str(data["receipt_id"]))
        ):
            # An original arriving after its correction: the correction stands.
            continue
        before = held.accepted if held is not None else 0
        if held is None:
            end, last_in = _end_of_line(session, org.id, item)
            held = ReceivedGoods(
                shipment_id=shipment_id,
                item=item,
                org_id=org.id,
                accepted=quantity,
                receipt_id=data["receipt_id"],
                receipt_sequence=sequence,
                # Last in line, after every goods before it whatever the clocks say.
                first_in=max(utcnow(), last_in + timedelta(microseconds=1))
                if last_in is not None
                else utcnow(),
                received_before=end,
            )
            session.add(held)
            if delivered.get(item, 0) > held.received_before:
                # Units delivered beyond what was received until now came from these.
                moved[item] = (held.received_before, held.received_before + quantity)
        else:
            change = quantity - before
            if change:
                _move_line_after(session, held, change)
            held.accepted = quantity
            held.receipt_id = data["receipt_id"]
            held.receipt_sequence = sequence
            # These goods' share and those after them in line, up to the units
            # delivered (as many more as the goods after them moved on).
            moved[item] = (held.received_before, delivered.get(item, 0) + max(change, 0))
        if quantity != before:
            session.add(
                StockMove(
                    id=uuid.uuid4(),
                    org_id=org.id,
                    item=item,
                    quantity=quantity - before,
                    kind="received",
                    ref_id=shipment_id,
                )
            )
    return org.id, moved


# The order of an item's goods in line: their place, then (for goods that accepted
# nothing, sharing a place) when they came in, then the shipment.
_LINE_ORDER = (ReceivedGoods.received_before, ReceivedGoods.first_in, ReceivedGoods.shipment_id)


def _end_of_line(session: Session, org_id: uuid.UUID, item: str) -> tuple[int, datetime | None]:
    """The units of ``item`` accepted of all the community's goods in line, and when
    the last of them came in (None for an empty line)."""
    goods = ReceivedGoods
    last = session.execute(
        select(goods.received_before + goods.accepted, goods.first_in)
        .where(goods.org_id == org_id, goods.item == item)
        .order_by(*(column.desc() for column in _LINE_ORDER))
        .limit(1)
    ).first()
    return (int(last[0]), last[1]) if last is not None else (0, None)


def _after_in_line(held: ReceivedGoods) -> Any:
    """The condition on goods of the same community and item: after ``held`` in line."""
    goods = ReceivedGoods
    return and_(
        goods.org_id == held.org_id,
        goods.item == held.item,
        or_(
            goods.received_before > held.received_before,
            and_(
                goods.received_before == held.received_before,
                or_(
                    goods.first_in > held.first_in,
                    and_(goods.first_in == held.first_in, goods.shipment_id > held.shipment_id),
                ),
            ),
        ),
    )


def _move_line_after(session: Session, held: ReceivedGoods, change: int) -> None:
    """A correction changed what ``held`` accepted by ``change``: the goods after it in
    line begin that much further on (or back)."""
    session.execute(
        update(ReceivedGoods)
        .where(_after_in_line(held))
        .values(received_before=ReceivedGoods.received_before + change)
        .execution_options(synchronize_session=False)
    )


def _units_delivered(session: Session, org_id: uuid.UUID) -> dict[str, int]:
    """The units of each item the community delivered, as kept."""
    return {
        item: int(quantity)
        for item, quantity in session.execute(
            select(ReachUnits.item, ReachUnits.quantity).where(ReachUnits.org_id == org_id)
        )
    }


def _shares_in(
    session: Session, org_id: uuid.UUID, item: str, lo: int, hi: int, delivered: int
) -> list[dict[str, Any]]:
    """The shares of the ``delivered`` units of ``item`` that the goods holding units
    ``lo`` to ``hi`` of the line gave (first in, first out): a few goods whatever the
    community received before, read through the line's index."""
    if hi <= lo:
        return []
    goods = ReceivedGoods
    of_item = (goods.org_id == org_id, goods.item == item)
    first = session.scalar(
        select(func.max(goods.received_before)).where(*of_item, goods.received_before <= lo)
    )
    found = session.scalars(
        select(goods)
        .where(*of_item, goods.received_before >= (first or 0), goods.received_before < hi)
        .order_by(*_LINE_ORDER)
    )
    return [
        {
            "shipment_id": held.shipment_id,
            "receipt_id": held.receipt_id,
            "item": item,
            "quantity": max(0, min(held.accepted, delivered - held.received_before)),
        }
        for held in found
    ]


def stock_of(session: Session, org_id: uuid.UUID) -> dict[str, int]:
    """What is in stock now, per relief item, in its base unit."""
    return {
        item: int(total)
        for item, total in session.execute(
            select(StockMove.item, func.sum(StockMove.quantity))
            .where(StockMove.org_id == org_id)
            .group_by(StockMove.item)
        )
        if total
    }


def _claims(
    session: Session, org_id: uuid.UUID, round_id: uuid.UUID | None, item: CommunityItem
) -> list[domain.Claim]:
    ordered: dict[uuid.UUID, int] = {}
    if round_id is not None:
        for household_id, quantity in session.execute(
            select(OrderLine.household_id, OrderLine.quantity).where(
                OrderLine.round_id == round_id, OrderLine.item == item.code
            )
        ):
            ordered[household_id] = quantity
    households = session.scalars(
        select(Household)
        .where(Household.org_id == org_id, Household.erased.is_(False))
        .order_by(Household.building_id, Household.unit, Household.room)
    )
    return [domain.Claim(h.id, ordered.get(h.id, 0), h.people, h.vulnerable) for h in households]


def distribute(session: Session, standing: Standing, data: dict[str, Any]) -> Distribution:
    """Split what is in stock of each item (or of those named) over the households by
    ``rule``, into one delivery a household; the rest stays in stock."""
    residents.require_committee(standing)
    org_id = standing.org_id
    rule = data["rule"]
    round_id = data.get("round_id")
    if round_id is None:
        round_id = session.scalar(
            select(OrderRound.id)
            .where(OrderRound.org_id == org_id, OrderRound.status == "confirmed")
            .order_by(OrderRound.confirmed_at.desc())
            .limit(1)
        )
    elif (found := session.get(OrderRound, round_id)) is None or found.org_id != org_id:
        raise NotFound(f"No order round {round_id}.", slug="round-not-found")
    # Two splits of one community's stock at once (the committee's, a hotline's
    # emergency delivery) would both see the same stock: the community's row, locked
    # until the commit, puts them one after the other (on PostgreSQL; SQLite's writers
    # queue anyway).
    session.execute(select(Organisation.id).where(Organisation.id == org_id).with_for_update())
    stock = stock_of(session, org_id)
    wanted = data.get("items") or sorted(stock)
    by_hand: dict[str, dict[uuid.UUID, int]] = defaultdict(dict)
    for household_id, items in (data.get("allocations") or {}).items():
        for code, units in items.items():
            by_hand[code][uuid.UUID(str(household_id))] = units
    households = {
        h.id: h
        for h in session.scalars(
            select(Household).where(Household.org_id == org_id, Household.erased.is_(False))
        )
    }
    plan: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    for relief in wanted:
        item = community_item_of(relief)
        if item is None or stock.get(relief, 0) <= 0:
            raise RuleBroken(
                f"Nothing of {relief!r} in stock to distribute.",
                errors={"items": [f"{relief!r} is not in stock."]},
            )
        steps = stock[relief] // item.base_per_unit
        hand = {h: n for h, n in by_hand.get(item.code, {}).items()}
        unknown = [str(h) for h in hand if h not in households]
        if unknown:
            raise RuleBroken(
                "Allocate to the community's households.",
                errors={"allocations": [f"No household {h}." for h in unknown]},
            )
        try:
            shares = domain.split(steps, _claims(session, org_id, round_id, item), rule, hand)
        except ValueError as exc:
            raise RuleBroken(str(exc), errors={"allocations": [str(exc)]}) from None
        for household_id, units in shares.items():
            plan[household_id][relief] = units * item.base_per_unit
    if not plan:
        raise Conflict("The rule gives nobody anything from this stock.", slug="nothing-to-split")
    distribution = Distribution(
        id=uuid.uuid4(), org_id=org_id, rule=rule, round_id=round_id, created_by=standing.user_id
    )
    session.add(distribution)
    session.flush()
    for household_id, items in plan.items():
        delivery = HouseholdDelivery(
            id=uuid.uuid4(),
            org_id=org_id,
            distribution_id=distribution.id,
            building_id=households[household_id].building_id,
            household_id=household_id,
            items=items,
            status="pending",
        )
        session.add(delivery)
        for relief, quantity in items.items():
            session.add(
                StockMove(
                    id=uuid.uuid4(),
                    org_id=org_id,
                    item=relief,
                    quantity=-quantity,
                    kind="allocated",
                    ref_id=delivery.id,
                    by=standing.user_id,
                )
            )
    session.flush()
    log.info("distribution %s: %d deliveries by %s", distribution.id, len(plan), rule)
    return distribution


def deliveries(
    session: Session,
    standing: Standing,
    *,
    building_id: uuid.UUID | None = None,
    distribution_id: uuid.UUID | None = None,
    status: str | None = None,
    delivery_id: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    """A building's delivery list: each household's door, what to bring and the note
    for whoever brings it; for its volunteers, its leader and the committee.
    ``delivery_id``: that one delivery alone (as a list), read by its key."""
    stmt = select(HouseholdDelivery, Household).join(
        Household, Household.id == HouseholdDelivery.household_id
    )
    stmt = stmt.where(HouseholdDelivery.org_id == standing.org_id)
    if building_id is not None:
        if not standing.sees_deliveries_of(building_id):
            raise Forbidden("Another building's deliveries are its own.", slug="forbidden")
        stmt = stmt.where(HouseholdDelivery.building_id == building_id)
    elif not standing.sees_everything:
        stmt = stmt.where(HouseholdDelivery.building_id.in_(standing.leads | standing.delivers))
    if distribution_id is not None:
        stmt = stmt.where(HouseholdDelivery.distribution_id == distribution_id)
    if status is not None:
        stmt = stmt.where(HouseholdDelivery.status == status)
    if delivery_id is not None:
        stmt = stmt.where(HouseholdDelivery.id == delivery_id)
    rows = list(session.execute(stmt).all())
    rows.sort(key=lambda r: (str(r[0].building_id), r[1].unit, r[1].room))
    return [
        {
            "id": delivery.id,
            "distribution_id": delivery.distribution_id,
            "building_id": delivery.building_id,
            "household_id": household.id,
            "unit": household.unit,
            "room": household.room,
            "note": household.note,
            "items": delivery.items,
            "status": delivery.status,
            "outcome_note": delivery.note,
            "done_at": delivery.done_at,
        }
        for delivery, household in rows
    ]


def record_outcome(
    session: Session,
    outbox: Outbox,
    standing: Standing,
    delivery_id: uuid.UUID,
    status: str,
    note: str | None,
) -> HouseholdDelivery:
    """A volunteer's outcome at the door; what was not delivered goes back to stock.
    A delivery made changes what the community reached: dispatch hears the new counts
    (``community.units_distributed``)."""
    delivery = session.get(HouseholdDelivery, delivery_id)
    if delivery is None or delivery.org_id != standing.org_id:
        raise NotFound(f"No delivery {delivery_id}.", slug="delivery-not-found")
    if not (standing.committee or delivery.building_id in standing.leads | standing.delivers):
        raise NotFound(f"No delivery {delivery_id}.", slug="delivery-not-found")
    sequence = 0
    if status == "delivered":
        # Deliveries of one community are recorded one after the other from here on,
        # so that each snapshot sent counts every delivery made before it.
        sequence = _next_snapshot(session, standing.org_id)
        session.refresh(delivery)
    if delivery.status != "pending":
        raise Conflict(
            f"This delivery is already {delivery.status}.",
            slug="delivery-done",
            current_status=delivery.status,
        )
    done_at = utcnow()
    if status == "delivered":
        # The household's row before the delivery's, in the order an erasure of the
        # community's residents writes them (households, then their deliveries).
        _count_delivery(session, delivery, done_at)
    delivery.status = status
    delivery.note = note
    delivery.done_at = done_at
    delivery.done_by = standing.user_id
    if status in BACK_TO_STOCK:
        for relief, quantity in delivery.items.items():
            session.add(
                StockMove(
                    id=uuid.uuid4(),
                    org_id=delivery.org_id,
                    item=relief,
                    quantity=quantity,
                    kind="returned",
                    ref_id=delivery.id,
                    by=standing.user_id,
                )
            )
    session.flush()
    if sequence:
        shares = delivery_shares(session, standing.org_id, delivery.items)
        announce_reach(session, outbox, standing.org_id, sequence, shares)
    return delivery


def delivery_shares(
    session: Session, org_id: uuid.UUID, items: dict[str, int]
) -> list[dict[str, Any]]:
    """The shares of the goods a delivery of ``items`` just counted came from (each
    whole): those holding the stretch of each item's line that the delivered total
    moved over, a few goods whatever the community received before."""
    delivered = _units_delivered(session, org_id)
    return [
        share
        for item, quantity in sorted(items.items())
        for share in _shares_in(
            session,
            org_id,
            item,
            delivered.get(item, 0) - quantity,
            delivered.get(item, 0),
            delivered.get(item, 0),
        )
    ]


def lock_reach(session: Session, org_id: uuid.UUID) -> None:
    """The community's reach row locked until the commit, as a delivery's outcome locks
    it (created with no snapshot sent, ``sequence`` 0, if none was): a change to a
    household's size or flags then falls before or after each delivery, never beside
    one, and the snapshot it sends (:func:`household_changed`) counts both."""
    insert = upsert_insert(session)
    table = ReachSnapshot.__table__
    stmt = insert(table).values(org_id=org_id, sequence=0, sent_at=utcnow())
    session.execute(
        stmt.on_conflict_do_update(index_elements=["org_id"], set_={"sequence": table.c.sequence})
    )


def household_changed(session: Session, outbox: Outbox, household: Household) -> None:
    """A household's size or flags changed (under :func:`lock_reach`): when it was
    reached, what the community reached changed with it, and dispatch hears the new
    counts."""
    if household.reached_at is not None:
        session.flush()
        announce_reach(session, outbox, household.org_id, _next_snapshot(session, household.org_id))


def _count_delivery(session: Session, delivery: HouseholdDelivery, done_at: datetime) -> None:
    """A delivery made at ``done_at``, added to its community's kept reach in the same
    transaction: its household reached from the first delivery to it on, its units to
    the item's total."""
    session.execute(
        update(Household)
        .where(Household.id == delivery.household_id, Household.reached_at.is_(None))
        .values(reached_at=done_at)
    )
    insert = upsert_insert(session)
    table = ReachUnits.__table__
    for item, quantity in sorted(delivery.items.items()):
        stmt = insert(table).values(org_id=delivery.org_id, item=item, quantity=quantity)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["org_id", "item"],
                set_={"quantity": table.c.quantity + stmt.excluded.quantity},
            )
        )


def _next_snapshot(session: Session, org_id: uuid.UUID) -> int:
    """The community's next snapshot number, its row locked until the commit."""
    insert = upsert_insert(session)
    table = ReachSnapshot.__table__
    stmt = insert(table).values(org_id=org_id, sequence=1, sent_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id"],
        set_={"sequence": table.c.sequence + 1, "sent_at": stmt.excluded.sent_at},
    ).returning(table.c.sequence)
    return int(session.execute(stmt).scalar_one())


def _base_unit(item: str) -> str:
    try:
        return get_item(item).base_unit
    except CatalogError:
        return ""


def _goods_in_line(session: Session, org_id: uuid.UUID) -> Any:
    """Every goods the community received, item by item, in line."""
    return session.scalars(
        select(ReceivedGoods)
        .where(ReceivedGoods.org_id == org_id)
        .order_by(ReceivedGoods.item, *_LINE_ORDER)
    )


def delivered_from_shipments(
    session: Session, org_id: uuid.UUID, delivered: dict[str, int]
) -> list[dict[str, Any]]:
    """The units delivered of each item, attributed to the shipments that brought them,
    every goods received read in line (first in, first out: the goods received first
    give their accepted units first): what the snapshots' shares add up to, for
    ``check-invariants`` and a whole snapshot."""
    goods = _goods_in_line(session, org_id)
    left = dict(delivered)
    out = []
    for held in goods:
        share = min(held.accepted, left.get(held.item, 0))
        if share > 0:
            left[held.item] -= share
            out.append(
                {
                    "shipment_id": held.shipment_id,
                    "receipt_id": held.receipt_id,
                    "item": held.item,
                    "quantity": share,
                }
            )
    return out


def line_drift(session: Session, org_id: uuid.UUID) -> list[str]:
    """Goods whose kept place in line differs from the units accepted of the goods
    before them, added up again in line (for ``check-invariants``): a correction that
    did not move the goods after it would show here."""
    drift = []
    before: dict[str, int] = defaultdict(int)
    for held in _goods_in_line(session, org_id):
        if held.received_before != before[held.item]:
            drift.append(
                f"{held.item} of shipment {held.shipment_id}: {held.received_before} "
                f"received before it != {before[held.item]}"
            )
        before[held.item] += held.accepted
    return drift


def announce_reach(
    session: Session,
    outbox: Outbox,
    org_id: uuid.UUID,
    sequence: int,
    shares: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Send dispatch the community's reach as it now stands, as counts only
    (``community.units_distributed`` version 2, snapshot ``sequence``), with the
    ``shares`` of the units delivered by shipment that this change moved, each as a
    whole (:func:`_shares_in`): every share instead in the community's first snapshot
    (``whole``)."""
    figures = reach(session, org_id)
    units = figures["units_delivered"]
    # The community's first snapshot (and the first after an operator asks for them
    # all again) names every share; dispatch takes the others in order after it.
    held = session.get(ReachSnapshot, org_id)
    whole = held is None or not held.whole_sent
    if whole:
        shares = delivered_from_shipments(session, org_id, units)
        if held is not None:
            held.whole_sent = True
    payload = {
        "org_id": org_id,
        "sequence": sequence,
        "households_reached": figures["households_reached"],
        "people_served": figures["people_served"],
        "vulnerable_households_reached": figures["vulnerable_households_reached"],
        "units_delivered": [
            {"item": item, "quantity": units[item], "unit": _base_unit(item)}
            for item in sorted(units)
        ],
        "from_shipments": shares or [],
        "whole": whole,
    }
    outbox.add(
        session,
        new_event(
            "community.units_distributed",
            payload,
            producer="community",
            aggregate_id=reach_aggregate_id(org_id),
            aggregate_version=sequence,
        ),
    )
    return payload


def write_off(session: Session, standing: Standing, data: dict[str, Any]) -> StockMove:
    """Stock that cannot be handed out (spoiled produce), with the reason."""
    residents.require_committee(standing)
    have = stock_of(session, standing.org_id).get(data["item"], 0)
    if data["quantity"] > have:
        raise RuleBroken(
            f"Only {have} of {data['item']} is in stock.",
            errors={"quantity": [f"At most {have}."]},
        )
    move = StockMove(
        id=uuid.uuid4(),
        org_id=standing.org_id,
        item=data["item"],
        quantity=-data["quantity"],
        kind="written_off",
        reason=data["reason"],
        by=standing.user_id,
    )
    session.add(move)
    session.flush()
    return move


def accounts(
    session: Session, org_id: uuid.UUID, *, counted: bool = False
) -> dict[str, dict[str, int]]:
    """Per item: received, delivered, out for delivery, in stock, written off.

    From the stock's moves, summed by the database, and the units delivered as kept
    (``reach_units``): what went out to deliveries and did not come back is delivered or
    still out. ``counted``: the delivered and the out for delivery added up from the
    deliveries themselves instead, for ``check-invariants``, whose sum then checks the
    moves against the deliveries."""
    figures: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("received", "delivered", "pending", "in_stock", "written_off"), 0)
    )
    went_out: dict[str, int] = defaultdict(int)
    for item, kind, total in session.execute(
        select(StockMove.item, StockMove.kind, func.sum(StockMove.quantity))
        .where(StockMove.org_id == org_id)
        .group_by(StockMove.item, StockMove.kind)
    ):
        if kind == "received":
            figures[item]["received"] += int(total)
        elif kind == "written_off":
            figures[item]["written_off"] -= int(total)
        elif kind in ("allocated", "returned"):
            went_out[item] -= int(total)
        figures[item]["in_stock"] += int(total)
    if counted:
        # Two plain columns a delivery, not an object each.
        for status, items in session.execute(
            select(HouseholdDelivery.status, HouseholdDelivery.items).where(
                HouseholdDelivery.org_id == org_id,
                HouseholdDelivery.status.in_(("pending", "delivered")),
            )
        ):
            key = "pending" if status == "pending" else "delivered"
            for item, quantity in items.items():
                figures[item][key] += quantity
    else:
        for item, quantity in session.execute(
            select(ReachUnits.item, ReachUnits.quantity).where(ReachUnits.org_id == org_id)
        ):
            figures[item]["delivered"] = int(quantity)
        for item, out in went_out.items():
            figures[item]["pending"] = out - figures[item]["delivered"]
    return {item: dict(values) for item, values in figures.items()}


def reach(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """What the public may know of a community's distribution: how many households it
    reached, how many people they are, how many of them vulnerable, and the units
    delivered per item. Counts only, never a household.

    Read from what is kept as deliveries are made (``_count_delivery``): a row an item
    and the community's households reached, not every delivery it ever made."""
    households = _households_counted(
        session, Household.org_id == org_id, Household.reached_at.is_not(None)
    )
    return _reach_figures(org_id, *households, _units_delivered(session, org_id))


def counted_reach(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """The community's reach counted again from its deliveries, for ``check-invariants``
    to compare with what :func:`reach` reads."""
    units: dict[str, int] = defaultdict(int)
    delivered = (HouseholdDelivery.org_id == org_id, HouseholdDelivery.status == "delivered")
    for items in session.scalars(select(HouseholdDelivery.items).where(*delivered)):
        for item, quantity in items.items():
            units[item] += quantity
    # The households by a subquery, not a list of their ids: a community that reached
    # more households than the database takes bound parameters still counts them all.
    reached = select(HouseholdDelivery.household_id).where(*delivered)
    households = _households_counted(session, Household.id.in_(reached))
    return _reach_figures(org_id, *households, units)


def _households_counted(session: Session, *where: Any) -> tuple[int, int, int]:
    """The households ``where`` says, counted by the database: how many, the people
    they are, how many of them vulnerable."""
    households, people, vulnerable = session.execute(
        select(
            func.count(Household.id),
            func.coalesce(func.sum(Household.people), 0),
            func.coalesce(func.sum(case((Household.vulnerable, 1), else_=0)), 0),
        ).where(*where)
    ).one()
    return int(households), int(people), int(vulnerable)


def _reach_figures(
    org_id: uuid.UUID, households: int, people: int, vulnerable: int, units: dict[str, int]
) -> dict[str, Any]:
    return {
        "org_id": org_id,
        "households_reached": int(households),
        "people_served": int(people),
        "vulnerable_households_reached": int(vulnerable),
        "units_delivered": {item: int(quantity) for item, quantity in units.items()},
    }
