"""Dispatch's half of the allocation saga, and its read model of available supply.

- pledge.* events (whole pledges) keep ``supply_lines`` in step with donations, newest
  pledge version wins.
- An approved plan becomes allocations in ``proposed``: the need line's ``proposed``
  and the supply line's ``proposed`` grow by conditional UPDATEs that refuse to
  over-commit, and ``allocation.proposed`` goes to donations.
- ``reservation.accepted`` moves the quantity to ``reserved``; ``reservation.rejected``
  and ``reservation.released`` give it back to matching.
- A coordinator may cancel an allocation before it ships (``allocation.cancelled``).
- Once reserved, an allocation travels in a shipment (services/dispatch/shipments/service.py):
  shipped, delivered, received; or lost or returned on the way, which gives its need
  line back to matching.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, selectinload

from services.dispatch.models import (
    Allocation,
    Need,
    NeedLine,
    Shipment,
    ShipmentLine,
    SupplyLine,
    of_need,
    of_pledge,
)
from services.dispatch.needs import domain as need_domain
from services.dispatch.needs import status as need_status
from services.dispatch.transparency import totals as ledger
from shared.bulk import BulkCompareAndSet, BulkInsert, Ready
from shared.contacts import contact_of
from shared.db import in_chunks, utcnow
from shared.events import new_event, new_events
from shared.events.supply import PROPOSALS_PER_EVENT
from shared.ids import uuid4s
from shared.outbox import Outbox, PreparedEvents

PRODUCER = "dispatch"
# Units that hold a number of base units (the catalogue's packs).
PACK_UNITS = ("box", "case")
OPEN_ALLOCATION_STATUSES = ("proposed", "reserved")
ALLOCATION_STATUSES = (
    "proposed",
    "reserved",
    "rejected",
    "cancelled",
    "shipped",
    "delivered",
    "received",
    "lost",
    "returned",
)


# The supply read model -------------------------------------------------------------------


def apply_pledge(session: Session, pledge: dict[str, Any], version: int) -> None:
    """Take a whole pledge from a pledge.* event into the supply read model."""
    line_ids = [line["id"] for line in pledge["lines"]]
    allocation_ids: list[uuid.UUID] = []
    anonymous = bool(pledge.get("anonymous", False))
    if session.scalar(
        select(SupplyLine.id)
        .where(SupplyLine.pledge_id == pledge["id"], SupplyLine.anonymous.is_not(anonymous))
        .limit(1)
    ):
        # An anonymity chosen again moves the pledge's flows in the ledger (donations
        # allows it only before any of the pledge is reserved, so this is rare).
        allocation_ids = list(
            session.scalars(
                select(Allocation.id).where(
                    of_pledge(pledge["id"]),
                    Allocation.status.in_(ledger.COUNTED_ALLOCATION_STATUSES),
                )
            )
        )
    with ledger.moves(session, supply_lines=line_ids, allocations=allocation_ids):
        _apply_pledge(session, pledge, version)


def _apply_pledge(session: Session, pledge: dict[str, Any], version: int) -> None:
    origin = pledge["origin"]
    # Every line of a pledge counts as pledged when dispatch first heard of the pledge.
    pledged_at = (
        session.scalar(
            select(func.min(SupplyLine.pledged_at)).where(SupplyLine.pledge_id == pledge["id"])
        )
        or utcnow()
    )
    anonymous = bool(pledge.get("anonymous", False))
    changed = False
    for line in pledge["lines"]:
        row = session.get(SupplyLine, line["id"], with_for_update=True)
        if row is not None and row.pledge_version >= version:
            continue
        changed = changed or (row is not None and bool(row.anonymous) != anonymous)
        if row is None:
            row = SupplyLine(id=line["id"], proposed=0, pledged_at=pledged_at)
            session.add(row)
        row.pledge_id = pledge["id"]
        row.donor_org_id = pledge["org_id"]
        row.item = line["item"]
        row.standard = line.get("standard")
        row.quantity = line["quantity"]
        row.reserved = line["reserved"]
        row.shipped = line["shipped"]
        row.delivered = line["delivered"]
        row.status = line["status"]
        row.pledge_status = pledge["status"]
        row.best_before = line.get("best_before")
        row.restrictions = dict(line.get("restrictions") or {})
        row.anonymous = anonymous
        row.region = origin["region"]
        row.address = origin.get("address")
        row.contact_name = (origin.get("contact") or {}).get("name")
        row.contact_phone = (origin.get("contact") or {}).get("phone")
        row.lat = origin.get("lat")
        row.lon = origin.get("lon")
        row.place_id = origin.get("place_id")
        packed = line.get("entered_unit") in PACK_UNITS and line.get("pack_size")
        row.pack_unit = line["entered_unit"] if packed else None
        row.pack_size = line["pack_size"] if packed else None
        row.pledge_version = version
        row.synced_at = utcnow()
    if changed:
        # The donor may choose again whether to be named (donations allows it only
        # before any of the pledge is reserved): its allocations still proposed follow.
        session.execute(
            update(Allocation)
            .where(
                of_pledge(pledge["id"]),
                Allocation.donor_anonymous.is_not(anonymous),
                Allocation.status == "proposed",
            )
            .values(donor_anonymous=anonymous)
            .execution_options(synchronize_session=False)
        )


def apply_line_totals(session: Session, totals: dict[str, Any] | None, version: int | None) -> None:
    """Totals of one pledge line carried by a reservation event, if newer than ours."""
    if not totals or version is None:
        return
    with ledger.moves(session, supply_lines=[totals["id"]]):
        session.execute(
            update(SupplyLine)
            .where(SupplyLine.id == totals["id"], SupplyLine.pledge_version < version)
            .values(
                quantity=totals["quantity"],
                reserved=totals["reserved"],
                shipped=totals["shipped"],
                delivered=totals["delivered"],
                status=totals["status"],
                pledge_version=version,
                synced_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )


def available_supply(line: SupplyLine) -> int:
    """What dispatch may still propose from a pledge line."""
    if line.pledge_status != "open" or line.status in ("cancelled", "expired", "delivered"):
        return 0
    return max(0, line.quantity - line.reserved - line.shipped - line.proposed)


# Allocations ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProposedAllocation:
    """An allocation a plan proposed, as written (its row holds the rest)."""

    id: uuid.UUID
    pledge_line_id: uuid.UUID
    need_line_id: uuid.UUID
    quantity: int


@dataclass(frozen=True)
class Proposed:
    allocation: ProposedAllocation | None
    refused: str | None = None


@dataclass(frozen=True)
class Proposal:
    """One allocation of a plan: how much of a pledge line goes to a need line."""

    supply_line_id: uuid.UUID
    need_line_id: uuid.UUID
    quantity: int
    reason: dict[str, Any]


# Rows locked per statement: well under every backend's limit of bound parameters.
_CHUNK = 500


class _Row:
    """A row's columns as plain attributes, for the counting of :func:`propose_many`."""

    def __init__(self, mapping: Any) -> None:
        self.__dict__.update(mapping)


