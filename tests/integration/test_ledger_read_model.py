"""The public ledger as a read model: whatever happens to pledges, needs, allocations,
shipments and receipts, in whatever order, the totals kept alongside the lines equal
the totals computed from the lines by the ledger's definitions; a client that holds
the current answer gets a 304, and a new ETag once anything moved; a database made
before the read model gets it filled from its lines."""

from __future__ import annotations

import io
import random
import tracemalloc
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.dispatch.allocations import service as saga
from services.dispatch.models import (
    Allocation,
    LedgerState,
    LedgerTotal,
    Need,
    Receipt,
    Shipment,
    ShipmentLine,
    SupplyLine,
)
from services.dispatch.needs import service as needs
from services.dispatch.receipts import service as receipts
from services.dispatch.shipments import service as shipments
from services.dispatch.transparency import totals
from services.dispatch.transparency.service import Filters, ledger, total_rows
from shared.config import Settings
from shared.db import utcnow
from shared.errors import DomainError
from shared.identity import ANONYMOUS, INTERNAL_HEADER, sign_internal
from shared.migrations import alembic_config, upgrade
from shared.problems import Problem
from tests.support.stack import Stack

ITEMS = ("mask", "gloves_exam")
UNITS = {"mask": "piece", "gloves_exam": "pair"}
NEED_REGIONS = ("420103", "420102", "110101")
ORIGINS = ("440304", "420106")
SHIPPED = ("shipped", "delivered", "received")


# The ledger's definitions (README, "The public ledger"), straight from the lines ---------


