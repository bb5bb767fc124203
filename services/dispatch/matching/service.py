"""Matching in the dispatch service: build the library's input from the read models,
run it under a per-item lock, keep the plan, and apply it as proposed allocations.

A run is a preview (``dry_run``) that a coordinator approves, or is applied at once.
Supply and need events ask for a run of their item (debounced: changes that arrive
while a run is waiting are covered by it); beat runs every item on a schedule. With
``matching_auto_approve`` those runs are applied; otherwise each leaves a preview,
replacing the previous unapproved preview of its items.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import operator
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, defer

from services.dispatch import matching
from services.dispatch.allocations import service as saga
from services.dispatch.matching.model import Reason
from services.dispatch.models import (
    MatchingLock,
    MatchingRun,
    Need,
    NeedLine,
    Organisation,
    SupplyLine,
)
from shared.bulk import collector_paused, switching_often
from shared.db import in_chunks, sqlite_large_cache, upsert_insert, utcnow
from shared.errors import Conflict, NotFound, RuleBroken
from shared.idempotency import bookkeeping
from shared.metrics import MATCHING_SECONDS
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

LOCK_TTL = timedelta(minutes=5)
MANUAL_RUN_PATIENCE = 5.0  # seconds
_PENDING_KEY = "aidlink.matching.requested"


# Locks --------------------------------------------------------------------------------------


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _add_lock_rows(session: Session, items: list[str]) -> None:
    """Insert the lock rows of ``items``, leaving those another transaction made."""
    session.execute(
        upsert_insert(session)(MatchingLock.__table__)
        .values([{"item": item} for item in items])
        .on_conflict_do_nothing(index_elements=["item"])
    )


def _ensure_lock_rows(rt: ServiceRuntime, items: Iterable[str]) -> None:
    wanted = list(items)
    with rt.session_factory() as session:
        existing = set(
            session.scalars(select(MatchingLock.item).where(MatchingLock.item.in_(wanted)))
        )
    missing = [item for item in wanted if item not in existing]
    if missing:
        with rt.unit_of_work() as session:
            _add_lock_rows(bookkeeping(session), missing)


def acquire(rt: ServiceRuntime, items: list[str], holder: str) -> list[str]:
    """Take the locks of ``items`` (in a fixed order); returns the items another run
    holds, having taken none of them in that case."""
    _ensure_lock_rows(rt, items)
    taken: list[str] = []
    now = utcnow()
    try:
        for item in sorted(items):
            with rt.unit_of_work() as session:
                got = (
                    bookkeeping(session)
                    .execute(
                        update(MatchingLock)
                        .where(
                            MatchingLock.item == item,
                            (MatchingLock.holder.is_(None)) | (MatchingLock.expires_at < now),
                        )
                        .values(holder=holder, expires_at=now + LOCK_TTL, last_started_at=now)
                        .returning(MatchingLock.item)
                    )
                    .first()
                )
            if got is None:
                release(rt, taken, holder)
                return [item]
            taken.append(item)
    except BaseException:
        # A connection lost at the commit may have taken the item all the same: this
        # holder lets go of everything it asked for, not only what it saw taken, or the
        # items would stay locked for LOCK_TTL.
        release(rt, items, holder)
        raise
    return []


# Tries of a release whose database connection is lost under it.
_RELEASE_TRIES = 3


def release(rt: ServiceRuntime, items: list[str], holder: str) -> None:
    """Let go of the locks of ``items`` that ``holder`` holds. A release that loses its
    connection (a database restart or failover) is made again on a new one: it changes
    only this holder's rows, and one not made would keep a coordinator's runs of these
    items refused (409) for LOCK_TTL."""
    if not items:
        return
    for attempt in range(1, _RELEASE_TRIES + 1):
        try:
            with rt.unit_of_work() as session:
                bookkeeping(session).execute(
                    update(MatchingLock)
                    .where(MatchingLock.item.in_(items), MatchingLock.holder == holder)
                    .values(holder=None, expires_at=None)
                )
            return
        except DBAPIError as exc:
            if not exc.connection_invalidated or attempt == _RELEASE_TRIES:
                raise
            log.warning("releasing the matching lock of %s again: %s", items, exc.orig)


# Inputs ---------------------------------------------------------------------------------------


def _verified(session: Session, org_ids: set[Any]) -> dict[uuid.UUID, str]:
    """Which of ``org_ids`` are verified, and their kinds: those the run's lines name,
    not every organisation ever verified."""
    found: dict[uuid.UUID, str] = {}
    for chunk in in_chunks(sorted(org_ids)):
        rows = session.execute(
            select(Organisation.id, Organisation.kind).where(
                Organisation.status == "verified", Organisation.id.in_(chunk)
            )
        )
        found.update({org_id: kind for org_id, kind in rows})
    return found


@dataclass
class Inputs:
    """What a run reads: the open supply and demand as the matcher takes them, and the
    same rows as the saga counts a plan against (``saga.ReadRows``), so that applying
    the run's plan reads nothing again."""

    supply: list[matching.SupplyLine]
    demand: list[matching.DemandLine]
    rows: saga.ReadRows
    # The lines' ids as the matcher has them (text), and as stored.
    ids: dict[str, uuid.UUID]