def _locked_rows(
    session: Session, columns: Sequence[Any], key: Any, ids: set[uuid.UUID], *, lock: bool = True
) -> dict[uuid.UUID, Any]:
    """The rows whose ``key`` is in ``ids``, as :class:`_Row`, read afresh and locked
    (FOR UPDATE; SQLite's writer holds the database) in key order, so that two writers
    wait instead of deadlocking, without building ORM objects. Without ``lock``, read
    only: each row keeps what was read in ``read``, for a compare-and-set."""
    found: dict[uuid.UUID, Any] = {}
    ordered = sorted(ids)
    for i in range(0, len(ordered), _CHUNK):
        chunk = ordered[i : i + _CHUNK]
        query = select(*columns).where(key.in_(chunk)).order_by(key)
        for row in session.execute(query.with_for_update() if lock else query).mappings():
            each: Any = _Row(row)
            found[row[columns[0].key]] = each
            if not lock:
                each.read = dict(row)
    return found


LINE_COLUMNS = (
    NeedLine.id,
    NeedLine.need_id,
    NeedLine.item,
    NeedLine.status,
    NeedLine.quantity,
    NeedLine.proposed,
    NeedLine.reserved,
    NeedLine.shipped,
    NeedLine.received,
)
SUPPLY_COLUMNS = (
    SupplyLine.id,
    SupplyLine.pledge_id,
    SupplyLine.donor_org_id,
    SupplyLine.anonymous,
    # Moves with every change of the pledge (restrictions, best-before date, standard).
    SupplyLine.pledge_version,
    SupplyLine.status,
    SupplyLine.pledge_status,
    SupplyLine.quantity,
    SupplyLine.reserved,
    SupplyLine.shipped,
    SupplyLine.proposed,
)


def _lines_of_needs(
    session: Session, need_ids: set[uuid.UUID], locked: dict[uuid.UUID, Any]
) -> dict[uuid.UUID, list[Any]]:
    """Every line of the needs ``need_ids``, by need, as :class:`_Row` (the ``locked``
    ones, already read, kept as they are), for the needs' statuses."""
    lines_of: dict[uuid.UUID, list[Any]] = {need_id: [] for need_id in need_ids}
    for i in range(0, len(ordered := sorted(need_ids)), _CHUNK):
        for row in session.execute(
            select(*LINE_COLUMNS).where(NeedLine.need_id.in_(ordered[i : i + _CHUNK]))
        ).mappings():
            line: Any = locked.get(row["id"])
            if line is None:
                line = _Row(row)
                line.status_was = line.status
            lines_of[row["need_id"]].append(line)
    return lines_of


def _restatus(need: Any, lines: list[Any], touched: dict[uuid.UUID, Any]) -> None:
    """The statuses of ``need`` and its ``lines`` (:class:`_Row`) from their counters,
    as on ORM objects; the lines go into ``touched``."""
    for each in lines:
        need_status.refresh_line_status(each)
        touched[each.id] = each
    need.status = need_domain.need_status([each.status for each in lines], need.status)


def _write_counts(
    session: Session,
    lines: dict[uuid.UUID, Any],
    locked: dict[uuid.UUID, Any],
    supplies: dict[uuid.UUID, Any],
    needs: dict[uuid.UUID, Any],
    line_columns: tuple[str, ...],
    now: datetime,
) -> None:
    """Write what :func:`propose_many` and :func:`on_accepted_many` counted in memory:
    of the need ``lines``, the ``line_columns`` and status of those ``locked`` and the
    status alone of the others where it moved (their counters were read unlocked and
    are not this change's to write); the supply lines' ``proposed``; the status of each
    need whose status moved, with a new version (its ETag), as the ORM's version
    counter gives it on every other path. Objects of those rows the session holds are
    read again when next used."""
    counted = [
        {"id": r.id, "status": r.status, **{c: getattr(r, c) for c in line_columns}}
        for r in lines.values()
        if r.id in locked
    ]
    if counted:
        session.execute(update(NeedLine), counted)
    restated = [
        {"id": r.id, "status": r.status}
        for r in lines.values()
        if r.id not in locked and r.status != r.status_was
    ]
    if restated:
        session.execute(update(NeedLine), restated)
    if supplies:
        session.execute(
            update(SupplyLine), [{"id": r.id, "proposed": r.proposed} for r in supplies.values()]
        )
    moved = [r for r in needs.values() if r.status != r.was]
    if moved:
        table = cast(Table, Need.__table__)
        session.execute(
            update(table)
            .where(table.c.id == bindparam("need_id"), table.c.version == bindparam("seen"))
            .values(status=bindparam("new_status"), version=bindparam("seen") + 1, updated_at=now),
            [{"need_id": r.id, "new_status": r.status, "seen": r.version} for r in moved],
        )
    _expire_held(session, lines.keys() | supplies.keys() | needs.keys())


def _expire_held(session: Session, touched: Collection[uuid.UUID]) -> None:
    """Objects of the need lines, supply lines and needs ``touched`` by a bulk write
    that the session holds are read again when next used."""
    for held_object in list(session.identity_map.values()):
        if isinstance(held_object, NeedLine | SupplyLine | Need) and held_object.id in touched:
            session.expire(held_object)


