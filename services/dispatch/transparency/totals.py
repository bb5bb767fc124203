"""The public ledger's read model: its figures kept per day, region and item
(``ledger_totals``) and per day, region, item, donor and recipient (``ledger_flows``),
moved in the same transaction as the lines they count.

Every write that can move a figure (a pledge line synced from donations, an allocation
moved along the saga, a receipt, a need moved to another region) runs inside
:func:`moves`, naming the rows it touches. What those rows count is read before and
after the change, by the same queries that :func:`rebuild` and :func:`compare` run
over every line, and the difference is added to the totals as the transaction's last
writes, at its commit (:func:`add_at_commit`), key by key in a fixed order (so that
two writers of the same keys wait on each other, for a commit's length, rather than
deadlock).
A ledger request then reads totals whose number grows with days, regions, items and
organisations, never with the number of lines.

``ledger_state`` carries a version, moved once by every commit that moved a total (at
the commit, so its row is held only for the commit's duration): the ledger's ETag.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, delete, event, func, or_, select, update
from sqlalchemy.orm import Session

from services.dispatch.models import (
    ANONYMOUS_DONOR,
    Allocation,
    LedgerFlow,
    LedgerState,
    LedgerTotal,
    Need,
    Receipt,
    ShipmentLine,
    SupplyLine,
    of_need,
)
from shared.db import OneRowRead, upsert_insert, utcnow
from shared.pending import Pending

MEASURES = ("pledged", "reserved", "shipped", "received")
FLOW_MEASURES = ("quantity", "shipped", "received")
SHIPPED_STATUSES = ("shipped", "delivered", "received")
COUNTED_ALLOCATION_STATUSES = ("reserved", *SHIPPED_STATUSES)
UNPLEDGED_LINE_STATUSES = ("cancelled", "expired")

# Ids per statement: under every backend's limit of bound parameters (SQLite's is
# 32,766 since 3.32, 999 before; PostgreSQL's 65,535).
CHUNK = 500
_PENDING = "aidlink.ledger_moved"
# Figures moved in a transaction, added to the totals at its commit (add_at_commit).
_LATER = Pending("aidlink.ledger_later")
_LATER.listen(Session)

TotalKey = tuple[date, str, str]  # day, region, item
FlowKey = tuple[date, str, str, uuid.UUID, uuid.UUID]  # ..., donor (or anonymous), recipient


def city(region: str) -> str:
    """A region's city: the first four digits of its code (a province code stays)."""
    return region[:4]


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def chunked(ids: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    """``ids`` in lists of at most ``size``: one ``IN (...)`` each."""
    batch: list[Any] = []
    for each in ids:
        batch.append(each)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Figures:
    """What some lines count in the ledger, by key."""

    totals: dict[TotalKey, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0])
    )
    flows: dict[FlowKey, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))

    def add_total(self, key: TotalKey, measure: str, quantity: int) -> None:
        self.totals[key][MEASURES.index(measure)] += quantity

    def minus(self, other: Figures) -> Figures:
        out = Figures()
        _difference(self.totals, other.totals, out.totals)
        _difference(self.flows, other.flows, out.flows)
        return out

    def __bool__(self) -> bool:
        return bool(self.totals) or bool(self.flows)


def _difference(
    mine: dict[Any, list[int]], theirs: dict[Any, list[int]], out: dict[Any, Any]
) -> None:
    for key in set(mine) | set(theirs):
        a = mine.get(key)
        b = theirs.get(key)
        width = len(a) if a is not None else len(b or ())
        diff = [(a[i] if a else 0) - (b[i] if b else 0) for i in range(width)]
        if any(diff):
            out[key] = diff


def _day(when: datetime) -> date:
    return when.date()


def _where_ids(stmt: Any, column: Any, ids: list[Any] | None, lock: Any = None) -> Any:
    if ids is None:
        return stmt
    stmt = stmt.where(column.in_(ids))
    return stmt if lock is None else stmt.with_for_update(of=lock)


def _batches(ids: Collection[Any] | None) -> Iterator[list[Any] | None]:
    if ids is None:
        yield None
    else:
        yield from chunked(sorted(set(ids), key=str))