def expected(session: Session, filters: Filters) -> dict[str, Any]:
    cells: dict[tuple[str, str, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(("pledged", "reserved", "shipped", "received"), 0)
    )

    def count(measure: str, item: str, region: str, when: datetime, quantity: int) -> None:
        if filters.admits(item, region, when):
            cells[(f"{when:%Y-%m}", region[:4], item)][measure] += quantity

    for line in session.scalars(select(SupplyLine)):
        if line.status not in ("cancelled", "expired"):
            count("pledged", line.item, line.region, line.pledged_at, line.quantity)
    regions = {row[0]: row[1] for row in session.execute(select(Need.id, Need.region))}
    accepted = {
        row[0]: row[1]
        for row in session.execute(select(ShipmentLine.allocation_id, ShipmentLine.accepted))
    }
    flows: dict[tuple[uuid.UUID | None, uuid.UUID, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    anonymous = {
        row[0]: row[1] for row in session.execute(select(SupplyLine.id, SupplyLine.anonymous))
    }
    for a in session.scalars(select(Allocation)):
        if a.status not in ("reserved", *SHIPPED):
            continue
        region = regions[a.need_id]
        measure = "shipped" if a.status in SHIPPED else "reserved"
        count(measure, a.item, region, a.created_at, a.quantity)
        if filters.admits(a.item, region, a.created_at):
            donor = None if anonymous.get(a.pledge_line_id) else a.donor_org_id
            flow = flows[(donor, a.recipient_org_id, a.item)]
            flow[0] += a.quantity
            flow[1] += a.quantity if a.status in SHIPPED else 0
            flow[2] += accepted.get(a.id, 0)
    first = {
        row[0]: row[1]
        for row in session.execute(
            select(Receipt.shipment_id, Receipt.created_at).where(Receipt.sequence == 1)
        )
    }
    for carried in session.scalars(select(ShipmentLine)):
        if carried.accepted > 0 and carried.shipment_id in first:
            count(
                "received",
                carried.item,
                regions[carried.need_id],
                first[carried.shipment_id],
                carried.accepted,
            )
    return {"cells": {k: v for k, v in cells.items() if any(v.values())}, "flows": dict(flows)}


def answered(session: Session, filters: Filters) -> dict[str, Any]:
    answer = ledger(session, filters, limit=1000)
    assert answer["next_cursor"] is None
    cells = {}
    # The finest grain, from the same query the exports use.
    for row in total_rows(session, filters):
        cells[(row["month"], row["region"], row["item"])] = {
            k: row[k] for k in ("pledged", "reserved", "shipped", "received")
        }
    flows = {
        (f["donor_org_id"], f["recipient_org_id"], f["item"]): [
            f["quantity"],
            f["shipped"],
            f["received"],
        ]
        for f in answer["flows"]
    }
    for f in answer["flows"]:
        assert (f["donor"] == "anonymous") == (f["donor_org_id"] is None)
    of_item: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (_m, _r, item), figures in cells.items():
        for k, v in figures.items():
            of_item[item][k] += v
    assert {i: {k: answer["totals"][i][k] for k in of_item[i]} for i in answer["totals"]} == {
        i: dict(v) for i, v in of_item.items()
    }
    return {"cells": cells, "flows": flows}


# A random history, through the service layer ---------------------------------------------


class Picks:
    """A step's random choices, drawn before the step looks at the database (so that
    what is drawn never depends on what earlier examples left there)."""

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.at = 0

    def _next(self) -> int:
        value = self.values[self.at % len(self.values)]
        self.at += 1
        return value

    def integer(self, low: int, high: int) -> int:
        return low + self._next() % (high - low + 1)

    def boolean(self) -> bool:
        return self._next() % 2 == 0

    def choice(self, options: Any) -> Any:
        options = list(options)
        return options[self._next() % len(options)]

    def some(self, options: Any, most: int) -> list[Any]:
        return [self.choice(options) for _ in range(self.integer(1, most))]


class History:
    """What the test has made so far, to pick the next step's subjects from."""

    def __init__(self) -> None:
        self.pledges: dict[uuid.UUID, dict[str, Any]] = {}
        self.needs: list[uuid.UUID] = []
        self.donors = [uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
        self.recipients = [uuid.uuid4(), uuid.uuid4()]


def _pledge_event(pledge: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": pledge["id"],
        "org_id": pledge["org_id"],
        "status": pledge["status"],
        "anonymous": pledge["anonymous"],
        "origin": {"region": pledge["region"]},
        "lines": [
            {
                "id": line["id"],
                "item": line["item"],
                "quantity": line["quantity"],
                "reserved": 0,
                "shipped": 0,
                "delivered": 0,
                "status": line["status"],
            }
            for line in pledge["lines"]
        ],
    }


def step_pledge(session: Session, _outbox: Any, history: History, draw: Picks) -> None:
    pledge = {
        "id": uuid.uuid4(),
        "org_id": draw.choice(history.donors),
        "status": "open",
        "anonymous": draw.boolean(),
        "region": draw.choice(ORIGINS),
        "version": 1,
        "lines": [
            {
                "id": uuid.uuid4(),
                "item": item,
                "quantity": draw.integer(1, 40),
                "status": "available",
            }
            for item in draw.some(ITEMS, 2)
        ],
    }
    history.pledges[pledge["id"]] = pledge
    saga.apply_pledge(session, _pledge_event(pledge), 1)


def step_amend_pledge(session: Session, _outbox: Any, history: History, draw: Picks) -> None:
    if not history.pledges:
        return
    pledge = history.pledges[draw.choice(sorted(history.pledges))]
    change = draw.choice(("more", "move", "cancel", "line"))
    if change == "more":
        line = draw.choice(pledge["lines"])
        line["quantity"] += draw.integer(1, 20)
    elif change == "move":
        pledge["region"] = draw.choice(ORIGINS)
    elif change == "cancel":
        pledge["status"] = "cancelled"
        for line in pledge["lines"]:
            line["status"] = "cancelled"
    else:
        pledge["lines"].append(
            {"id": uuid.uuid4(), "item": "mask", "quantity": 5, "status": "available"}
        )
    pledge["version"] += 1
    saga.apply_pledge(session, _pledge_event(pledge), pledge["version"])


def step_need(session: Session, outbox: Any, history: History, draw: Picks) -> None:
    need = needs.create_need(
        session,
        outbox,
        org_id=draw.choice(history.recipients),
        org_verified=True,
        data={
            "lines": [
                {
                    "item": item,
                    "quantity": str(draw.integer(1, 40)),
                    "unit": UNITS[item],
                    "urgency": "high",
                }
                for item in sorted(set(draw.some(ITEMS, 2)))
            ],
            "location": {"region": draw.choice(NEED_REGIONS), "address": "ward"},
        },
    )
    history.needs.append(need.id)


def step_move_need(session: Session, outbox: Any, history: History, draw: Picks) -> None:
    if not history.needs:
        return
    need = session.get(Need, draw.choice(history.needs))
    assert need is not None
    region = draw.choice(NEED_REGIONS)
    needs.amend_need(session, outbox, need, {"location": {"region": region, "address": "ward"}})


def step_propose(session: Session, outbox: Any, _history: History, draw: Picks) -> None:
    supply = session.scalars(select(SupplyLine).order_by(SupplyLine.id)).all()
    lines = [
        line for need in session.scalars(select(Need).order_by(Need.id)) for line in need.lines
    ]
    pairs = [
        (s, n)
        for s in supply
        for n in lines
        if s.item == n.item
        and saga.available_supply(s) > 0
        and n.quantity > n.proposed + n.reserved + n.shipped
    ]
    if not pairs:
        return
    chosen = draw.some(pairs, 3)
    saga.propose_many(
        session,
        outbox,
        [saga.Proposal(s.id, n.id, draw.integer(1, 8), {"tier": 1}) for s, n in chosen],
        run_id=None,
    )


def _pick(session: Session, draw: Picks, *statuses: str) -> Allocation | None:
    found = session.scalars(
        select(Allocation).where(Allocation.status.in_(statuses)).order_by(Allocation.id)
    ).all()
    return draw.choice(found) if found else None


def step_answer(session: Session, _outbox: Any, history: History, draw: Picks) -> None:
    allocation = _pick(session, draw, "proposed")
    if allocation is None:
        return
    answer = draw.choice(("accepted", "accepted", "accepted", "rejected", "released"))
    data: dict[str, Any] = {"allocation_id": allocation.id, "reason": "test"}
    if answer == "accepted":
        pledge = history.pledges[allocation.pledge_id]
        if draw.boolean():
            # The reservation carries the pledge line's totals at a newer version.
            pledge["version"] += 1
            line = next(x for x in pledge["lines"] if x["id"] == allocation.pledge_line_id)
            data["line"] = {
                "id": line["id"],
                "quantity": line["quantity"],
                "reserved": allocation.quantity,
                "shipped": 0,
                "delivered": 0,
                "status": line["status"],
            }
            data["pledge_version"] = pledge["version"]
        saga.on_accepted_many(session, [data])
    elif answer == "rejected":
        saga.on_rejected(session, data)
    else:
        saga.on_released(session, data)


def step_cancel(session: Session, outbox: Any, _history: History, draw: Picks) -> None:
    allocation = _pick(session, draw, "proposed", "reserved")
    if allocation is not None:
        saga.cancel_allocation(session, outbox, allocation, "a coordinator's decision")


def step_plan(session: Session, outbox: Any, _history: History, draw: Picks) -> None:
    allocation = _pick(session, draw, "reserved")
    if allocation is not None:
        shipments.plan_allocations(session, outbox, [allocation])


def _shipment(session: Session, draw: Picks, *statuses: str) -> Shipment | None:
    found = session.scalars(
        select(Shipment).where(Shipment.status.in_(statuses)).order_by(Shipment.id)
    ).all()
    return draw.choice(found) if found else None


def step_move_shipment(session: Session, outbox: Any, _history: History, draw: Picks) -> None:
    shipment = _shipment(session, draw, "planned", "picked_up")
    if shipment is None:
        return
    if shipment.status == "planned":
        status = "cancelled" if draw.integer(1, 6) == 1 else "picked_up"
    else:
        status = "lost" if draw.integer(1, 6) == 1 else "delivered"
    at = max(datetime.now(UTC), shipment.status_at) + timedelta(seconds=1)
    shipments.record_update(session, outbox, shipment, status=status, occurred_at=at, now=at)


def step_receipt(session: Session, outbox: Any, _history: History, draw: Picks) -> None:
    shipment = _shipment(session, draw, "delivered", "received")
    if shipment is None:
        return
    lines = []
    for line in shipment.lines:
        accepted = draw.integer(0, line.quantity)
        damaged = draw.integer(0, line.quantity - accepted)
        lines.append(
            {
                "shipment_line_id": line.id,
                "accepted": accepted,
                "damaged": damaged,
                "short": line.quantity - accepted - damaged,
            }
        )
    latest = receipts.latest_receipt(session, shipment.id)
    receipts.confirm_receipt(
        session,
        outbox,
        shipment,
        lines=lines,
        corrects=latest.id if latest is not None else None,
        org_id=shipment.recipient_org_id,
    )


# Weighted towards the saga's progress, so that histories reach shipments and receipts.
STEPS: tuple[Callable[[Session, Any, History, Any], None], ...] = (
    step_pledge,
    step_amend_pledge,
    step_need,
    step_move_need,
    step_propose,
    step_propose,
    step_answer,
    step_answer,
    step_cancel,
    step_plan,
    step_plan,
    step_move_shipment,
    step_move_shipment,
    step_move_shipment,
    step_receipt,
    step_receipt,
)


def _check(session: Session) -> None:
    assert totals.compare(session) == []
    for filters in (
        Filters(),
        Filters(item="mask"),
        Filters(region="4201"),
        Filters(region="420103", item="gloves_exam"),
    ):
        assert answered(session, filters) == expected(session, filters)


def test_ledger_totals_equal_the_lines_after_any_history(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    history = History()

    @settings(
        max_examples=6,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
    )
    @given(st.integers(0, 2**32))
    def run(seed: int) -> None:
        # Histories from a seed: uniform over the steps, where hypothesis's own
        # draws would lean towards the first step and the smallest numbers.
        rng = random.Random(seed)
        steps = [
            (rng.choice(STEPS), [rng.randrange(2**16) for _ in range(12)])
            for _ in range(rng.randint(10, 40))
        ]
        start: list[tuple[Callable[..., None], list[int]]] = [
            (step_pledge, [n, 1, n + 2, 5]) for n in range(3)
        ]
        start += [(step_need, [n, 3, 7, n, n + 1]) for n in range(3)]
        for step, values in start + steps:
            try:
                with rt.unit_of_work() as session:
                    step(session, rt.outbox, history, Picks(values))
            except (DomainError, Problem):
                pass  # refused as a whole: nothing was written
        with rt.session_factory() as session:
            _check(session)

    run()
    with rt.session_factory() as session:
        reached = {
            status: session.scalar(
                select(func.count())
                .select_from(Allocation)
                .where(Allocation.status.in_(("delivered", "received", "lost")))
                if status == "shipped"
                else select(func.count()).select_from(Allocation).where(Allocation.status == status)
            )
            for status in (
                "proposed",
                "reserved",
                "shipped",
                "delivered",
                "received",
                "lost",
                "cancelled",
                "rejected",
            )
        }
        reached["receipts"] = session.scalar(select(func.count()).select_from(Receipt))
    # The histories reached every kind of change the ledger counts.
    assert all(reached[k] for k in ("shipped", "received", "receipts")), reached


def test_a_database_made_before_the_read_model_gets_it_filled(settings: Settings) -> None:
    anonymous = False
    url = settings.database_url("dispatch")
    config = alembic_config("dispatch", url)
    before = next(
        rev.down_revision
        for rev in ScriptDirectory.from_config(config).walk_revisions()
        if (rev.doc or "").startswith("ledger read model")
    )
    command.downgrade(config, str(before))
    engine = create_engine(url)
    pg = url.startswith("postgresql")

    def uid(value: uuid.UUID) -> Any:
        return value if pg else value.hex

    pledge, line, need, need_line, allocation = (uuid.uuid4() for _ in range(5))
    donor, recipient = uuid.uuid4(), uuid.uuid4()
    feb = datetime(2020, 2, 3, 8, tzinfo=UTC)
    mar = datetime(2020, 3, 1, 9, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO supply_lines (id, pledge_id, donor_org_id, item, quantity, reserved,"
                " shipped, delivered, proposed, status, pledge_status, restrictions, anonymous,"
                " region, pledge_version, synced_at) VALUES (:id, :pledge, :donor, 'mask', 100,"
                " 30, 0, 0, 0, 'partially_reserved', 'open', '{}', :anon, '440304', 2, :mar)"
            ),
            {
                "id": uid(line),
                "pledge": uid(pledge),
                "donor": uid(donor),
                "anon": anonymous,
                "mar": mar,
            },
        )
        # Dispatch first heard of the pledge in February: that is when it was pledged.
        conn.execute(
            text(
                "INSERT INTO inbox (event_id, type, aggregate_id, aggregate_version,"
                " outcome, received_at) VALUES (:e, 'pledge.created', :agg, 1, 'applied', :feb)"
            ),
            {"e": uid(uuid.uuid4()), "agg": str(pledge), "feb": feb},
        )
        conn.execute(
            text(
                "INSERT INTO needs (id, org_id, status, region, confirmed_at, expires_at,"
                " created_at, updated_at, version) VALUES (:id, :org, 'partially_allocated',"
                " '420103', :feb, :mar, :feb, :feb, 1)"
            ),
            {"id": uid(need), "org": uid(recipient), "feb": feb, "mar": mar},
        )
        conn.execute(
            text(
                "INSERT INTO need_lines (id, need_id, line_no, item, standards, quantity,"
                " entered_quantity, entered_unit, urgency, proposed, reserved, shipped,"
                " received, status) VALUES (:id, :need, 1, 'mask', '[]', 50, '50', 'piece',"
                " 'high', 0, 30, 0, 0, 'partially_allocated')"
            ),
            {"id": uid(need_line), "need": uid(need)},
        )
        conn.execute(
            text(
                "INSERT INTO allocations (id, pledge_id, pledge_line_id, donor_org_id,"
                " donor_anonymous, need_id, need_line_id, recipient_org_id, item, quantity,"
                " status, reason, created_at, updated_at, version) VALUES (:id, :pledge, :line,"
                " :donor, :anon, :need, :nl, :recipient, 'mask', 30, 'reserved', '{}', :feb,"
                " :feb, 1)"
            ),
            {
                "id": uid(allocation),
                "pledge": uid(pledge),
                "line": uid(line),
                "donor": uid(donor),
                "anon": anonymous,
                "need": uid(need),
                "nl": uid(need_line),
                "recipient": uid(recipient),
                "feb": feb,
            },
        )
    upgrade("dispatch", settings)
    with Session(engine) as session:
        assert totals.compare(session) == []
        answer = ledger(session, Filters())
        version, changed_at = totals.state(session)
    engine.dispose()
    assert answer["by_month"] == {
        "2020-02": {
            "mask": {
                "base_unit": "piece",
                "pledged": 100,
                "reserved": 30,
                "shipped": 0,
                "received": 0,
            }
        }
    }
    assert answer["by_region"]["4403"]["mask"]["pledged"] == 100
    assert answer["by_region"]["4201"]["mask"]["reserved"] == 30
    assert [(f["donor_org_id"], f["quantity"]) for f in answer["flows"]] == [(donor, 30)]
    assert version == 1 and changed_at is not None


def test_an_unchanged_ledger_answers_304_and_a_change_a_new_etag(stack: Stack) -> None:
    client = stack.client()
    first = client.get("/api/v1/transparency/ledger?item=mask")
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert "public" in first.headers["Cache-Control"]
    assert "max-age=" in first.headers["Cache-Control"]
    since = first.headers["Last-Modified"]
    again = client.get("/api/v1/transparency/ledger?item=mask", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag
    dated = client.get(
        "/api/v1/transparency/ledger?item=mask", headers={"If-Modified-Since": since}
    )
    assert dated.status_code == 304
    # Another question is another answer, with its own validator.
    other = client.get(
        "/api/v1/transparency/ledger?item=gloves_exam", headers={"If-None-Match": etag}
    )
    assert other.status_code == 200 and other.headers["ETag"] != etag

    rt = stack.runtime("dispatch")
    history = History()
    with rt.unit_of_work() as session:
        step_pledge(session, rt.outbox, history, Picks([1, 2, 3]))
    changed = client.get("/api/v1/transparency/ledger?item=mask", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.json["totals"] or changed.json["totals"] == {}
    # The version read outside a session (every request's first read) is the one a
    # session reads, with its time aware and in UTC on every backend.
    with rt.session_factory() as session:
        in_session = totals.state(session)
    outside = totals.current_state(rt.read_engine)
    assert outside == in_session and outside[0] >= 1
    assert outside[1] is not None and outside[1].utcoffset() == timedelta(0)
    assert changed.headers["ETag"].startswith(f'"ledger-{outside[0]}-')


def _pledged(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(LedgerTotal.pledged), 0))) or 0)


def test_the_ledger_moves_at_the_commit_alone_whatever_its_savepoints_did(
    stack: Stack,
) -> None:
    """Pledges synced in one transaction, one of them in a savepoint released and one
    in a savepoint rolled back (a scanner's batch makes one per row): the totals' rows
    and the version's are written once each, by the commit, not when a savepoint ends
    (locked in the middle of the transaction, they kept other writers waiting, and the
    version deadlocked with them), with what the transaction kept (the rolled-back
    pledge counts nothing), and the totals equal the lines after it."""
    from sqlalchemy import event

    rt = stack.runtime("dispatch")
    before = totals.current_state(rt.read_engine)[0]
    with rt.session_factory() as session:
        pledged = _pledged(session)
    written: list[tuple[str, str]] = []
    committing = False

    def saw(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        lowered = statement.lstrip().lower()
        if lowered.startswith(("update", "insert")):
            for table in ("ledger_totals", "ledger_state"):
                if table in lowered:
                    written.append((table, "at commit" if committing else "before commit"))

    def quantity(history: History, pledge_id: Any) -> int:
        return sum(int(line["quantity"]) for line in history.pledges[pledge_id]["lines"])

    history = History()
    event.listen(rt.engine, "before_cursor_execute", saw)
    try:
        with rt.unit_of_work() as session:
            step_pledge(session, rt.outbox, history, Picks([1, 2, 3, 4]))
            with session.begin_nested():
                step_pledge(session, rt.outbox, history, Picks([2, 3, 4, 5]))
            kept = list(history.pledges)
            savepoint = session.begin_nested()
            step_pledge(session, rt.outbox, history, Picks([3, 4, 5, 6]))
            savepoint.rollback()
            session.flush()
            assert written == []
            committing = True
    finally:
        event.remove(rt.engine, "before_cursor_execute", saw)
    # One upsert of the totals, their rows written together, then the version.
    assert written == [("ledger_totals", "at commit"), ("ledger_state", "at commit")]
    assert totals.current_state(rt.read_engine)[0] == before + 1
    with rt.session_factory() as session:
        assert totals.compare(session) == []
        assert _pledged(session) == pledged + sum(quantity(history, p) for p in kept)


def test_a_savepoint_whose_flush_failed_adds_nothing(stack: Stack) -> None:
    """A change's figures moved in a savepoint that a failing flush rolled back (an
    inbox applying a batch meets a copy another delivery committed, then applies the
    events one by one): they are not added at the commit; what was kept is."""
    rt = stack.runtime("dispatch")
    history = History()
    with rt.session_factory() as session:
        pledged = _pledged(session)
    with rt.unit_of_work() as session:
        step_pledge(session, rt.outbox, history, Picks([1, 2, 3, 4]))
        kept = list(history.pledges)
        with pytest.raises(IntegrityError), session.begin_nested():
            step_pledge(session, rt.outbox, history, Picks([2, 3, 4, 5]))
            # A row that is already there: the flush fails and rolls the savepoint back.
            session.add(LedgerState(id=1, version=1, changed_at=utcnow()))
            session.flush()
    with rt.session_factory() as session:
        assert totals.compare(session) == []
        assert _pledged(session) == pledged + sum(
            int(line["quantity"]) for p in kept for line in history.pledges[p]["lines"]
        )


def test_a_transaction_rolled_back_adds_nothing_and_the_next_adds_its_own(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    history = History()
    with rt.session_factory() as session:
        pledged = _pledged(session)
    try:
        with rt.unit_of_work() as session:
            step_pledge(session, rt.outbox, history, Picks([1, 2, 3, 4]))
            raise RuntimeError("given up")
    except RuntimeError:
        pass
    with rt.unit_of_work() as session:
        step_pledge(session, rt.outbox, history, Picks([4, 3, 2, 1]))
    last = list(history.pledges)[-1]
    with rt.session_factory() as session:
        assert totals.compare(session) == []
        assert _pledged(session) == pledged + sum(
            int(line["quantity"]) for line in history.pledges[last]["lines"]
        )


def test_a_change_holds_the_totals_rows_for_its_commit_alone(stack: Stack) -> None:
    """Two changes of the same day, region and item: while the first goes on with the
    rest of its transaction, the second writes the same totals' row without waiting
    for it (on PostgreSQL a row written is locked until the commit: written as soon as
    counted, the row kept every other receipt of the day and region waiting)."""
    rt = stack.runtime("dispatch")
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("on SQLite a writer's transaction holds the database's one write lock")
    history = History()
    with rt.unit_of_work() as session:
        step_pledge(session, rt.outbox, history, Picks([1, 0, 0, 4]))
    with rt.session_factory() as session:
        key = session.execute(
            select(LedgerTotal.day, LedgerTotal.region, LedgerTotal.item).where(
                LedgerTotal.pledged > 0
            )
        ).first()
    assert key is not None
    with rt.unit_of_work() as session:
        step_pledge(session, rt.outbox, history, Picks([1, 0, 0, 4]))
        session.flush()
        # The first change is still open; another writer of the same row goes through.
        with rt.engine.connect() as other:
            other.execute(text("SET lock_timeout = '2s'"))
            other.execute(
                update(LedgerTotal)
                .where(
                    LedgerTotal.day == key.day,
                    LedgerTotal.region == key.region,
                    LedgerTotal.item == key.item,
                )
                .values(pledged=LedgerTotal.pledged)
            )
            other.commit()
    with rt.session_factory() as session:
        assert totals.compare(session) == []


def test_flows_come_a_page_at_a_time(stack: Stack) -> None:
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        line = uuid.uuid4()
        saga.apply_pledge(
            session,
            {
                "id": uuid.uuid4(),
                "org_id": uuid.uuid4(),
                "status": "open",
                "origin": {"region": "440304"},
                "lines": [
                    {
                        "id": line,
                        "item": "mask",
                        "quantity": 100,
                        "reserved": 0,
                        "shipped": 0,
                        "delivered": 0,
                        "status": "available",
                    }
                ],
            },
            1,
        )
        made = [
            needs.create_need(
                session,
                rt.outbox,
                org_id=uuid.uuid4(),
                org_verified=True,
                data={
                    "lines": [
                        {"item": "mask", "quantity": "5", "unit": "piece", "urgency": "high"}
                    ],
                    "location": {"region": "420103", "address": "ward"},
                },
            )
            for _ in range(5)
        ]
        proposed = saga.propose_many(
            session,
            rt.outbox,
            [saga.Proposal(line, need.lines[0].id, 2, {"tier": 1}) for need in made],
            run_id=None,
        )
        saga.on_accepted_many(
            session, [{"allocation_id": p.allocation.id} for p in proposed if p.allocation]
        )
    client = stack.client()
    seen = []
    cursor = None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/transparency/ledger", query_string=query).json
        assert len(page["flows"]) <= 2
        seen.extend(page["flows"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len({f["recipient_org_id"] for f in seen}) == 5
    assert sum(f["quantity"] for f in seen) == 10
    whole = client.get("/api/v1/transparency/ledger").json
    assert whole["flows"] == seen and whole["next_cursor"] is None
    bad = client.get("/api/v1/transparency/ledger?cursor=nonsense")
    assert bad.status_code == 400


def test_anonymous_readers_of_the_ledger_are_rate_limited(settings: Settings) -> None:
    from services.gateway.app import create_app as create_gateway

    gateway = create_gateway(settings.with_overrides(ratelimit_public="3/minute"), testing=True)
    try:
        client = gateway.test_client()
        codes = [client.get("/api/v1/transparency/ledger").status_code for _ in range(4)]
        assert codes[:3] != [429] * 3 and 429 not in codes[:3]
        assert codes[3] == 429
        limited = client.get("/api/v1/transparency/export.csv")
        assert limited.status_code == 429
        assert limited.mimetype == "application/problem+json"
        assert "Retry-After" in limited.headers
    finally:
        gateway.extensions["aidlink"].dispose()


# Exports ----------------------------------------------------------------------------------


def _many_flows(session: Session, n: int) -> None:
    """``n`` flows through the code that keeps the read model, as a bulk load would."""
    figures = totals.Figures()
    day = datetime(2020, 2, 3, tzinfo=UTC).date()
    recipients = [uuid.uuid4() for _ in range(50)]
    for i in range(n):
        key = (day, NEED_REGIONS[i % 3], ITEMS[i % 2], uuid.uuid4(), recipients[i % 50])
        figures.flows[key] = [i % 7 + 1, i % 3, i % 2]
        figures.add_total((day, NEED_REGIONS[i % 3], ITEMS[i % 2]), "reserved", i % 7 + 1)
    totals.add(session, figures)


def test_an_export_larger_than_its_memory_streams_with_totals_matching_the_ledger(
    stack: Stack,
) -> None:
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        _many_flows(session, 30_000)
    # The service itself, as the gateway calls it (over HTTP the gateway passes an
    # export on as it comes, which the last lines check).
    dispatch = stack.apps["dispatch"].test_client()
    as_public = {INTERNAL_HEADER: sign_internal(ANONYMOUS, stack.settings.internal_key, "dispatch")}
    ledger_answer: dict[str, Any] = (
        dispatch.get("/api/v1/transparency/ledger?limit=1", headers=as_public).json or {}
    )
    response = dispatch.get(
        "/api/v1/transparency/export.csv?table=flows", headers=as_public, buffered=False
    )
    assert response.status_code == 200 and "Content-Length" not in response.headers
    tracemalloc.start()
    size, quantity, rows = 0, 0, -1
    tail = b""
    steady: tuple[int, int] | None = None  # memory held and bytes sent, once under way
    for chunk in response.iter_encoded():
        size += len(chunk)
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in lines:
            rows += 1
            if rows:
                quantity += int(line.split(b",")[6])
        if steady is None and rows >= 5_000:
            tracemalloc.reset_peak()
            steady = (tracemalloc.get_traced_memory()[0], size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    response.close()
    assert steady is not None
    grown, sent = peak - steady[0], size - steady[1]
    print(f"export: {rows} rows, {sent / 1e6:.1f} MB sent, memory grew {grown / 1e6:.2f} MB")
    assert rows == 30_000
    # Memory, not time: once under way, the export holds a batch of rows at a time
    # (a few hundred kB), whatever it has sent.
    assert grown < sent / 4
    reserved = sum(f["reserved"] + f["shipped"] for f in ledger_answer["totals"].values())
    assert quantity == reserved

    client = stack.client()
    workbook = client.get("/api/v1/transparency/export.xlsx?item=mask&region=420103")
    assert workbook.status_code == 200
    assert "Content-Length" not in workbook.headers
    sheets = load_workbook(io.BytesIO(workbook.data), read_only=True)
    header, *cells = list(sheets["totals"].values)
    assert header == ("month", "region", "item", "base_unit", *totals.MEASURES)
    by_sheet = sum(int(row[header.index("reserved")]) for row in cells)
    in_region = client.get("/api/v1/transparency/ledger?item=mask&region=420103&limit=1")
    assert by_sheet == (in_region.json or {})["totals"]["mask"]["reserved"]
    assert len(list(sheets["flows"].values)) == 5_001