@dataclass
class _Counted:
    """What :func:`_count` made of a plan: one result per proposal, the rows and event
    payloads to write, and the rows whose counters or statuses it moved."""

    results: list[Proposed]
    allocations: list[dict[str, Any]]
    payloads: list[dict[str, Any]]
    lines: dict[uuid.UUID, Any]
    supplies: dict[uuid.UUID, Any]
    needs: dict[uuid.UUID, Any]
    now: datetime


@dataclass
class ReadRows:
    """The rows a plan is counted against (read without a lock for
    :func:`plan_proposals`, locked for :func:`propose_many`): need lines, supply lines
    and needs by id, and every line of each need by need (the same objects as in
    ``lines``). Counting changes them: they serve one plan."""

    lines: dict[uuid.UUID, Any]
    supplies: dict[uuid.UUID, Any]
    needs: dict[uuid.UUID, Any]
    lines_of: dict[uuid.UUID, list[Any]]

    def covers(self, proposals: Sequence[Proposal]) -> bool:
        """Whether every proposal's supply line, need line and need were read (and so,
        by how the rows are made, every line of that need)."""
        return all(
            p.supply_line_id in self.supplies
            and (line := self.lines.get(p.need_line_id)) is not None
            and line.need_id in self.needs
            for p in proposals
        )


# What :func:`read_rows` takes of a need, under these names, after the line's columns.
NEED_COLUMNS = {
    "need_status": Need.status,
    "need_org_id": Need.org_id,
    "need_version": Need.version,
    "need_updated_at": Need.updated_at,
}
_SUPPLY_KEYS = tuple(column.key for column in SUPPLY_COLUMNS)
_LINE_KEYS = tuple(column.key for column in LINE_COLUMNS)
_NEED_KEYS = ("id", *(name.removeprefix("need_") for name in NEED_COLUMNS))


def read_rows(supply_rows: Iterable[Sequence[Any]], line_rows: Iterable[Sequence[Any]]) -> ReadRows:
    """:class:`ReadRows` of rows read elsewhere without a lock: a matching run's own
    read (``matching.service.read_inputs``), so that its plan is not read twice.
    ``supply_rows`` begin with the columns of ``SUPPLY_COLUMNS``; ``line_rows`` with
    those of ``LINE_COLUMNS`` then ``NEED_COLUMNS``, in order, and hold every line of
    each need they name."""
    supplies: dict[uuid.UUID, Any] = {}
    width = len(SUPPLY_COLUMNS)
    for row in supply_rows:
        read = dict(zip(_SUPPLY_KEYS, row[:width], strict=True))
        each: Any = _Row(read)
        each.read = read
        supplies[each.id] = each
    lines: dict[uuid.UUID, Any] = {}
    needs: dict[uuid.UUID, Any] = {}
    lines_of: dict[uuid.UUID, list[Any]] = {}
    width = len(LINE_COLUMNS)
    for row in line_rows:
        read = dict(zip(_LINE_KEYS, row[:width], strict=True))
        line: Any = _Row(read)
        line.read = read
        lines[line.id] = line
        need_id = line.need_id
        if need_id not in needs:
            need: Any = _Row(
                dict(
                    zip(
                        _NEED_KEYS,
                        (need_id, *row[width : width + len(NEED_COLUMNS)]),
                        strict=True,
                    )
                )
            )
            need.was = need.status
            needs[need_id] = need
            lines_of[need_id] = []
        lines_of[need_id].append(line)
    return ReadRows(lines, supplies, needs, lines_of)


def _read_for_proposals(session: Session, proposals: Sequence[Proposal], *, lock: bool) -> ReadRows:
    """The need lines, supply lines and needs of ``proposals``, and every line of those
    needs: locked in that order (the order every saga step takes them in), or read only."""
    lines = _locked_rows(
        session, LINE_COLUMNS, NeedLine.id, {p.need_line_id for p in proposals}, lock=lock
    )
    supplies = _locked_rows(
        session, SUPPLY_COLUMNS, SupplyLine.id, {p.supply_line_id for p in proposals}, lock=lock
    )
    need_ids = {line.need_id for line in lines.values()}
    needs = _locked_rows(
        session,
        (Need.id, Need.status, Need.org_id, Need.version, Need.updated_at),
        Need.id,
        need_ids,
        lock=lock,
    )
    for need_row in needs.values():
        need_row.was = need_row.status
    return ReadRows(lines, supplies, needs, _lines_of_needs(session, need_ids, lines))