_STREAM = {"yield_per": 2000}


def count_lines(
    session: Session,
    *,
    supply_lines: Collection[uuid.UUID] | None = None,
    allocations: Collection[uuid.UUID] | None = None,
    shipment_lines: Collection[uuid.UUID] | None = None,
    everything: bool = False,
    lock: bool = False,
) -> Figures:
    """What the given rows count in the ledger (``everything``: every row), computed
    from the lines themselves by the ledger's definitions (see service.py).

    ``lock``: the rows named are locked as they are read (FOR UPDATE), so that what
    they counted before a change is what the change starts from: a concurrent writer
    of the same rows commits first, and is read, or waits."""
    figures = Figures()
    if everything or supply_lines:
        for ids in _batches(None if everything else supply_lines):
            pledged: Any = select(
                SupplyLine.item, SupplyLine.region, SupplyLine.pledged_at, SupplyLine.quantity
            ).where(SupplyLine.status.not_in(UNPLEDGED_LINE_STATUSES))
            for item, region, pledged_at, quantity in session.execute(
                _where_ids(pledged, SupplyLine.id, ids, SupplyLine if lock else None),
                execution_options=_STREAM,
            ):
                figures.add_total((_day(pledged_at), region, item), "pledged", quantity)
    if everything or allocations:
        for ids in _batches(None if everything else allocations):
            counted: Any = (
                select(
                    Allocation.status,
                    Allocation.item,
                    Allocation.quantity,
                    Allocation.created_at,
                    Need.region,
                    Allocation.donor_org_id,
                    Allocation.donor_anonymous,
                    SupplyLine.anonymous,
                    Allocation.recipient_org_id,
                    ShipmentLine.accepted,
                )
                .join(Need, Need.id == Allocation.need_id)
                .outerjoin(SupplyLine, SupplyLine.id == Allocation.pledge_line_id)
                .outerjoin(ShipmentLine, ShipmentLine.allocation_id == Allocation.id)
                .where(Allocation.status.in_(COUNTED_ALLOCATION_STATUSES))
            )
            for (
                status,
                item,
                quantity,
                created_at,
                region,
                donor,
                donor_anonymous,
                line_anonymous,
                recipient,
                accepted,
            ) in session.execute(
                _where_ids(counted, Allocation.id, ids, Allocation if lock else None),
                execution_options=_STREAM,
            ):
                day = _day(created_at)
                shipped = status in SHIPPED_STATUSES
                figures.add_total(
                    (day, region, item), "shipped" if shipped else "reserved", quantity
                )
                if donor_anonymous or line_anonymous:
                    donor = ANONYMOUS_DONOR
                flow = figures.flows[(day, region, item, donor, recipient)]
                flow[0] += quantity
                flow[1] += quantity if shipped else 0
                flow[2] += accepted or 0
    if everything or shipment_lines:
        first_receipt = (
            select(Receipt.shipment_id, Receipt.created_at).where(Receipt.sequence == 1).subquery()
        )
        for ids in _batches(None if everything else shipment_lines):
            received: Any = (
                select(
                    ShipmentLine.item,
                    ShipmentLine.accepted,
                    first_receipt.c.created_at,
                    Need.region,
                )
                .join(first_receipt, first_receipt.c.shipment_id == ShipmentLine.shipment_id)
                .join(Need, Need.id == ShipmentLine.need_id)
                .where(ShipmentLine.accepted > 0)
            )
            for item, accepted, confirmed_at, region in session.execute(
                _where_ids(received, ShipmentLine.id, ids, ShipmentLine if lock else None),
                execution_options=_STREAM,
            ):
                figures.add_total((_day(confirmed_at), region, item), "received", accepted)
    return figures