def read_inputs(session: Session, items: list[str] | None) -> Inputs:
    """The open supply and demand of ``items`` (all when None), as the matcher takes
    them and as the saga counts a plan against them; read as plain columns, since a
    run at crisis scale reads tens of thousands of rows and builds no ORM object of
    them. Every line of each open need with a line of ``items`` is read (the need's
    status is made of them all), the matcher given the open lines of ``items``."""
    supply_stmt = select(
        *saga.SUPPLY_COLUMNS,
        SupplyLine.item,
        SupplyLine.standard,
        SupplyLine.region,
        SupplyLine.lat,
        SupplyLine.lon,
        SupplyLine.best_before,
        SupplyLine.restrictions,
    ).where(SupplyLine.pledge_status == "open")
    demand_stmt = (
        select(
            *saga.LINE_COLUMNS,
            *(column.label(name) for name, column in saga.NEED_COLUMNS.items()),
            NeedLine.standards,
            NeedLine.urgency,
            NeedLine.needed_by,
            NeedLine.stock_on_hand,
            NeedLine.daily_consumption,
            Need.region,
            Need.lat,
            Need.lon,
        )
        .join(Need, Need.id == NeedLine.need_id)
        .where(Need.status.in_(("open", "partially_allocated")))
    )
    if items:
        supply_stmt = supply_stmt.where(SupplyLine.item.in_(items))
        # Every line of each need with a line of these items: a need's status is made
        # of all its lines, whatever their item; the matcher gets these items' alone.
        demand_stmt = demand_stmt.where(
            NeedLine.need_id.in_(select(NeedLine.need_id).where(NeedLine.item.in_(items)))
        )
    wanted = set(items) if items else None
    supply = []
    ids: dict[str, uuid.UUID] = {}
    # Through the session's connection: plain columns need none of the ORM's loading,
    # a fifth of the read at crisis scale.
    connection = session.connection()
    supply_result = connection.execute(supply_stmt.order_by(SupplyLine.id))
    # Each row's columns taken by place, all at once (a named attribute of a row costs
    # ten times as much, and a run reads tens of thousands).
    supply_columns = _columns_of(
        supply_result,
        "status", "quantity", "reserved", "shipped", "proposed", "donor_org_id", "id",
        "item", "standard", "region", "lat", "lon", "best_before", "restrictions",
    )  # fmt: skip
    supply_rows = supply_result.all()
    line_result = connection.execute(demand_stmt.order_by(NeedLine.id))
    line_columns = _columns_of(
        line_result,
        "status", "item", "quantity", "proposed", "reserved", "shipped", "need_org_id",
        "stock_on_hand", "daily_consumption", "id", "standards", "region", "lat", "lon",
        "urgency", "needed_by", "need_id",
    )  # fmt: skip
    line_rows = line_result.all()
    donor_at = list(supply_result.keys()).index("donor_org_id")
    recipient_at = list(line_result.keys()).index("need_org_id")
    named: set[Any] = {row[donor_at] for row in supply_rows}
    named.update(row[recipient_at] for row in line_rows)
    orgs = _verified(session, named)
    for row in supply_rows:
        (
            status, quantity, reserved, shipped, proposed, donor, line_id,
            item, standard, region, lat, lon, best_before, restrictions,
        ) = supply_columns(row)  # fmt: skip
        # What saga.available_supply gives a line.
        if status in ("cancelled", "expired", "delivered"):
            continue
        left = quantity - reserved - shipped - proposed
        if left <= 0 or donor not in orgs:
            continue
        restrictions = restrictions or {}
        ids[text := str(line_id)] = line_id
        supply.append(
            matching.SupplyLine(
                id=text,
                item=item,
                standard=standard,
                quantity=left,
                location=matching.Location(region, lat, lon),
                donor_id=str(donor),
                best_before=best_before,
                restrict_regions=tuple(restrictions.get("regions") or ()),
                restrict_recipient_kinds=tuple(restrictions.get("recipient_kinds") or ()),
            )
        )
    demand = []
    for line in line_rows:
        (
            status, item, quantity, proposed, reserved, shipped, recipient,
            stock, daily, line_id, standards, region, lat, lon, urgency, needed_by, need_id,
        ) = line_columns(line)  # fmt: skip
        if status not in ("open", "partially_allocated") or (
            wanted is not None and item not in wanted
        ):
            continue
        left = quantity - proposed - reserved - shipped
        if left <= 0 or recipient not in orgs:
            continue
        days = stock is not None and bool(daily)
        ids[text := str(line_id)] = line_id
        demand.append(
            matching.DemandLine(
                id=text,
                item=item,
                standards=tuple(standards or ()),
                quantity=left,
                location=matching.Location(region, lat, lon),
                recipient_id=str(recipient),
                recipient_kind=orgs[recipient],
                urgency=cast(matching.Urgency, urgency),
                needed_by=needed_by,
                # Fairness is per need, on the share of what it asked for (what it
                # already has counts) or, where stated, on its days of supply with
                # what is on its way.
                need_id=str(need_id),
                requested=quantity,
                # Days of supply only where both stock and daily use are known.
                stock=stock + quantity - left if stock is not None and days else None,
                daily_use=daily if days else None,
            )
        )
    return Inputs(supply, demand, saga.read_rows(supply_rows, line_rows), ids)