def _count(
    proposals: Sequence[Proposal],
    rows: ReadRows,
    run_id: uuid.UUID | None,
    deadline: datetime | None,
) -> _Counted:
    """Check each proposal against its supply and need as read, in order, and count
    those that fit into the rows (in memory)."""
    lines, supplies, needs, lines_of = rows.lines, rows.supplies, rows.needs, rows.lines_of
    counted = _Counted([], [], [], {}, {}, {}, utcnow())
    now = counted.now
    # One id per proposal at most, their random bytes read at once.
    fresh_ids = iter(uuid4s(len(proposals)))
    deadline_text = deadline.isoformat() if deadline is not None else None
    for proposal in proposals:
        quantity = proposal.quantity
        line = lines.get(proposal.need_line_id)
        supply = supplies.get(proposal.supply_line_id)
        if line is None or supply is None:
            counted.results.append(Proposed(None, "the line no longer exists"))
            continue
        need = needs[line.need_id]
        if need.status not in ("open", "partially_allocated") or line.status in (
            "expired",
            "cancelled",
            "fulfilled",
        ):
            counted.results.append(Proposed(None, f"the need is {need.status}"))
            continue
        if (
            line.status not in ("open", "partially_allocated")
            or line.quantity - line.proposed - line.reserved - line.shipped < quantity
        ):
            counted.results.append(Proposed(None, "the need line is already covered"))
            continue
        if (
            supply.pledge_status != "open"
            or supply.status in ("cancelled", "expired", "delivered")
            or supply.quantity - supply.reserved - supply.shipped - supply.proposed < quantity
        ):
            counted.results.append(Proposed(None, "the pledge line no longer has enough"))
            continue
        line.proposed += quantity
        supply.proposed += quantity
        allocation_id = next(fresh_ids)
        counted.allocations.append(
            {
                "id": allocation_id,
                "run_id": run_id,
                "pledge_id": supply.pledge_id,
                "pledge_line_id": supply.id,
                "donor_org_id": supply.donor_org_id,
                "donor_anonymous": bool(supply.anonymous),
                "need_id": need.id,
                "need_line_id": line.id,
                "recipient_org_id": need.org_id,
                "item": line.item,
                "quantity": quantity,
                "status": "proposed",
                "reason": proposal.reason,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
        counted.payloads.append(
            {
                "allocation_id": str(allocation_id),
                "pledge_id": str(supply.pledge_id),
                "pledge_line_id": str(supply.id),
                "need_id": str(need.id),
                "need_line_id": str(line.id),
                "recipient_org_id": str(need.org_id),
                "quantity": quantity,
                "deadline": deadline_text,
            }
        )
        _restatus(need, lines_of[need.id], counted.lines)
        counted.supplies[supply.id] = supply
        counted.needs[need.id] = need
        counted.results.append(
            Proposed(ProposedAllocation(allocation_id, supply.id, line.id, quantity))
        )
    return counted


def _proposed_events(counted: _Counted) -> list[Any]:
    """The ``allocation.proposed`` events of what was counted: the allocations in the
    order proposed, up to ``PROPOSALS_PER_EVENT`` an event (version 2; its first
    allocation checked by the schema, every other by its shape: ``check_payloads``).
    Each event is an aggregate of its own; each allocation's own order (proposed,
    then cancelled) is kept by the consumer (shared.events.supply.AllocationProposedV2)."""
    payloads = counted.payloads
    if not payloads:
        return []
    batches = [
        {"allocations": payloads[start : start + PROPOSALS_PER_EVENT]}
        for start in range(0, len(payloads), PROPOSALS_PER_EVENT)
    ]
    return new_events(
        "allocation.proposed",
        batches,
        producer=PRODUCER,
        aggregate_ids=uuid4s(len(batches)),
        aggregate_version=1,
        version=2,
    )


def propose_many(
    session: Session,
    outbox: Outbox,
    proposals: Sequence[Proposal],
    *,
    run_id: uuid.UUID | None,
    deadline: datetime | None = None,
) -> list[Proposed]:
    """Turn the allocations of a plan into proposals, each only if its supply and need
    still allow it, in order; one result per proposal.

    The need lines, supply lines and needs involved are locked once, in that order
    (the order every saga step takes them in), checked and counted in memory, and
    written in bulk: the counters and statuses by primary key, the allocations and
    their ``allocation.proposed`` events as multi-row inserts. A plan of tens of
    thousands of allocations is one short write, not an ORM flush per object.
    (:func:`plan_proposals` and :func:`write_planned` do the reading and counting
    before the transaction, for a plan made by a run.)
    """
    if not proposals:
        return []
    rows = _read_for_proposals(session, proposals, lock=True)
    counted = _count(proposals, rows, run_id, deadline)
    if not counted.allocations:
        return counted.results
    _write_counts(
        session,
        counted.lines,
        rows.lines,
        counted.supplies,
        counted.needs,
        ("proposed",),
        counted.now,
    )
    # Core inserts: the rows are complete, so the ORM's per-row bookkeeping is skipped.
    session.execute(insert(cast(Table, Allocation.__table__)), counted.allocations)
    outbox.add_many(session, _proposed_events(counted))
    return counted.results


# Compare-and-set of what a plan counted: set these, where the row still reads as it did.
_LINES_CAS = BulkCompareAndSet(
    cast(Table, NeedLine.__table__),
    "id",
    ("proposed", "status"),
    ("quantity", "proposed", "reserved", "shipped", "received", "status"),
)
_SUPPLY_CAS = BulkCompareAndSet(
    cast(Table, SupplyLine.__table__),
    "id",
    ("proposed",),
    # What the allocations copy of their pledge too: a donor who asked not to be named
    # meanwhile is not named by them.
    (
        "quantity",
        "reserved",
        "shipped",
        "proposed",
        "status",
        "pledge_status",
        "pledge_id",
        "donor_org_id",
        "anonymous",
        # Any other change of the pledge (a region restricted, a date, a standard)
        # since the plan's read: the matcher's rules held on the pledge as read.
        "pledge_version",
    ),
)
_NEEDS_CAS = BulkCompareAndSet(
    cast(Table, Need.__table__), "id", ("status", "version", "updated_at"), ("version",)
)
ALLOCATION_COLUMNS = (
    "id",
    "run_id",
    "pledge_id",
    "pledge_line_id",
    "donor_org_id",
    "donor_anonymous",
    "need_id",
    "need_line_id",
    "recipient_org_id",
    "item",
    "quantity",
    "status",
    "reason",
    "version",
    "created_at",
    "updated_at",
)
_ALLOCATIONS_INSERT = BulkInsert(cast(Table, Allocation.__table__), ALLOCATION_COLUMNS)
_ALLOCATION_VALUES = itemgetter(*ALLOCATION_COLUMNS)


@dataclass(frozen=True)
class PlannedProposals:
    """A slice of a plan's proposals read and counted before its write transaction,
    with every row that transaction writes made ready: :func:`plan_proposals`.
    ``indexes``: the place of each proposal in the plan it was taken from."""

    proposals: Sequence[Proposal]
    results: list[Proposed]
    lines: Ready
    supplies: Ready
    needs: Ready
    allocations: Ready
    events: PreparedEvents
    touched: frozenset[uuid.UUID]
    indexes: tuple[int, ...] = ()


def plan_proposals(
    session: Session,
    outbox: Outbox,
    proposals: Sequence[Proposal],
    *,
    run_id: uuid.UUID | None,
    deadline: datetime | None = None,
    read: ReadRows | None = None,
    slice_size: int | None = None,
) -> list[PlannedProposals]:
    """:func:`propose_many`'s reading and counting, done in ``session`` outside the
    transactions that will write (nothing locked, nothing written), and every row of
    those writes made ready (``shared.bulk``): the counters as compare-and-sets against
    what was read, the allocations and their events as inserts. ``read``: rows read
    already (a run's own read), used if they hold every row the plan names.

    The plan comes in slices of about ``slice_size`` proposals (one slice when None),
    each of whole needs, counted in the plan's order within it, and written by
    :func:`write_planned` in a transaction of its own, one after the other: a plan of
    tens of thousands of allocations holds each transaction for a slice's writes alone
    (on SQLite, the database's one write lock, for which a need posted meanwhile waits;
    on PostgreSQL, the rows' locks, for which an edit of a need or pledge waits). Each
    slice's compare-and-sets expect what the slices before it leave (a pledge line
    serves needs of several slices); if any slice finds a row changed, it and the
    slices after it are counted again under lock by their caller."""
    return [
        count()
        for count in slice_counters(
            session,
            outbox,
            proposals,
            run_id=run_id,
            deadline=deadline,
            read=read,
            slice_size=slice_size,
        )
    ]


def slice_counters(
    session: Session,
    outbox: Outbox,
    proposals: Sequence[Proposal],
    *,
    run_id: uuid.UUID | None,
    deadline: datetime | None = None,
    read: ReadRows | None = None,
    slice_size: int | None = None,
) -> list[Callable[[], PlannedProposals]]:
    """:func:`plan_proposals` with the reading done now and the counting left to be
    done: one call per slice, each made ready when called. They must be called in
    order, one at a time (each counts on what the slices before it leave, in the rows
    read), and need no database: a run counts its next slices while it writes the
    first ones."""
    dialect = session.get_bind().dialect
    if read is None or not read.covers(proposals):
        read = _read_for_proposals(session, proposals, lock=False)
    return [
        functools.partial(_plan_slice, dialect, outbox, proposals, indexes, read, run_id, deadline)
        for indexes in _slices(proposals, read.lines, slice_size)
    ]


def _slices(
    proposals: Sequence[Proposal], lines: dict[uuid.UUID, Any], size: int | None
) -> list[tuple[int, ...]]:
    """The places of ``proposals`` in slices of whole needs of about ``size`` each (one
    slice, in order, when ``size`` is None or the plan no larger); a proposal whose
    line was not read goes with the first slice (it is refused there)."""
    if size is None or len(proposals) <= size:
        return [tuple(range(len(proposals)))]
    by_need: dict[Any, list[int]] = {}
    for n, proposal in enumerate(proposals):
        line = lines.get(proposal.need_line_id)
        by_need.setdefault(None if line is None else line.need_id, []).append(n)
    slices: list[list[int]] = [by_need.pop(None, [])]
    for places in by_need.values():
        if len(slices[-1]) >= size:
            slices.append([])
        slices[-1].extend(places)
    return [tuple(sorted(places)) for places in slices if places]


def _plan_slice(
    dialect: Any,
    outbox: Outbox,
    proposals: Sequence[Proposal],
    indexes: tuple[int, ...],
    rows: ReadRows,
    run_id: uuid.UUID | None,
    deadline: datetime | None,
) -> PlannedProposals:
    mine = [proposals[n] for n in indexes] if len(indexes) != len(proposals) else proposals
    supplies = rows.supplies
    # What the slices before this one left of each pledge line's proposed quantity:
    # what this slice's compare-and-set expects of it.
    proposed_before = {
        p.supply_line_id: supplies[p.supply_line_id].proposed
        for p in mine
        if p.supply_line_id in supplies
    }
    counted = _count(mine, rows, run_id, deadline)
    line_rows = []
    for row in counted.lines.values():
        # Every line of every need the plan touches: the need's status is made of them
        # all, so each must still read as it was read (one read only for the need's
        # status has its counters as read and ``status_was``). A need is in one slice.
        was = getattr(row, "read", None) or {
            "quantity": row.quantity,
            "proposed": row.proposed,
            "reserved": row.reserved,
            "shipped": row.shipped,
            "received": row.received,
            "status": row.status_was,
        }
        line_rows.append(
            (
                row.id,
                row.proposed,
                row.status,
                was["quantity"],
                was["proposed"],
                was["reserved"],
                was["shipped"],
                was["received"],
                was["status"],
            )
        )
    supply_rows = [
        (
            row.id,
            row.proposed,
            row.read["quantity"],
            row.read["reserved"],
            row.read["shipped"],
            proposed_before[row.id],
            row.read["status"],
            row.read["pledge_status"],
            row.read["pledge_id"],
            row.read["donor_org_id"],
            row.read["anonymous"],
            row.read["pledge_version"],
        )
        for row in counted.supplies.values()
    ]
    need_rows = [
        (
            row.id,
            row.status,
            row.version + 1 if row.status != row.was else row.version,
            counted.now if row.status != row.was else row.updated_at,
            row.version,
        )
        for row in counted.needs.values()
    ]
    return PlannedProposals(
        proposals=mine,
        results=counted.results,
        lines=_LINES_CAS.prepare(dialect, line_rows),
        supplies=_SUPPLY_CAS.prepare(dialect, supply_rows),
        needs=_NEEDS_CAS.prepare(dialect, need_rows),
        allocations=_ALLOCATIONS_INSERT.prepare(
            dialect, list(map(_ALLOCATION_VALUES, counted.allocations))
        ),
        events=outbox.prepare_many(dialect, _proposed_events(counted) if counted.payloads else []),
        touched=frozenset(counted.lines.keys() | counted.supplies.keys() | counted.needs.keys()),
        indexes=indexes,
    )


def write_planned(
    session: Session, outbox: Outbox, planned: PlannedProposals
) -> list[Proposed] | None:
    """Write a slice of a plan made ready by :func:`plan_proposals` in the session's
    transaction: the counters where every row still reads as it was read, then the
    allocations and their events. None, with nothing written, if any row changed since
    (another writer came in between): the caller proposes again with
    :func:`propose_many`, which locks."""
    if not planned.allocations.count:
        return planned.results
    with session.begin_nested() as savepoint:
        if (
            _LINES_CAS.write(session, planned.lines) != planned.lines.count
            or _SUPPLY_CAS.write(session, planned.supplies) != planned.supplies.count
            or _NEEDS_CAS.write(session, planned.needs) != planned.needs.count
        ):
            savepoint.rollback()
            return None
        _ALLOCATIONS_INSERT.write(session, planned.allocations)
        outbox.write_prepared(session, planned.events)
    _expire_held(session, planned.touched)
    return planned.results


def propose(
    session: Session,
    outbox: Outbox,
    *,
    supply_line_id: uuid.UUID,
    need_line_id: uuid.UUID,
    quantity: int,
    reason: dict[str, Any],
    run_id: uuid.UUID | None,
    deadline: datetime | None = None,
) -> Proposed:
    """Turn one allocation of a plan into a proposal, if supply and need still allow it."""
    [result] = propose_many(
        session,
        outbox,
        [Proposal(supply_line_id, need_line_id, quantity, reason)],
        run_id=run_id,
        deadline=deadline,
    )
    return result


def _move(
    session: Session,
    allocation_id: uuid.UUID,
    before: tuple[str, ...],
    after: str,
    status_reason: str | None = None,
) -> Allocation | None:
    """Move an allocation from one of ``before`` to ``after``; None if it was not there."""
    with ledger.moves(session, allocations=[allocation_id]):
        moved = session.execute(
            update(Allocation)
            .where(Allocation.id == allocation_id, Allocation.status.in_(before))
            .values(status=after, status_reason=status_reason, updated_at=utcnow())
            .returning(Allocation.id)
            .execution_options(synchronize_session=False)
        ).first()
    if moved is None:
        return None
    return session.get(Allocation, allocation_id, populate_existing=True)


def move_allocation(
    session: Session,
    allocation_id: uuid.UUID,
    before: tuple[str, ...],
    after: str,
    status_reason: str | None = None,
) -> Allocation | None:
    """Move an allocation along its lifecycle by one conditional UPDATE; None if it
    was not in one of ``before`` (another change got there first)."""
    return _move(session, allocation_id, before, after, status_reason)


def move_allocations(
    session: Session,
    allocation_ids: Sequence[uuid.UUID],
    before: tuple[str, ...],
    after: str,
    status_reason: str | None = None,
) -> dict[uuid.UUID, Allocation]:
    """:func:`move_allocation` for several allocations at once (a shipment's), by one
    conditional UPDATE and one read; the moved ones by id (those not in one of
    ``before`` are left out: another change got there first)."""
    wanted = sorted(set(allocation_ids))
    if not wanted:
        return {}
    moved_ids: list[uuid.UUID] = []
    with ledger.moves(session, allocations=wanted):
        for chunk in in_chunks(wanted):
            moved_ids.extend(
                session.scalars(
                    update(Allocation)
                    .where(Allocation.id.in_(chunk), Allocation.status.in_(before))
                    .values(status=after, status_reason=status_reason, updated_at=utcnow())
                    .returning(Allocation.id)
                    .execution_options(synchronize_session=False)
                )
            )
    found: dict[uuid.UUID, Allocation] = {}
    for chunk in in_chunks(sorted(moved_ids)):
        for allocation in session.scalars(
            select(Allocation)
            .where(Allocation.id.in_(chunk))
            .execution_options(populate_existing=True)
        ):
            found[allocation.id] = allocation
    return found


def adjust_counters_many(
    session: Session, moves: Sequence[tuple[Allocation, dict[str, int]]]
) -> None:
    """:func:`adjust_counters` for several allocations: each need line's counters moved
    by one UPDATE (the lines in id order), then each need's statuses refreshed once."""
    per_line: dict[uuid.UUID, dict[str, int]] = {}
    for allocation, deltas in moves:
        line = per_line.setdefault(allocation.need_line_id, {})
        for key, value in deltas.items():
            if key in ("proposed", "reserved", "shipped"):
                line[key] = line.get(key, 0) + value
    for line_id in sorted(per_line):
        deltas = per_line[line_id]
        if deltas:
            session.execute(
                update(NeedLine)
                .where(NeedLine.id == line_id)
                .values(**{k: getattr(NeedLine, k) + v for k, v in deltas.items()})
                .execution_options(synchronize_session=False)
            )
    _refresh_needs(session, {allocation.need_id for allocation, _ in moves})


def adjust_counters(session: Session, allocation: Allocation, **deltas: int) -> None:
    """Move the allocation's quantity between its need line's counters (``proposed``,
    ``reserved``, ``shipped``) and refresh the need's statuses."""
    _counters(session, allocation, False, **deltas)


def _unplan(session: Session, allocation_id: uuid.UUID) -> None:
    """A cancelled allocation leaves the shipment planned for it, if that has not left."""
    session.execute(
        delete(ShipmentLine)
        .where(
            ShipmentLine.allocation_id == allocation_id,
            ShipmentLine.shipment_id.in_(
                select(Shipment.id).where(Shipment.status.in_(("planned", "ready_for_pickup")))
            ),
        )
        .execution_options(synchronize_session=False)
    )


def _unplan_many(session: Session, allocation_ids: list[uuid.UUID]) -> None:
    """:func:`_unplan` for several allocations, a statement a chunk."""
    for chunk in in_chunks(sorted(allocation_ids)):
        session.execute(
            delete(ShipmentLine)
            .where(
                ShipmentLine.allocation_id.in_(chunk),
                ShipmentLine.shipment_id.in_(
                    select(Shipment.id).where(Shipment.status.in_(("planned", "ready_for_pickup")))
                ),
            )
            .execution_options(synchronize_session=False)
        )


def _counters(
    session: Session, allocation: Allocation, lock_supply: bool = False, **deltas: int
) -> None:
    """Move the allocation's need line's counters (and its pledge line's ``proposed``),
    then refresh the need, in dispatch's lock order (need line, pledge line, need);
    ``lock_supply``: the pledge line is locked in its place even if unchanged (its
    totals are written next)."""
    need_deltas = {k: v for k, v in deltas.items() if k in ("proposed", "reserved", "shipped")}
    if need_deltas:
        session.execute(
            update(NeedLine)
            .where(NeedLine.id == allocation.need_line_id)
            .values(**{k: getattr(NeedLine, k) + v for k, v in need_deltas.items()})
            .execution_options(synchronize_session=False)
        )
    if "supply_proposed" in deltas:
        session.execute(
            update(SupplyLine)
            .where(SupplyLine.id == allocation.pledge_line_id)
            .values(proposed=SupplyLine.proposed + deltas["supply_proposed"])
            .execution_options(synchronize_session=False)
        )
    elif lock_supply:
        session.execute(
            select(SupplyLine.id)
            .where(SupplyLine.id == allocation.pledge_line_id)
            .with_for_update()
        )
    _refresh_need(session, allocation.need_id)


def on_accepted(session: Session, data: dict[str, Any]) -> Allocation | None:
    # The allocation, its need line, pledge line and need, in dispatch's lock order;
    # the pledge line's totals from donations after them (its row is held by then when
    # the allocation moved).
    allocation = _move(session, data["allocation_id"], ("proposed",), "reserved")
    if allocation is not None:
        _counters(
            session,
            allocation,
            proposed=-allocation.quantity,
            reserved=allocation.quantity,
            supply_proposed=-allocation.quantity,
        )
    apply_line_totals(session, data.get("line"), data.get("pledge_version"))
    return allocation


@dataclass(frozen=True)
class _Step:
    """One move of a batch of saga events: allocations in one of ``before`` become
    ``after``, and ``shift`` moves the quantity between their need line's and pledge
    line's counters (rows of :func:`_locked_rows`; the pledge line may be None)."""

    before: tuple[str, ...]
    after: str
    shift: Callable[[Any, Any, int], None]
    # Whether the allocations count in the ledger before the move (then read before
    # and after it) or only after it (then only after).
    counted_before: bool = False


def _moved_many(
    session: Session,
    events: list[dict[str, Any]],
    steps: Sequence[_Step],
    line_columns: tuple[str, ...],
) -> list[Allocation]:
    """Several saga events of one kind at once, in a handful of statements and in
    dispatch's lock order: the allocations (each step an UPDATE of those still in its
    ``before``, the ones a step moved left out of the next), then the need lines, the
    pledge lines (with the totals the events carry), the needs; counted in memory and
    written in bulk, as :func:`propose_many` does. Returns the allocations moved, in
    the order given."""
    # The pledge lines' totals carried by the events: of each line, the newest.
    newest: dict[Any, tuple[dict[str, Any], int]] = {}
    for data in events:
        totals, version = data.get("line"), data.get("pledge_version")
        if totals and version is not None:
            held = newest.get(totals["id"])
            if held is None or version > held[1]:
                newest[totals["id"]] = (totals, version)

    def take_totals() -> None:
        for line_id in sorted(newest, key=str):
            apply_line_totals(session, *newest[line_id])

    wanted = [data["allocation_id"] for data in events]
    reasons: dict[Any, list[Any]] = {}
    for data in events:
        reasons.setdefault(data.get("reason"), []).append(data["allocation_id"])
    step_of: dict[uuid.UUID, _Step] = {}
    for step in steps:
        left = {i for ids in reasons.values() for i in ids if i not in step_of}
        moved: set[uuid.UUID] = set()
        counting = (
            ledger.moves(session, allocations=sorted(left))
            if step.counted_before and left
            else contextlib.nullcontext()
        )
        with counting:
            for reason, ids in reasons.items():
                for chunk in ledger.chunked(sorted(i for i in ids if i in left)):
                    moved.update(
                        session.scalars(
                            update(Allocation)
                            .where(Allocation.id.in_(chunk), Allocation.status.in_(step.before))
                            .values(status=step.after, status_reason=reason, updated_at=utcnow())
                            .returning(Allocation.id)
                            .execution_options(synchronize_session=False)
                        )
                    )
        if moved and not step.counted_before:
            # Counted only after (a proposed allocation counts nothing,
            # ``COUNTED_ALLOCATION_STATUSES``): what they count now is all they add; the
            # rows are locked by the update.
            ledger.add_at_commit(session, ledger.count_lines(session, allocations=list(moved)))
        step_of.update(dict.fromkeys(moved, step))
    if not step_of:
        take_totals()
        return []
    by_id = {
        a.id: a
        for chunk in ledger.chunked(step_of)
        for a in session.scalars(
            select(Allocation)
            .where(Allocation.id.in_(chunk))
            .execution_options(populate_existing=True)
        )
    }
    moved_in_order = [by_id[i] for i in dict.fromkeys(wanted) if i in by_id]
    lines = _locked_rows(
        session, LINE_COLUMNS, NeedLine.id, {a.need_line_id for a in moved_in_order}
    )
    # The pledge lines' totals once the need lines are held (dispatch's lock order:
    # allocations, need lines, pledge lines, needs).
    take_totals()
    supplies = _locked_rows(
        session, SUPPLY_COLUMNS, SupplyLine.id, {a.pledge_line_id for a in moved_in_order}
    )
    need_ids = {line.need_id for line in lines.values()}
    needs = _locked_rows(session, (Need.id, Need.status, Need.version), Need.id, need_ids)
    for need_row in needs.values():
        need_row.was = need_row.status
    for allocation in moved_in_order:
        step_of[allocation.id].shift(
            lines[allocation.need_line_id],
            supplies.get(allocation.pledge_line_id),
            allocation.quantity,
        )
    lines_of = _lines_of_needs(session, need_ids, lines)
    touched_lines: dict[uuid.UUID, Any] = {}
    for need_id, need_row in needs.items():
        _restatus(need_row, lines_of[need_id], touched_lines)
    _write_counts(session, touched_lines, lines, supplies, needs, line_columns, utcnow())
    return moved_in_order


def _reserve(line: Any, supply: Any, quantity: int) -> None:
    line.proposed -= quantity
    line.reserved += quantity
    if supply is not None:
        supply.proposed -= quantity


def _drop_proposed(line: Any, supply: Any, quantity: int) -> None:
    line.proposed -= quantity
    if supply is not None:
        supply.proposed -= quantity


def _drop_reserved(line: Any, _supply: Any, quantity: int) -> None:
    line.reserved -= quantity


def on_accepted_many(session: Session, accepted: list[dict[str, Any]]) -> list[Allocation]:
    """:func:`on_accepted` for several reservations at once: the allocations still
    proposed become reserved, their quantities move from ``proposed`` to ``reserved``
    on their need lines (and leave ``proposed`` on their supply lines), in a handful of
    statements. Returns the allocations that moved, in the order given."""
    plain = [{**data, "reason": None} for data in accepted]
    return _moved_many(
        session, plain, [_Step(("proposed",), "reserved", _reserve)], ("proposed", "reserved")
    )


def on_rejected_many(session: Session, rejected: list[dict[str, Any]]) -> list[Allocation]:
    """:func:`on_rejected` for several events at once (a run's proposals refused
    together): the allocations still proposed become rejected, their quantities leave
    ``proposed`` on their need and pledge lines."""
    return _moved_many(
        session, rejected, [_Step(("proposed",), "rejected", _drop_proposed)], ("proposed",)
    )


def on_released_many(session: Session, released: list[dict[str, Any]]) -> list[Allocation]:
    """:func:`on_released` for several events at once (a cancelled pledge's
    reservations): reserved allocations become cancelled and leave the shipments
    planned for them; proposals released before their acceptance arrived too."""
    moved = _moved_many(
        session,
        released,
        [
            _Step(("reserved",), "cancelled", _drop_reserved, counted_before=True),
            _Step(("proposed",), "cancelled", _drop_proposed),
        ],
        ("proposed", "reserved"),
    )
    _unplan_many(session, [allocation.id for allocation in moved])
    return moved


def on_rejected(session: Session, data: dict[str, Any]) -> Allocation | None:
    allocation = _move(
        session, data["allocation_id"], ("proposed",), "rejected", data.get("reason")
    )
    if allocation is not None:
        _counters(
            session, allocation, proposed=-allocation.quantity, supply_proposed=-allocation.quantity
        )
    apply_line_totals(session, data.get("line"), data.get("pledge_version"))
    return allocation


def on_released(session: Session, data: dict[str, Any]) -> Allocation | None:
    """Donations let a reservation go (pledge cancelled, deadline passed, allocation
    cancelled): the quantity goes back to matching."""
    allocation = _move(
        session, data["allocation_id"], ("reserved",), "cancelled", data.get("reason")
    )
    if allocation is not None:
        # Its pledge line's totals come next: locked before the need.
        _counters(session, allocation, lock_supply=True, reserved=-allocation.quantity)
        _unplan(session, allocation.id)
    else:
        # A proposal released before its acceptance arrived (the events crossed).
        allocation = _move(
            session, data["allocation_id"], ("proposed",), "cancelled", data.get("reason")
        )
        if allocation is not None:
            _counters(
                session,
                allocation,
                proposed=-allocation.quantity,
                supply_proposed=-allocation.quantity,
            )
    apply_line_totals(session, data.get("line"), data.get("pledge_version"))
    return allocation


def cancel_allocation(
    session: Session, outbox: Outbox, allocation: Allocation, reason: str
) -> bool:
    """Cancel an allocation that has not shipped; donations releases its reservation."""
    previous = allocation.status
    moved = _move(session, allocation.id, OPEN_ALLOCATION_STATUSES, "cancelled", reason)
    if moved is None:
        return False
    if previous == "proposed":
        _counters(session, moved, proposed=-moved.quantity, supply_proposed=-moved.quantity)
    else:
        _counters(session, moved, reserved=-moved.quantity)
        _unplan(session, moved.id)
    version = session.scalar(
        update(Allocation)
        .where(Allocation.id == moved.id)
        .values(version=Allocation.version + 1)
        .returning(Allocation.version)
        .execution_options(synchronize_session=False)
    )
    outbox.add(
        session,
        new_event(
            "allocation.cancelled",
            {"allocation_id": moved.id, "pledge_line_id": moved.pledge_line_id, "reason": reason},
            producer=PRODUCER,
            aggregate_id=moved.id,
            aggregate_version=int(version or 2),
        ),
    )
    return True


def cancel_allocations_of_need(
    session: Session, outbox: Outbox, need_id: uuid.UUID, reason: str
) -> int:
    allocations = session.scalars(
        select(Allocation).where(of_need(need_id), Allocation.status.in_(OPEN_ALLOCATION_STATUSES))
    ).all()
    return sum(cancel_allocation(session, outbox, a, reason) for a in allocations)


def _refresh_need(session: Session, need_id: uuid.UUID) -> None:
    """Recompute the need's and its lines' statuses from their counters."""
    # Locked: two saga events of one need may be handled at once by two workers.
    need = session.get(Need, need_id, populate_existing=True, with_for_update=True)
    if need is None:
        return
    for line in need.lines:
        session.refresh(line)
        need_status.refresh_line_status(line)
    need_status.refresh_need_status(need)
    session.flush()


def _refresh_needs(session: Session, need_ids: set[uuid.UUID]) -> None:
    """:func:`_refresh_need` for several needs: locked in id order, their lines read
    again in one statement."""
    ordered = sorted(need_ids)
    if not ordered:
        return
    for chunk in in_chunks(ordered):
        needs = list(
            session.scalars(
                select(Need)
                .where(Need.id.in_(chunk))
                .order_by(Need.id)
                .with_for_update()
                .options(selectinload(Need.lines))
                .execution_options(populate_existing=True)
            )
        )
        for need in needs:
            for line in need.lines:
                need_status.refresh_line_status(line)
            need_status.refresh_need_status(need)
    session.flush()


def items_of_org(session: Session, org_id: uuid.UUID) -> set[str]:
    """Items an organisation pledges or needs."""
    supplied = session.scalars(
        select(SupplyLine.item).where(SupplyLine.donor_org_id == org_id).distinct()
    )
    needed = session.scalars(
        select(NeedLine.item).join(Need, Need.id == NeedLine.need_id).where(Need.org_id == org_id)
    )
    return set(supplied) | set(needed)


# Event handlers -------------------------------------------------------------------------------


def donor_personal_data(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """What dispatch holds of a donor that may be a person's data: where its pledges'
    goods are picked up."""
    lines = session.scalars(
        select(SupplyLine).where(SupplyLine.donor_org_id == org_id).order_by(SupplyLine.id)
    )
    return {
        "supply_lines": [
            {
                "pledge_line_id": str(line.id),
                "region": line.region,
                "address": line.address,
                "contact": contact_of(line.contact_name, line.contact_phone),
                "lat": line.lat,
                "lon": line.lon,
            }
            for line in lines
        ]
    }