def add(session: Session, figures: Figures) -> None:
    """Add ``figures`` to the read model, key by key in order: one upsert statement a
    table, its rows sent together (``executemany``) so that the statement is compiled
    once a process rather than once for each number of rows."""
    if not figures:
        return
    insert = upsert_insert(session)
    total_rows = [
        {
            "day": day,
            "region": region,
            "item": item,
            "month": month_of(day),
            "city": city(region),
            **dict(zip(MEASURES, values, strict=True)),
        }
        for (day, region, item), values in sorted(figures.totals.items())
    ]
    flow_rows = [
        {
            "day": day,
            "region": region,
            "item": item,
            "donor_org_id": donor,
            "recipient_org_id": recipient,
            **dict(zip(FLOW_MEASURES, values, strict=True)),
        }
        for (day, region, item, donor, recipient), values in sorted(figures.flows.items())
    ]
    for model, rows, measures, keys in (
        (LedgerTotal, total_rows, MEASURES, ("day", "region", "item")),
        (
            LedgerFlow,
            flow_rows,
            FLOW_MEASURES,
            ("day", "region", "item", "donor_org_id", "recipient_org_id"),
        ),
    ):
        if not rows:
            continue
        table = model.__table__
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={m: table.c[m] + stmt.excluded[m] for m in measures},
        )
        session.execute(stmt, rows)
    session.info[_PENDING] = True


@contextmanager
def moves(
    session: Session,
    *,
    supply_lines: Collection[uuid.UUID] = (),
    allocations: Collection[uuid.UUID] = (),
    shipment_lines: Collection[uuid.UUID] = (),
) -> Iterator[None]:
    """Keep the ledger in step with a change of the rows named: what they count is read
    before and after the block, and the difference added to the totals."""
    named = (list(supply_lines), list(allocations), list(shipment_lines))
    if not any(named):
        yield
        return
    session.flush()
    before = count_lines(
        session, supply_lines=named[0], allocations=named[1], shipment_lines=named[2], lock=True
    )
    yield
    session.flush()
    after = count_lines(
        session, supply_lines=named[0], allocations=named[1], shipment_lines=named[2]
    )
    add_at_commit(session, after.minus(before))


def add_at_commit(session: Session, figures: Figures) -> None:
    """Add ``figures`` to the read model when the session's transaction commits, with
    what its other changes moved (:func:`_at_commit`), as its last writes.

    The totals' rows are few and shared: every receipt of an item in a region on one
    day adds to the same row. Written at once, a row stayed locked for the rest of the
    change's transaction (a receipt went on to its shipment, its events and its needs'
    statuses), and the receipts of the same day and region waited for each other (p50
    920 ms under the soak's 16 clients). Written at the commit, it is held for the
    commit alone, and a scanner's batch writes each row once. A savepoint rolled back
    drops what was moved inside it."""
    if figures:
        _LATER.append(session, figures)


def merged(parts: Iterable[Figures]) -> Figures:
    """The sum of ``parts``, keys that add up to nothing left out."""
    out = Figures()
    for part in parts:
        _add_into(out.totals, part.totals)
        _add_into(out.flows, part.flows)
    out.totals = {key: values for key, values in out.totals.items() if any(values)}
    out.flows = {key: values for key, values in out.flows.items() if any(values)}
    return out


def _add_into(mine: dict[Any, list[int]], theirs: dict[Any, list[int]]) -> None:
    for key, values in theirs.items():
        into = mine[key]
        for n, value in enumerate(values):
            into[n] += value


def need_rows(session: Session, need_id: uuid.UUID) -> dict[str, list[uuid.UUID]]:
    """The rows whose figures follow a need (its region): for :func:`moves`."""
    return {
        "allocations": list(session.scalars(select(Allocation.id).where(of_need(need_id)))),
        "shipment_lines": list(
            session.scalars(select(ShipmentLine.id).where(ShipmentLine.need_id == need_id))
        ),
    }