def _columns_of(result: Any, *names: str) -> Callable[[Any], tuple[Any, ...]]:
    """What takes ``names``' values from a row of ``result``, in that order, by place."""
    keys = list(result.keys())
    return operator.itemgetter(*(keys.index(name) for name in names))


def per_item_totals(
    supply: list[matching.SupplyLine], demand: list[matching.DemandLine], plan: matching.Plan
) -> dict[str, dict[str, int]]:
    """Per item, in its base unit: supply and demand in the run, what the plan
    allocates and what stays unmet."""
    totals: dict[str, dict[str, int]] = {}

    def of(item: str) -> dict[str, int]:
        return totals.setdefault(item, {"supply": 0, "demand": 0, "allocated": 0, "unmet": 0})

    item_of = {d.id: d.item for d in demand}
    for s in supply:
        of(s.item)["supply"] += s.quantity
    for d in demand:
        of(d.item)["demand"] += d.quantity
    for a in plan.allocations:
        of(a.item)["allocated"] += a.quantity
    for line_id, missing in plan.unmet.items():
        of(item_of[line_id])["unmet"] += missing
    return dict(sorted(totals.items()))


@functools.cache
def _fields_of(kind: type) -> tuple[Any, ...]:
    return fields(kind)


def _reason_document(reason: Reason) -> dict[str, Any]:
    """A reason as :func:`_jsonable` writes it, field by field without asking each value
    its type: a plan of tens of thousands of allocations holds as many reasons."""
    days = reason.days_of_supply
    return {
        "urgency": reason.urgency,
        "distance_km": round(reason.distance_km, 3),
        "need_fill": round(reason.need_fill, 3),
        "days_of_supply": None if days is None else round(days, 3),
        "nearest": reason.nearest,
    }


def _jsonable(value: Any) -> Any:
    if type(value) is Reason:
        return _reason_document(value)
    if is_dataclass(value) and not isinstance(value, type):
        # Field by field: dataclasses.asdict deep-copies every value, the most of a
        # plan of tens of thousands of reasons' cost.
        return {f.name: _jsonable(getattr(value, f.name)) for f in _fields_of(type(value))}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value


def plan_document(plan: Any, supply: Any = ()) -> dict[str, Any]:
    """The plan as a run keeps it; each allocation with the standard of the supply it
    takes (``supply``: the matcher's supply lines), so a plan tells GB 19083 from YY 0469."""
    standards = {s.id: s.standard for s in supply}
    return {
        "allocations": [
            {
                "pledge_line_id": a.supply_id,
                "need_line_id": a.demand_id,
                "item": a.item,
                "standard": standards.get(a.supply_id),
                "quantity": a.quantity,
                "reason": _jsonable(a.reason),
            }
            for a in plan.allocations
        ],
        "unmet": [
            {"need_line_id": demand_id, "quantity": quantity}
            for demand_id, quantity in sorted(plan.unmet.items())
            if quantity > 0
        ],
    }


# Runs -----------------------------------------------------------------------------------------