@event.listens_for(Session, "before_commit")
def _at_commit(session: Session) -> None:
    # Also called when a savepoint is released: the totals and the version move at the
    # commit alone, after the transaction's pending changes are flushed, totals in key
    # order and the version last, so that their rows are locked only for the commit
    # (the version taken at a savepoint in the middle of a scanner's batch deadlocked
    # with writers holding the rows the batch went on to lock).
    if session.in_nested_transaction():
        return
    later = _LATER.take(session)
    if later:
        session.flush()
        add(session, merged(later))
    if session.info.pop(_PENDING, False):
        bump(session)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: Any) -> None:
    # A transaction ended without its commit does not move the version. (A savepoint
    # rolled back does not make it forget a move made before it: the version moves
    # once more than needed at worst, which only renews the ledger's validators.)
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def moved_at_commit(session: Session) -> None:
    """Move the ledger's version when the session's transaction commits (a change of
    figures the ledger reads from elsewhere: a community's reach, help given)."""
    session.info[_PENDING] = True


def bump(session: Session) -> None:
    """A new version of the ledger (its row exists from the migration on)."""
    moved = session.execute(
        update(LedgerState)
        .where(LedgerState.id == 1)
        .values(version=LedgerState.version + 1, changed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        session.add(LedgerState(id=1, version=1, changed_at=utcnow()))
        session.flush()


# Read on every ledger request (for its ETag): built once, run as a Core statement on
# the session's connection (the ORM's per-statement work is most of such a request).
_STATE = select(LedgerState.version, LedgerState.changed_at).where(LedgerState.id == 1)


_STATE_NOW = OneRowRead(_STATE)


def state(session: Session) -> tuple[int, datetime | None]:
    """The ledger's version and when it last moved, in the session's transaction."""
    row = session.connection().execute(_STATE).first()
    return (int(row[0]), row[1]) if row else (0, None)


def current_state(engine: Engine) -> tuple[int, datetime | None]:
    """:func:`state` read on its own, outside any session: what every ledger request
    reads first, to answer 304 or an answer already made for this version."""
    row = _STATE_NOW(engine)
    return (int(row[0]), row[1]) if row else (0, None)


def stored(session: Session) -> Figures:
    """The read model as it stands (rows that count nothing left out)."""
    figures = Figures()
    for row in session.execute(
        select(
            LedgerTotal.day,
            LedgerTotal.region,
            LedgerTotal.item,
            *(getattr(LedgerTotal, m) for m in MEASURES),
        ).where(or_(*(getattr(LedgerTotal, m) != 0 for m in MEASURES))),
        execution_options=_STREAM,
    ):
        figures.totals[(row[0], row[1], row[2])] = [int(v) for v in row[3:]]
    for row in session.execute(
        select(
            LedgerFlow.day,
            LedgerFlow.region,
            LedgerFlow.item,
            LedgerFlow.donor_org_id,
            LedgerFlow.recipient_org_id,
            *(getattr(LedgerFlow, m) for m in FLOW_MEASURES),
        ).where(or_(*(getattr(LedgerFlow, m) != 0 for m in FLOW_MEASURES))),
        execution_options=_STREAM,
    ):
        figures.flows[(row[0], row[1], row[2], row[3], row[4])] = [int(v) for v in row[5:]]
    return figures


def compare(session: Session) -> list[str]:
    """Where the read model and the lines disagree: one sentence per key."""
    found = count_lines(session, everything=True)
    differences = stored(session).minus(found)
    out: list[str] = []
    for (day, region, item), diff in sorted(differences.totals.items()):
        held = {m: d for m, d in zip(MEASURES, diff, strict=True) if d}
        out.append(f"totals of {item} in {region} on {day}: the read model is off by {held}")
    for (day, region, item, donor, recipient), diff in sorted(differences.flows.items()):
        held = {m: d for m, d in zip(FLOW_MEASURES, diff, strict=True) if d}
        out.append(
            f"flow of {item} from {donor} to {recipient} in {region} on {day}: the read "
            f"model is off by {held}"
        )
    return out


def rebuild(session: Session) -> None:
    """Fill the read model again from the lines (a migration, or an operator's repair)."""
    session.execute(delete(LedgerTotal))
    session.execute(delete(LedgerFlow))
    add(session, count_lines(session, everything=True))


def rows_read_hint(session: Session) -> int:
    """How many rows the totals table holds (for the benchmark's report)."""
    return int(session.scalar(select(func.count()).select_from(LedgerTotal)) or 0)