@collector_paused()
def run(
    rt: ServiceRuntime,
    *,
    items: list[str] | None,
    dry_run: bool,
    trigger: str,
    created_by: uuid.UUID | None = None,
    wait: bool = False,
) -> MatchingRun | None:
    """One matching run. A manual run finding an item locked waits for it a few seconds
    (``MANUAL_RUN_PATIENCE``), then answers 409; an event or
    scheduled run (``wait``) returns None (an event's run comes back later, see
    ``match_item``; the scheduled one waits for its next turn)."""
    with rt.session_factory() as session:
        wanted = sorted(
            set(items)
            if items
            else set(session.scalars(select(SupplyLine.item).distinct()))
            | set(session.scalars(select(NeedLine.item).distinct()))
        )
    holder = _holder()
    busy = acquire(rt, wanted, holder) if wanted else []
    if busy and not wait:
        # A coordinator asking while a run on events holds the item (a second or so,
        # usually) gets the next turn rather than an error.
        deadline = time.monotonic() + MANUAL_RUN_PATIENCE
        while busy and time.monotonic() < deadline:
            time.sleep(0.2)
            busy = acquire(rt, wanted, holder)
    if busy:
        if wait:
            log.info("matching of %s is already running; this run is covered by it", busy)
            return None
        raise Conflict(
            f"A matching run for {busy[0]!r} is in progress; try again in a moment.",
            slug="matching-in-progress",
            item=busy[0],
        )
    try:
        started = time.perf_counter()
        # Read without the write lock (SQLite): needs posted meanwhile go on.
        with _reading(rt) as session:
            inputs = read_inputs(session, wanted)
        supply, demand = inputs.supply, inputs.demand
        plan = matching.match(supply, demand, today=utcnow().date())
        elapsed = time.perf_counter() - started
        MATCHING_SECONDS.labels(rt.name, trigger).observe(elapsed)
        document = plan_document(plan, supply)
        stats = {
            "supply_lines": len(supply),
            "demand_lines": len(demand),
            "seconds": round(elapsed, 3),
            # Quantities of different items never add up: per item, in its base unit.
            "items": per_item_totals(supply, demand, plan),
        }
        # A run of events or the schedule that found nothing to do leaves no preview
        # for a coordinator to look at: it is kept as "empty", for the history.
        empty = trigger != "manual" and dry_run and not document.get("allocations")
        # Made before the write begins: on SQLite its transaction holds the database.
        run_id = uuid.uuid4()
        counting = time.perf_counter()
        planning: contextlib.AbstractContextManager[list[Future[saga.PlannedProposals]]] = (
            contextlib.nullcontext([])
            if dry_run
            else _planned(rt, document["allocations"], run_id, inputs)
        )
        with planning as slices, _relaying(rt):
            planned = slices[0].result() if slices else None
            writing = time.perf_counter()
            with rt.unit_of_work() as session:
                matching_run = MatchingRun(
                    id=run_id,
                    status="empty" if empty else "preview",
                    dry_run=dry_run,
                    trigger=trigger,
                    items=wanted,
                    plan=document,
                    stats=stats,
                    created_by=created_by,
                )
                session.add(matching_run)
                # A newer preview replaces older unapproved previews of the same items;
                # a run the service made on its own leaves a coordinator's alone (she
                # may be reading or editing it: her approval refuses what no longer
                # fits).
                _supersede(session, matching_run, keep_manual=trigger != "manual")
                if planned is not None:
                    _apply(session, rt, matching_run, created_by, planned)
            _apply_later_slices(rt, matching_run, created_by, slices[1:], document["allocations"])
        # What a long run spent where, for whoever watches the worker's log.
        log.info(
            "matching run %s (%s, %s): %d supply and %d demand lines, %d allocations; "
            "read and solved in %.2f s, counted before the first write in %.2f s, written "
            "in %d transaction(s) (the later slices counted meanwhile) and "
            "relayed in %.2f s",
            run_id,
            trigger,
            "preview" if dry_run else "applied",
            len(supply),
            len(demand),
            len(document.get("allocations", [])),
            elapsed,
            writing - counting,
            max(1, len(slices)),
            time.perf_counter() - writing,
        )
        return matching_run
    finally:
        release(rt, wanted, holder)


def _supersede(session: Session, newer: MatchingRun, *, keep_manual: bool) -> None:
    """Mark ``superseded`` the waiting previews of no more items than ``newer``'s; with
    ``keep_manual``, not those a coordinator asked for."""
    # Ids and items only: a preview's plan may hold tens of thousands of allocations.
    query = select(MatchingRun.id, MatchingRun.items).where(
        MatchingRun.status == "preview", MatchingRun.id != newer.id
    )
    if keep_manual:
        query = query.where(MatchingRun.trigger != "manual")
    covered = set(newer.items)
    with session.no_autoflush:
        stale = [run_id for run_id, items in session.execute(query) if set(items) <= covered]
    if stale:
        session.execute(
            update(MatchingRun)
            .where(MatchingRun.id.in_(stale), MatchingRun.status == "preview")
            .values(status="superseded")
            .execution_options(synchronize_session="fetch")
        )


def _proposals(
    plan: list[dict[str, Any]], ids: dict[str, uuid.UUID] | None = None
) -> list[saga.Proposal]:
    """The plan's allocations as the saga's proposals; ``ids``: the lines' ids as
    read, by their text (else each is parsed)."""
    ids = ids or {}
    return [
        saga.Proposal(
            supply_line_id=ids.get(proposal["pledge_line_id"])
            or uuid.UUID(proposal["pledge_line_id"]),
            need_line_id=ids.get(proposal["need_line_id"]) or uuid.UUID(proposal["need_line_id"]),
            quantity=int(proposal["quantity"]),
            reason=proposal.get("reason") or {},
        )
        for proposal in plan
    ]


def _relaying(rt: ServiceRuntime) -> contextlib.AbstractContextManager[None]:
    """How a run's slices are relayed: by a thread of the process while the next slice
    is written (the relay's Python runs while the write waits on the database), the
    run ending once every event is relayed. On SQLite the relay's stamps wait for the
    write lock between two slices, as the other writers do (``shared.db``: a writer
    asks for it every few milliseconds and comes in at the first gap)."""
    return rt.outbox.relaying_alongside()


def _on_postgresql(rt: ServiceRuntime) -> bool:
    """Whether the service's database is PostgreSQL (a run's work overlaps there)."""
    return bool(rt.session_factory.kw["bind"].dialect.name == "postgresql")


def _reading(rt: ServiceRuntime) -> Session:
    """A session that reads only (on SQLite, without the write lock)."""
    return (rt.read_session_factory or rt.session_factory)()


# Proposals a run, or the approval of a preview, writes per transaction. On PostgreSQL
# a slice holds the row locks of the needs, need lines and pledge lines it counts for
# half a second rather than the whole plan's two: an edit of a need or a pledge the run
# touches waits that long at most. On SQLite a transaction holds the database's one
# write lock, and every writer waits for it: slices of half as many hold it about a
# quarter of a second at 20k lines a side (0.35 to 0.74 s at 5,000, beside the counting
# thread), so that a need posted during a run is answered within half a second: it
# comes in between two slices (``shared.db``: writers ask for the lock every few ms).
WRITE_SLICE = 5000
SQLITE_WRITE_SLICE = 2500


def _write_slice(rt: ServiceRuntime) -> int:
    return WRITE_SLICE if _on_postgresql(rt) else min(WRITE_SLICE, SQLITE_WRITE_SLICE)


@contextlib.contextmanager
def _planned(
    rt: ServiceRuntime,
    plan: list[dict[str, Any]],
    run_id: uuid.UUID,
    inputs: Inputs | None = None,
) -> Iterator[list[Future[saga.PlannedProposals]]]:
    """The plan's proposals counted outside any write transaction, on the run's own
    read (``inputs``) or on rows read for them, in slices of ``WRITE_SLICE`` proposals
    written a transaction each (``saga.slice_counters``), the slices in order.

    A plan of one slice is counted at once. A larger one is counted slice after slice
    by a thread of its own while the run writes the slices counted already: a write
    mostly waits on the database (on SQLite, on the driver, which runs each statement
    of a few hundred rows without the GIL: ``shared.bulk``), the counting is Python,
    and the two together take less than their sum. Whoever takes a slice's result
    waits for it to be counted (before opening the transaction that writes it);
    leaving the block drops the slices not counted yet."""
    proposals = _proposals(plan, inputs.ids if inputs is not None else None)
    with _reading(rt) as session:
        counters = saga.slice_counters(
            session,
            rt.outbox,
            proposals,
            run_id=run_id,
            read=inputs.rows if inputs is not None else None,
            slice_size=_write_slice(rt),
        )
    if len(counters) == 1:
        counted: Future[saga.PlannedProposals] = Future()
        counted.set_result(counters[0]())
        yield [counted]
        return
    # One worker: the slices are counted one at a time, in order. The GIL changes
    # hands often meanwhile, or each of the writer's statements would wait up to 5 ms
    # for the counting thread to let go of it.
    with switching_often():
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="matching-count")
        try:
            # In the run's context: its events carry its correlation and cause.
            yield [pool.submit(contextvars.copy_context().run, count) for count in counters]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _apply(
    session: Session,
    rt: ServiceRuntime,
    matching_run: MatchingRun,
    approved_by: uuid.UUID | None,
    planned: saga.PlannedProposals,
    plan: list[dict[str, Any]] | None = None,
) -> None:
    """Propose the run's plan (``plan``, else the run's own), or a slice of it, as
    counted before the write began (``planned``); if any of its rows changed since,
    counted again now, under lock. The run's stats add up what its slices proposed and
    refused."""
    if plan is None:
        plan = matching_run.plan.get("allocations", [])
    sqlite_large_cache(session)
    results = saga.write_planned(session, rt.outbox, planned)
    if results is None:
        log.info("the supply or needs of run %s changed while it was planned", matching_run.id)
        results = saga.propose_many(session, rt.outbox, planned.proposals, run_id=matching_run.id)
    mine = [plan[n] for n in planned.indexes] if planned.indexes else plan
    refused = [
        {**proposal, "refused": result.refused}
        for proposal, result in zip(mine, results, strict=True)
        if result.allocation is None
    ]
    made = sum(1 for result in results if result.allocation is not None)
    stats = matching_run.stats
    matching_run.status = "applied"
    matching_run.approved_by = approved_by
    matching_run.approved_at = matching_run.approved_at or utcnow()
    matching_run.stats = {
        **stats,
        "proposed": stats.get("proposed", 0) + made,
        "refused": [*stats.get("refused", []), *refused],
    }


def _apply_later_slices(
    rt: ServiceRuntime,
    matching_run: MatchingRun,
    approved_by: uuid.UUID | None,
    slices: list[Future[saga.PlannedProposals]],
    plan: list[dict[str, Any]],
) -> None:
    """Write the slices of ``matching_run``'s ``plan`` after its first, a transaction
    each once counted, its row saying at every commit how much of the plan is proposed;
    ``matching_run`` (the caller's, its plan loaded) gets the stats of the last."""
    for counting in slices:
        more = counting.result()
        with rt.unit_of_work() as session:
            # Not its plan: tens of thousands of allocations to decode again.
            applied = session.get(
                MatchingRun,
                matching_run.id,
                options=[defer(MatchingRun.plan)],
                with_for_update=True,
            )
            assert applied is not None
            _apply(session, rt, applied, approved_by, more, plan)
        matching_run.stats = applied.stats


@collector_paused()
def approve(rt: ServiceRuntime, run_id: uuid.UUID, approved_by: uuid.UUID | None) -> MatchingRun:
    """Apply a preview. Allocations that no longer fit (supply or need changed since) are
    listed as refused; the rest become proposals."""
    with rt.session_factory() as session:
        found = session.get(MatchingRun, run_id)
        if found is None:
            raise NotFound(f"No matching run {run_id}.", slug="matching-run-not-found")
        items = list(found.items)
        plan = found.plan.get("allocations", [])
    holder = _holder()
    busy = acquire(rt, items, holder)
    if busy:
        raise Conflict(
            f"A matching run for {busy[0]!r} is in progress; approve again in a moment.",
            slug="matching-in-progress",
        )
    try:
        with contextlib.ExitStack() as planning:
            slices = planning.enter_context(_planned(rt, plan, run_id))
            first = slices[0].result()
            with _relaying(rt):
                with rt.unit_of_work() as session:
                    matching_run = _preview_for_update(session, run_id, "approved")
                    if matching_run.plan.get("allocations", []) != plan:
                        # Edited since it was read: counted again, now that the run is
                        # locked.
                        planning.close()
                        plan = matching_run.plan.get("allocations", [])
                        slices = planning.enter_context(_planned(rt, plan, run_id))
                        first = slices[0].result()
                    _apply(session, rt, matching_run, approved_by, first)
                    # Other plans of these items, made before this one took its supply,
                    # are stale.
                    _supersede(session, matching_run, keep_manual=False)
                _apply_later_slices(rt, matching_run, approved_by, slices[1:], plan)
        return matching_run
    finally:
        release(rt, items, holder)


def _preview_for_update(session: Session, run_id: uuid.UUID, verb: str) -> MatchingRun:
    """The run, locked for this transaction; 404 if there is none, 409 unless it is a
    preview (only a preview can be ``verb``)."""
    matching_run = session.get(MatchingRun, run_id, with_for_update=True)
    if matching_run is None:
        raise NotFound(f"No matching run {run_id}.", slug="matching-run-not-found")
    if matching_run.status != "preview":
        raise Conflict(
            f"The run is {matching_run.status}; only a preview can be {verb}.",
            slug="matching-run-not-preview",
            status_now=matching_run.status,
        )
    return matching_run


def edit(
    rt: ServiceRuntime,
    run_id: uuid.UUID,
    changes: list[dict[str, Any]],
    edited_by: uuid.UUID | None,
) -> MatchingRun:
    """Change a preview by hand before approving it. Each change sets the quantity of
    one pair of lines: 0 removes the allocation, a pair not in the plan adds one. The
    edited plan is checked against the supply and needs as they are now, by every
    hard rule of matching and their quantities; if it breaks any, nothing changes and
    the 422 names each broken rule (``changes.N`` for the change that broke it,
    ``plan`` for one the plan broke as it stood)."""
    with rt.unit_of_work() as session:
        matching_run = _preview_for_update(session, run_id, "edited")
        planned: dict[tuple[str, str], int] = {
            (a["pledge_line_id"], a["need_line_id"]): int(a["quantity"])
            for a in matching_run.plan.get("allocations", [])
        }
        changed_by: dict[tuple[str, str], int] = {}
        for n, change in enumerate(changes):
            pair = (str(change["pledge_line_id"]), str(change["need_line_id"]))
            planned[pair] = int(change["quantity"])
            changed_by[pair] = n
        pairs = list(planned)
        if not matching_run.items:
            raise Conflict(
                "The run covers no item; there is nothing to edit.", slug="matching-run-empty"
            )
        inputs = read_inputs(session, list(matching_run.items))
        supply, demand = inputs.supply, inputs.demand
        try:
            plan = matching.plan_of(
                [matching.Planned(s, d, q) for (s, d), q in planned.items()],
                supply,
                demand,
                today=utcnow().date(),
            )
        except matching.PlanRefused as refused:
            errors: dict[str, list[str]] = {}
            for broken in refused.problems:
                # A rule is the fault of the changes that touch it; of the plan as it
                # stood only where none does.
                about = (broken.index,) if broken.index is not None else broken.involved
                fields = sorted({changed_by[pairs[n]] for n in about if pairs[n] in changed_by})
                for field in [f"changes.{n}" for n in fields] or ["plan"]:
                    errors.setdefault(field, []).append(broken.message)
            raise RuleBroken(
                "The edited plan breaks a rule of matching; nothing was changed.",
                slug="plan-breaks-a-rule",
                errors=errors,
            ) from None
        edits = [
            *matching_run.plan.get("edits", []),
            {
                "by": None if edited_by is None else str(edited_by),
                "at": utcnow().isoformat(),
                "changes": [
                    {
                        "pledge_line_id": str(c["pledge_line_id"]),
                        "need_line_id": str(c["need_line_id"]),
                        "quantity": int(c["quantity"]),
                    }
                    for c in changes
                ],
            },
        ]
        matching_run.plan = {**plan_document(plan, supply), "edits": edits}
        matching_run.stats = {
            **matching_run.stats,
            "items": per_item_totals(supply, demand, plan),
            "edited": len(edits),
        }
        return matching_run


# Debounced runs on events ----------------------------------------------------------------------


def request_matching(session: Session, item: str) -> None:
    """Note that ``item``'s supply or demand changed; a run is queued after the commit."""
    session.info.setdefault(_PENDING_KEY, set()).add(item)


def run_on_its_way(now: datetime, debounce: float) -> Any:
    """The condition, on a lock row, that a run of its item was requested a moment ago
    (less than a minute past the debounce) and none has started since."""
    return _on_its_way(_stale(now, debounce))


def _stale(now: datetime, debounce: float) -> datetime:
    """Requests made before this count as lost (a minute past the debounce)."""
    return now - timedelta(seconds=60 + debounce)


def _on_its_way(stale: Any) -> Any:
    """:func:`run_on_its_way`, for requests made after ``stale`` (a value or a bound
    parameter)."""
    return (
        MatchingLock.requested_at.is_not(None)
        & (MatchingLock.requested_at > stale)
        & (
            MatchingLock.last_started_at.is_(None)
            | (MatchingLock.requested_at > MatchingLock.last_started_at)
        )
    )


def run_delay(now: datetime, last_started: datetime | None, debounce: float) -> float:
    """Seconds a requested run of an item waits: runs started by changes begin at least
    ``debounce`` apart, so a change after a quiet spell is matched at once, and the
    changes of a burst gather into one run due ``debounce`` after the last one began
    (rather than ``debounce`` after the first change that missed it)."""
    if last_started is None:
        return 0.0
    since = (now - last_started).total_seconds()
    return min(debounce, max(0.0, debounce - since))


def install_debounce(rt: ServiceRuntime) -> None:
    """Debounce the matching requests of each transaction (:func:`request_matching`).

    A run is on its way when one was requested a moment ago and none has started
    since; a change joins it, since the run reads what is committed when it starts. A
    request older than a minute past the debounce counts as lost (a worker that died
    holding the task) and is made again.

    Most changes find a run on their way. They learn it in their own transaction, just
    before it commits, holding the item's lock row in share mode: no run can start
    (take the row) until they have committed, and they do not wait for each other.
    A change that finds no run on its way asks for one after its commit, by a
    conditional update in a transaction of its own, then queues it to start once the
    debounce has passed since the item's last run began (:func:`run_delay`)."""
    from sqlalchemy import event

    def waiting(now: datetime) -> Any:
        return run_on_its_way(now, rt.settings.matching_debounce)

    def before_commit(session: Session) -> None:
        if session.in_nested_transaction():
            return
        items = session.info.get(_PENDING_KEY)
        if not items:
            return
        wanted = sorted(items)
        joined = shared_lock_rows(session, wanted, utcnow(), rt.settings.matching_debounce)
        session.info[_PENDING_KEY] = {item for item in wanted if item not in joined}

    def after_commit(session: Session) -> None:
        if session.in_nested_transaction():
            # A savepoint released: wait for the real commit (a spurious run after a
            # rolled-back savepoint costs one matching run, nothing more).
            return
        items = session.info.pop(_PENDING_KEY, None)
        if not items:
            return
        now = utcnow()
        due: list[str] = []
        delays: dict[str, float] = {}
        sent: list[str] = []
        try:
            with rt.unit_of_work() as s:
                bookkeeping(s)
                for item in sorted(items):
                    requested = s.execute(
                        update(MatchingLock)
                        .where(MatchingLock.item == item, ~waiting(now))
                        .values(requested_at=now)
                        .returning(MatchingLock.last_started_at)
                    ).first()
                    if requested is not None:
                        due.append(item)
                        delays[item] = run_delay(
                            now, requested.last_started_at, rt.settings.matching_debounce
                        )
            for item in due:
                rt.celery.send_task(
                    "dispatch.match_item",
                    args=[item],
                    queue="dispatch",
                    countdown=delays[item],
                )
                sent.append(item)
        except Exception:
            # The scheduled run will pick the item up.
            log.exception("could not queue matching of %s", sorted(items))
            _withdraw_requests(rt, [item for item in due if item not in sent], now)

    def after_rollback(session: Session, previous: Any) -> None:
        if previous.parent is None:
            session.info.pop(_PENDING_KEY, None)

    event.listen(rt.session_factory, "before_commit", before_commit)
    event.listen(rt.session_factory, "after_commit", after_commit)
    event.listen(rt.session_factory, "after_soft_rollback", after_rollback)


# The lock rows of the items a change asks matching for, held in share mode, each with
# whether a run is on its way (``run_on_its_way``, with the moment as parameters): read
# before every commit of a supply or need change, so built once.
_HELD = (
    select(MatchingLock.item, _on_its_way(bindparam("stale")))
    .where(MatchingLock.item.in_(bindparam("items", expanding=True)))
    .order_by(MatchingLock.item)
    .with_for_update(read=True)
)


def shared_lock_rows(
    session: Session, items: list[str], now: datetime, debounce: float
) -> set[str]:
    """Make the lock rows of ``items`` that are missing (without conflicting with
    another transaction making them too), hold them all in share mode (in item order)
    until ``session`` commits, and return the items with a run on its way at ``now``
    (:func:`run_on_its_way`)."""
    stale = _stale(now, debounce)

    def held() -> dict[str, bool]:
        return {
            item: bool(on_its_way)
            for item, on_its_way in session.execute(_HELD, {"stale": stale, "items": items})
        }

    rows = held()
    if len(rows) < len(items):
        _add_lock_rows(session, [item for item in items if item not in rows])
        rows = held()
    return {item for item, on_its_way in rows.items() if on_its_way}


def _withdraw_requests(rt: ServiceRuntime, items: list[str], requested_at: datetime) -> None:
    """Take back the requests whose run could not be queued, so that the next change
    queues one instead of waiting for it."""
    if not items:
        return
    try:
        with rt.unit_of_work() as s:
            bookkeeping(s).execute(
                update(MatchingLock)
                .where(MatchingLock.item.in_(items), MatchingLock.requested_at == requested_at)
                .values(requested_at=None)
            )
    except Exception:
        log.exception("could not withdraw the matching requests of %s", items)
