"""A matching plan becomes proposals in one pass: each allocation is checked against
what the ones before it took, and refused with the reason a conditional UPDATE per
allocation would have given. The reservations that come back are taken in one pass
too, and planned on shipments together."""

from __future__ import annotations

import logging
import sys
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from services.dispatch.allocations import service as saga
from services.dispatch.matching import service as matching_service
from services.dispatch.matching.api import RunSchema
from services.dispatch.models import Allocation, MatchingRun, Need, NeedLine, Shipment, SupplyLine
from services.dispatch.needs import service as needs
from shared.bulk import BUSY_SWITCH_INTERVAL
from shared.db import utcnow
from shared.events import Event, new_event
from shared.inbox import Outcome
from shared.observability import correlation_id_var
from tests.support.stack import Stack
from tests.support.world import supply_line as _supply


def _need(session: Any, outbox: Any, *quantities: int, org_id: uuid.UUID | None = None) -> Need:
    return needs.create_need(
        session,
        outbox,
        org_id=org_id or uuid.uuid4(),
        org_verified=True,
        data={
            "lines": [
                {"item": "mask", "quantity": str(q), "unit": "piece", "urgency": "high"}
                for q in quantities
            ],
            "location": {"region": "420103", "address": "ward 3"},
        },
    )


def _propose(rt: Any, way: str, plan: list[saga.Proposal], run_id: uuid.UUID) -> list[Any]:
    """``plan`` proposed under lock (``locked``), or read and counted before the write
    transaction and written in bulk (``planned``), as a matching run does."""
    if way == "locked":
        with rt.unit_of_work() as session:
            return saga.propose_many(session, rt.outbox, plan, run_id=run_id)
    assert rt.read_session_factory is not None
    with rt.read_session_factory() as reading:
        [planned] = saga.plan_proposals(reading, rt.outbox, plan, run_id=run_id)
    with rt.unit_of_work() as session:
        results = saga.write_planned(session, rt.outbox, planned)
    assert results is not None, "nothing changed between the count and the write"
    return results


@pytest.mark.parametrize("way", ["locked", "planned"])
def test_a_plan_is_proposed_in_order_and_what_no_longer_fits_is_refused(
    stack: Stack, way: str
) -> None:
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        small = _supply(session, 15)
        large = _supply(session, 100)
        first = _need(session, rt.outbox, 10)
        second = _need(session, rt.outbox, 10)
        two_lines = _need(session, rt.outbox, 10, 3)
        cancelled = _need(session, rt.outbox, 5)
        ids = {
            "first": first.lines[0].id,
            "second": second.lines[0].id,
            "two_lines": two_lines.lines[0].id,
            "other_line": two_lines.lines[1].id,
            "cancelled": cancelled.lines[0].id,
            "two_lines_need": two_lines.id,
        }
        cancelled_id = cancelled.id
    with rt.unit_of_work() as session:
        session.execute(update(Need).where(Need.id == cancelled_id).values(status="cancelled"))
        session.execute(
            update(NeedLine).where(NeedLine.need_id == cancelled_id).values(status="cancelled")
        )

    def p(supply: uuid.UUID, need_line: uuid.UUID, quantity: int) -> saga.Proposal:
        return saga.Proposal(supply, need_line, quantity, {"tier": 1})

    plan = [
        p(small, ids["first"], 10),
        p(small, ids["second"], 10),  # 5 left on the small line
        p(small, ids["second"], 5),
        p(large, ids["first"], 1),  # the first need is allocated by now
        p(large, ids["cancelled"], 5),
        p(large, uuid.uuid4(), 5),
        p(large, ids["two_lines"], 4),
        p(large, ids["two_lines"], 7),  # 6 left on that line
        p(large, ids["other_line"], 3),
    ]
    run_id = uuid.uuid4()
    with rt.session_factory() as session:
        versions = {n: v for n, v in session.execute(select(Need.id, Need.version))}
    results = _propose(rt, way, plan, run_id)
    made = [r.allocation.id if r.allocation else None for r in results]

    assert [r.refused for r in results] == [
        None,
        "the pledge line no longer has enough",
        None,
        "the need is allocated",
        "the need is cancelled",
        "the line no longer exists",
        None,
        "the need line is already covered",
        None,
    ]
    with rt.session_factory() as session:
        allocations = {
            a.id: a for a in session.scalars(select(Allocation).where(Allocation.run_id == run_id))
        }
        assert set(allocations) == {m for m in made if m is not None}
        assert sorted((a.need_line_id, a.quantity) for a in allocations.values()) == sorted(
            [(ids["first"], 10), (ids["second"], 5), (ids["two_lines"], 4), (ids["other_line"], 3)]
        )
        assert all(a.status == "proposed" and a.reason == {"tier": 1} for a in allocations.values())
        assert all(a.run_id == run_id and a.version == 1 for a in allocations.values())
        assert all(a.donor_anonymous is False for a in allocations.values())
        assert all(a.created_at.tzinfo is not None for a in allocations.values())
        assert all(
            abs(a.created_at - utcnow()) < timedelta(minutes=1) for a in allocations.values()
        )
        # A need whose status moved has a new version (its ETag); the others keep theirs.
        now_versions = {n: v for n, v in session.execute(select(Need.id, Need.version))}
        moved = {need for need in versions if now_versions[need] != versions[need]}
        assert ids["two_lines_need"] in moved and cancelled_id not in moved
        assert all(now_versions[need] == versions[need] + 1 for need in moved)
        lines = {line.id: line for line in session.scalars(select(NeedLine))}
        assert (lines[ids["first"]].proposed, lines[ids["first"]].status) == (10, "allocated")
        assert (lines[ids["second"]].proposed, lines[ids["second"]].status) == (
            5,
            "partially_allocated",
        )
        assert lines[ids["other_line"]].status == "allocated"
        assert session.get(Need, ids["two_lines_need"]).status == "partially_allocated"  # type: ignore[union-attr]
        assert lines[ids["cancelled"]].proposed == 0
        supply = {s.id: s.proposed for s in session.scalars(select(SupplyLine))}
        assert supply == {small: 15, large: 7}
        # One event (version 2) for the four, an aggregate of its own, which every
        # consumer takes in.
        events = _proposed_events(session, rt)
        assert [(e.version, len(e.payload["allocations"])) for e in events] == [(2, 4)]
        assert events[0].aggregate_id not in {str(a) for a in allocations}
        announced = _announced(session, rt)
        assert {uuid.UUID(a["allocation_id"]) for a in announced} == set(allocations)


@pytest.mark.parametrize("way", ["locked", "planned"])
def test_a_plan_refused_whole_changes_nothing(stack: Stack, way: str) -> None:
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        supply = _supply(session, 5)
        need_line = _need(session, rt.outbox, 10).lines[0].id
    [result] = _propose(rt, way, [saga.Proposal(supply, need_line, 6, {})], uuid.uuid4())
    assert result.refused == "the pledge line no longer has enough"
    with rt.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Allocation)) == 0
        line = session.get(NeedLine, need_line)
        assert line is not None and (line.proposed, line.status) == (0, "open")


def test_a_plan_counted_before_its_write_is_written_only_if_nothing_changed_since(
    stack: Stack,
) -> None:
    """Another writer between a run's count and its write: the write changes nothing and
    says so, and the plan proposed again under lock refuses what no longer fits."""
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        supply = _supply(session, 10)
        need = _need(session, rt.outbox, 8, 4)
        first, second = (line.id for line in need.lines)
        need_id = need.id
    plan = [saga.Proposal(supply, first, 6, {}), saga.Proposal(supply, second, 4, {})]
    assert rt.read_session_factory is not None
    with rt.read_session_factory() as reading:
        [planned] = saga.plan_proposals(reading, rt.outbox, plan, run_id=None)
    assert [r.refused for r in planned.results] == [None, None]
    # Meanwhile another proposal takes 3 of the second line, and of the supply.
    with rt.unit_of_work() as session:
        [taken] = saga.propose_many(
            session, rt.outbox, [saga.Proposal(supply, second, 3, {})], run_id=None
        )
    assert taken.allocation is not None
    with rt.unit_of_work() as session:
        assert saga.write_planned(session, rt.outbox, planned) is None
        results = saga.propose_many(session, rt.outbox, plan, run_id=None)
    assert [r.refused for r in results] == [None, "the need line is already covered"]
    with rt.session_factory() as session:
        lines = {line.id: line for line in session.scalars(select(NeedLine))}
        assert (lines[first].proposed, lines[second].proposed) == (6, 3)
        assert session.get(Need, need_id).status == "partially_allocated"  # type: ignore[union-attr]
        assert session.get(SupplyLine, supply).proposed == 9  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(Allocation)) == 2
        assert len(_announced(session, rt)) == 2


def _meanwhile_another_line_of_the_need_is_proposed(rt: Any, ids: dict[str, Any]) -> None:
    with rt.unit_of_work() as session:
        [taken] = saga.propose_many(
            session, rt.outbox, [saga.Proposal(ids["elsewhere"], ids["other"], 4, {})], run_id=None
        )
    assert taken.allocation is not None
    with rt.session_factory() as session:
        # The need's status did not move (it has an open line still), nor its version:
        # only the other line tells the change.
        assert session.get(Need, ids["need"]).version == ids["version"]


def _meanwhile_the_need_gets_a_new_version(rt: Any, ids: dict[str, Any]) -> None:
    with rt.unit_of_work() as session:
        need = session.get(Need, ids["need"])
        assert need is not None
        need.updated_at = utcnow()  # as an edit's announcement does; the version moves


def _meanwhile_the_donor_asks_not_to_be_named(rt: Any, ids: dict[str, Any]) -> None:
    with rt.unit_of_work() as session:
        session.execute(
            update(SupplyLine).where(SupplyLine.id == ids["supply"]).values(anonymous=True)
        )


def _plan(reading: Any, rt: Any, plan: list[saga.Proposal], read: str) -> Any:
    """``plan`` counted on rows read for it (``own``), or on the rows a matching run
    read for the matcher (``run``), as a run applying its plan does."""
    if read == "own":
        [planned] = saga.plan_proposals(reading, rt.outbox, plan, run_id=None)
        return planned
    inputs = matching_service.read_inputs(reading, ["mask"])
    assert inputs.rows.covers(plan)
    [planned] = saga.plan_proposals(reading, rt.outbox, plan, run_id=None, read=inputs.rows)
    return planned


def _meanwhile_the_donor_restricts_the_pledge(rt: Any, ids: dict[str, Any]) -> None:
    # As a pledge's new version arrives from donations: here, a region restriction the
    # need's region no longer meets.
    with rt.unit_of_work() as session:
        session.execute(
            update(SupplyLine)
            .where(SupplyLine.id == ids["supply"])
            .values(
                pledge_version=SupplyLine.pledge_version + 1,
                restrictions={"regions": ["4403"]},
            )
        )


@pytest.mark.parametrize("read", ["own", "run"])
@pytest.mark.parametrize(
    "meanwhile",
    [
        _meanwhile_another_line_of_the_need_is_proposed,
        _meanwhile_the_need_gets_a_new_version,
        _meanwhile_the_donor_asks_not_to_be_named,
        _meanwhile_the_donor_restricts_the_pledge,
    ],
)
def test_a_change_to_what_a_plan_only_read_stops_its_write(
    stack: Stack, meanwhile: Any, read: str
) -> None:
    """Not the lines a plan proposes to, but what its count read besides: another line
    of the same need (the need's status is made of both), the need itself, the pledge's
    anonymity (its allocations copy it); whether the count read its rows itself or took
    those the run read for the matcher."""
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        supply = _supply(session, 10)
        need = _need(session, rt.outbox, 5, 5)
        ids: dict[str, Any] = {"supply": supply, "need": need.id, "line": need.lines[0].id}
        ids["elsewhere"] = _supply(session, 10)  # another donor's, not in the plan
        ids["other"] = need.lines[1].id
    with rt.unit_of_work() as session:
        # Partly allocated already: a line of it is proposed 1 of its 5.
        saga.propose_many(
            session, rt.outbox, [saga.Proposal(supply, ids["other"], 1, {})], run_id=None
        )
    with rt.session_factory() as session:
        found = session.get(Need, ids["need"])
        assert found is not None and found.status == "partially_allocated"
        ids["version"] = found.version
    plan = [saga.Proposal(supply, ids["line"], 5, {})]
    assert rt.read_session_factory is not None
    with rt.read_session_factory() as reading:
        planned = _plan(reading, rt, plan, read)
    meanwhile(rt, ids)
    with rt.unit_of_work() as session:
        assert saga.write_planned(session, rt.outbox, planned) is None
        [result] = saga.propose_many(session, rt.outbox, plan, run_id=None)
    assert result.allocation is not None
    with rt.session_factory() as session:
        made = session.get(Allocation, result.allocation.id)
        assert made is not None
        anonymous = session.get(SupplyLine, supply).anonymous  # type: ignore[union-attr]
        assert made.donor_anonymous is bool(anonymous)
        assert session.get(Need, ids["need"]).status == (  # type: ignore[union-attr]
            "allocated"
            if meanwhile is _meanwhile_another_line_of_the_need_is_proposed
            else "partially_allocated"
        )
        # Written once: by the locked path, not also by the bulk one.
        assert (
            session.scalar(
                select(func.count())
                .select_from(Allocation)
                .where(Allocation.need_line_id == ids["line"])
            )
            == 1
        )


def test_a_run_counts_its_plan_on_the_rows_it_read_for_the_matcher(stack: Stack) -> None:
    """The rows a run read for the matcher serve its count: no line or need is read
    again, and the write is what counting on rows read afresh would write."""
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        supply = _supply(session, 10)
        need = _need(session, rt.outbox, 5, 4, 3)
        first, second, third = (line.id for line in need.lines)
        need_id = need.id
        # The third line is covered already: it is read all the same (the need's
        # status is made of it too).
        saga.propose_many(session, rt.outbox, [saga.Proposal(supply, third, 3, {})], run_id=None)
    plan = [saga.Proposal(supply, first, 5, {}), saga.Proposal(supply, second, 2, {})]
    statements: list[str] = []
    assert rt.read_session_factory is not None
    with rt.read_session_factory() as reading:
        inputs = matching_service.read_inputs(reading, ["mask"])
        assert [line.id for line in inputs.rows.lines_of[need_id]] == sorted([first, second, third])
        engine = reading.get_bind()
        listen = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listen)
        try:
            [planned] = saga.plan_proposals(reading, rt.outbox, plan, run_id=None, read=inputs.rows)
        finally:
            event.remove(engine, "before_cursor_execute", listen)
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert [r.refused for r in planned.results] == [None, None]
    with rt.unit_of_work() as session:
        assert saga.write_planned(session, rt.outbox, planned) is not None
    with rt.session_factory() as session:
        lines = {line.id: line for line in session.scalars(select(NeedLine))}
        assert [(lines[i].proposed, lines[i].status) for i in (first, second, third)] == [
            (5, "allocated"),
            (2, "partially_allocated"),
            (3, "allocated"),
        ]
        assert session.get(Need, need_id).status == "partially_allocated"  # type: ignore[union-attr]
        assert session.get(SupplyLine, supply).proposed == 10  # type: ignore[union-attr]


def test_a_run_whose_plan_names_rows_it_did_not_read_reads_them(stack: Stack) -> None:
    """A plan naming a line the run's read did not hold (an edited preview, say) is
    counted on rows read afresh: the refusal is the one the line earns, not "no longer
    exists"."""
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        supply = _supply(session, 10)
        need = _need(session, rt.outbox, 5)
        line = need.lines[0].id
    assert rt.read_session_factory is not None
    with rt.read_session_factory() as reading:
        inputs = matching_service.read_inputs(reading, ["gloves_exam"])
        plan = [saga.Proposal(supply, line, 5, {})]
        assert not inputs.rows.covers(plan)
        [planned] = saga.plan_proposals(reading, rt.outbox, plan, run_id=None, read=inputs.rows)
    assert [r.refused for r in planned.results] == [None]


def _slice_of(planned: saga.PlannedProposals, lines: dict[uuid.UUID, Any]) -> set[Any]:
    return {lines[p.need_line_id] for p in planned.proposals}


def test_a_plan_in_slices_of_whole_needs_is_written_slice_by_slice(stack: Stack) -> None:
    """Slices hold whole needs; each expects of a pledge line what the slices before it
    left, so they write in turn, and a slice whose predecessor was not written (a crash
    between two transactions) writes nothing."""
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        supply = _supply(session, 100)
        needs_made = [_need(session, rt.outbox, 10, 5) for _ in range(3)]
        need_of = {line.id: need.id for need in needs_made for line in need.lines}
        order = [line.id for need in needs_made for line in need.lines]
    # The plan's order mixes the needs: a slice keeps a need's proposals together.
    mixed = [order[0], order[2], order[4], order[1], order[3], order[5]]
    plan = [saga.Proposal(supply, line, 5, {}) for line in mixed]
    assert rt.read_session_factory is not None
    with rt.read_session_factory() as reading:
        slices = saga.plan_proposals(reading, rt.outbox, plan, run_id=None, slice_size=2)
    assert [len(each.proposals) for each in slices] == [2, 2, 2]
    assert [each.indexes for each in slices] == [(0, 3), (1, 4), (2, 5)]
    assert [len(_slice_of(each, need_of)) for each in slices] == [1, 1, 1]
    assert all(r.refused is None for each in slices for r in each.results)
    # The second slice cannot be written before the first: it expects 10 proposed.
    with rt.unit_of_work() as session:
        assert saga.write_planned(session, rt.outbox, slices[1]) is None
    for each in slices:
        with rt.unit_of_work() as session:
            assert saga.write_planned(session, rt.outbox, each) is not None
    with rt.session_factory() as session:
        assert session.get(SupplyLine, supply).proposed == 30  # type: ignore[union-attr]
        assert session.scalar(select(func.count()).select_from(Allocation)) == 6
        statuses = {n.id: n.status for n in session.scalars(select(Need))}
        assert set(statuses.values()) == {"partially_allocated"}


def _proposed_events(session: Any, rt: Any) -> list[Event]:
    """The ``allocation.proposed`` events in the outbox, as a consumer reads them."""
    outbox = rt.outbox.row_class
    messages = session.scalars(
        select(outbox.message)
        .where(outbox.type == "allocation.proposed")
        .order_by(outbox.created_at, outbox.id)
    ).all()
    return [Event.from_message(message) for message in messages]


def _announced(session: Any, rt: Any) -> list[dict[str, Any]]:
    """Every allocation the outbox's ``allocation.proposed`` events carry."""
    return [a for e in _proposed_events(session, rt) for a in e.payload["allocations"]]


def _verified(session: Any, kind: str) -> uuid.UUID:
    from services.dispatch.models import Organisation

    org_id = uuid.uuid4()
    session.add(
        Organisation(
            id=org_id,
            name=f"{kind} {org_id.hex[:6]}",
            kind=kind,
            region="420103",
            status="verified",
            source_version=1,
        )
    )
    return org_id


def _five_needs_in_slices_of_two(rt: Any, monkeypatch: pytest.MonkeyPatch) -> uuid.UUID:
    """A hospital's five needs of 8 masks, a donor's pledge line of 40 (its id), and
    plans written two proposals a slice."""
    monkeypatch.setattr(matching_service, "WRITE_SLICE", 2)
    with rt.unit_of_work() as session:
        donor = _verified(session, "foundation")
        hospital = _verified(session, "hospital")
        supply = _supply(session, 40, donor)
        for _ in range(5):
            _need(session, rt.outbox, 8, org_id=hospital)
    return supply


@pytest.mark.parametrize("way", ["run", "approval"])
def test_a_large_plan_is_written_in_slices_and_its_row_counts_them_all(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """A plan larger than a slice, applied by its run or by a coordinator approving its
    preview, is written a slice per transaction (on SQLite a need posted meanwhile
    waits for one slice, not the whole plan); its row adds up what every slice
    proposed. A pledge line changed between two slices sends the slices after it to
    the locking path, which refuses what no longer fits."""
    rt = stack.runtime("dispatch")
    supply = _five_needs_in_slices_of_two(rt, monkeypatch)
    writes: list[Any] = []
    write_planned = saga.write_planned

    def counting(session: Any, outbox: Any, planned: saga.PlannedProposals) -> Any:
        writes.append(planned)
        if len(writes) == 2:
            # After the first slice, before the second writes: 10 of the pledge line
            # are taken (in the slice's own transaction, as SQLite's one writer allows).
            session.execute(
                update(SupplyLine)
                .where(SupplyLine.id == supply)
                .values(reserved=SupplyLine.reserved + 10)
            )
        return write_planned(session, outbox, planned)

    monkeypatch.setattr(saga, "write_planned", counting)
    if way == "run":
        run = matching_service.run(rt, items=["mask"], dry_run=False, trigger="manual")
    else:
        preview = matching_service.run(rt, items=["mask"], dry_run=True, trigger="manual")
        assert preview is not None and preview.status == "preview" and not writes
        run = matching_service.approve(rt, preview.id, None)
    assert run is not None and run.status == "applied"
    # The run as answered to the coordinator who asked for it, its plan and all.
    shown = RunSchema().dump(run)
    assert len(shown["allocations"]) == 5
    with rt.session_factory() as session:
        made = session.scalar(select(func.count()).select_from(Allocation)) or 0
        proposed = session.get(SupplyLine, supply).proposed  # type: ignore[union-attr]
        found = session.get(type(run), run.id)
        assert found is not None
        stats = found.stats
    # What the caller was given is what the run's row says once every slice is written.
    assert shown["stats"] == stats
    assert len(writes) == 3  # 5 needs, 2 a slice
    # 40 pledged, 10 taken meanwhile: 30 left for 5 needs of 8.
    assert (made, proposed) == (3, 24)
    assert stats["proposed"] == 3
    assert [r["refused"] for r in stats["refused"]] == ["the pledge line no longer has enough"] * 2


def test_on_sqlite_a_run_writes_smaller_slices(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's one write lock is held by each slice, and every writer waits for it: a
    run there writes slices of ``SQLITE_WRITE_SLICE`` proposals (when smaller than
    ``WRITE_SLICE``), PostgreSQL's of ``WRITE_SLICE``."""
    rt = stack.runtime("dispatch")
    _five_needs_in_slices_of_two(rt, monkeypatch)
    monkeypatch.setattr(matching_service, "WRITE_SLICE", 4)
    monkeypatch.setattr(matching_service, "SQLITE_WRITE_SLICE", 2)
    writes: list[int] = []
    write_planned = saga.write_planned

    def counting(session: Any, outbox: Any, planned: saga.PlannedProposals) -> Any:
        writes.append(len(planned.proposals))
        return write_planned(session, outbox, planned)

    monkeypatch.setattr(saga, "write_planned", counting)
    run = matching_service.run(rt, items=["mask"], dry_run=False, trigger="manual")
    assert run is not None and run.status == "applied"
    on_sqlite = rt.engine.dialect.name == "sqlite"
    assert writes == ([2, 2, 1] if on_sqlite else [4, 1])


def test_a_run_that_stops_between_two_slices_leaves_whole_slices_and_says_so(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose process fails after its first slice committed (a crash, a lost
    database): what is written is whole (each allocation counted on its need and pledge
    lines, its event in the outbox), the run's row says how much it proposed, its items
    are free for the next run, which matches the needs left."""
    rt = stack.runtime("dispatch")
    supply = _five_needs_in_slices_of_two(rt, monkeypatch)
    write_planned = saga.write_planned
    calls: list[int] = []

    def failing(session: Any, outbox: Any, planned: saga.PlannedProposals) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the worker died")
        return write_planned(session, outbox, planned)

    monkeypatch.setattr(saga, "write_planned", failing)
    with pytest.raises(RuntimeError):
        matching_service.run(rt, items=["mask"], dry_run=False, trigger="manual")

    def written() -> tuple[int, int, int, dict[str, Any]]:
        with rt.session_factory() as session:
            allocations = list(session.scalars(select(Allocation)))
            lines = list(session.scalars(select(NeedLine)))
            assert sum(a.quantity for a in allocations) == sum(line.proposed for line in lines)
            pledged = session.get(SupplyLine, supply)
            assert pledged is not None
            assert pledged.proposed == sum(a.quantity for a in allocations)
            announced = len(_announced(session, rt))
            [row] = session.scalars(select(MatchingRun))
            return len(allocations), pledged.proposed, announced, row.stats

    made, proposed, announced, stats = written()
    assert (made, proposed, announced) == (2, 16, 2)
    assert stats["proposed"] == 2
    monkeypatch.setattr(saga, "write_planned", write_planned)
    again = matching_service.run(rt, items=["mask"], dry_run=False, trigger="event")
    assert again is not None and again.stats["proposed"] == 3
    with rt.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Allocation)) == 5
        assert session.get(SupplyLine, supply).proposed == 40  # type: ignore[union-attr]


@pytest.mark.parametrize("way", ["run", "approval"])
def test_a_plan_s_next_slices_are_counted_beside_its_writes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """A plan of several slices is counted slice after slice, in the plan's order, by
    a thread other than the run's, while the run writes the slices counted already:
    the first slice's write waits here until the second is counted, which could not
    happen if the counting came after the writes."""
    rt = stack.runtime("dispatch")
    _five_needs_in_slices_of_two(rt, monkeypatch)
    counted: list[tuple[int, tuple[int, ...]]] = []
    intervals: list[float] = []
    was = sys.getswitchinterval()
    second_counted = threading.Event()
    plan_slice, write_planned = saga._plan_slice, saga.write_planned

    def counting(*args: Any) -> saga.PlannedProposals:
        planned = plan_slice(*args)
        counted.append((threading.get_ident(), planned.indexes))
        intervals.append(sys.getswitchinterval())
        if len(counted) == 2:
            second_counted.set()
        return planned

    overlapped: list[bool] = []

    def writing(session: Any, outbox: Any, planned: saga.PlannedProposals) -> Any:
        if not overlapped:
            overlapped.append(second_counted.wait(timeout=20))
        return write_planned(session, outbox, planned)

    monkeypatch.setattr(saga, "_plan_slice", counting)
    monkeypatch.setattr(saga, "write_planned", writing)
    story = correlation_id_var.set(f"story-{way}")
    try:
        if way == "run":
            run = matching_service.run(rt, items=["mask"], dry_run=False, trigger="manual")
        else:
            preview = matching_service.run(rt, items=["mask"], dry_run=True, trigger="manual")
            assert preview is not None
            run = matching_service.approve(rt, preview.id, None)
    finally:
        correlation_id_var.reset(story)
    assert run is not None and run.stats["proposed"] == 5
    assert overlapped == [True]
    # Counted in the run's context: every slice's events tell the run's story.
    with rt.session_factory() as session:
        assert {e.correlation_id for e in _proposed_events(session, rt)} == {f"story-{way}"}
    [counter] = {thread for thread, _ in counted}
    places = [n for _, indexes in counted for n in indexes]
    assert places == sorted(places) and len(places) == 5
    assert counter != threading.get_ident()
    # The GIL changed hands often meanwhile (shared.bulk.switching_often).
    assert intervals == [pytest.approx(BUSY_SWITCH_INTERVAL)] * 3
    # Nothing of the run's is left behind: its counting thread has ended, the
    # interval is the process's again.
    assert not [t for t in threading.enumerate() if t.name.startswith("matching-count")]
    assert sys.getswitchinterval() == was


def test_a_slice_that_fails_to_be_counted_fails_the_run_after_the_slices_before_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slice whose counting fails (here: an error of its own) fails the run, and
    nothing after it is written; the slices written before it (counted beside the
    writes) stay whole and the run's row says so."""
    rt = stack.runtime("dispatch")
    supply = _five_needs_in_slices_of_two(rt, monkeypatch)
    plan_slice = saga._plan_slice
    calls: list[int] = []

    def counting(*args: Any) -> saga.PlannedProposals:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("counting failed")
        return plan_slice(*args)

    monkeypatch.setattr(saga, "_plan_slice", counting)
    with pytest.raises(RuntimeError, match="counting failed"):
        matching_service.run(rt, items=["mask"], dry_run=False, trigger="manual")
    # The thread may have counted the third slice meanwhile; it is never written.
    assert len(calls) in (2, 3)
    with rt.session_factory() as session:
        allocations = list(session.scalars(select(Allocation)))
        rows = list(session.scalars(select(MatchingRun)))
        pledged = session.get(SupplyLine, supply)
        assert pledged is not None
        assert len(allocations) == 2 and pledged.proposed == 16
        assert [row.stats["proposed"] for row in rows] == [2]
    assert not [t for t in threading.enumerate() if t.name.startswith("matching-count")]


def test_a_plan_s_allocations_are_announced_a_few_hundred_an_event_in_the_plan_s_order(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``allocation.proposed`` (version 2) carries up to ``PROPOSALS_PER_EVENT``
    allocations (2 here): five proposals of one transaction are three events, in the
    order proposed, each an aggregate of its own."""
    rt = stack.runtime("dispatch")
    monkeypatch.setattr(saga, "PROPOSALS_PER_EVENT", 2)
    with rt.unit_of_work() as session:
        supply = _supply(session, 40)
        lines = [_need(session, rt.outbox, 8).lines[0].id for _ in range(5)]
    plan = [saga.Proposal(supply, line, 8, {}) for line in lines]
    with rt.unit_of_work() as session:
        results = saga.propose_many(session, rt.outbox, plan, run_id=None)
    with rt.session_factory() as session:
        events = _proposed_events(session, rt)
    # The events of one commit share its moment: put in the order of what they carry.
    order = [str(line) for line in lines]
    events.sort(key=lambda e: order.index(e.payload["allocations"][0]["need_line_id"]))
    assert [len(e.payload["allocations"]) for e in events] == [2, 2, 1]
    assert [a["need_line_id"] for e in events for a in e.payload["allocations"]] == order
    assert [a["allocation_id"] for e in events for a in e.payload["allocations"]] == [
        str(r.allocation.id) for r in results if r.allocation is not None
    ]
    assert len({e.aggregate_id for e in events}) == 3
    assert {(e.version, e.aggregate_version) for e in events} == {(2, 1)}


def test_a_run_of_one_item_counts_every_line_of_the_needs_it_touches(stack: Stack) -> None:
    """A need of masks and gloves, matched for masks alone, stays partly allocated (its
    gloves line is open) and its gloves are matched by the gloves' run."""
    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        donor = _verified(session, "foundation")
        hospital = _verified(session, "hospital")
        masks = _supply(session, 40, donor)
        gloves = _supply(session, 40, donor)
        session.execute(
            update(SupplyLine).where(SupplyLine.id == gloves).values(item="gloves_exam")
        )
        need = needs.create_need(
            session,
            rt.outbox,
            org_id=hospital,
            org_verified=True,
            data={
                "lines": [
                    {"item": "mask", "quantity": "5", "unit": "piece", "urgency": "high"},
                    {"item": "gloves_exam", "quantity": "7", "unit": "pair", "urgency": "high"},
                ],
                "location": {"region": "420103", "address": "ward 3"},
            },
        )
        need_id = need.id
    matching_service.run(rt, items=["mask"], dry_run=False, trigger="event")
    with rt.session_factory() as session:
        found = session.get(Need, need_id)
        assert found is not None and found.status == "partially_allocated"
        assert {line.item: line.status for line in found.lines} == {
            "mask": "allocated",
            "gloves_exam": "open",
        }
    matching_service.run(rt, items=["gloves_exam"], dry_run=False, trigger="event")
    with rt.session_factory() as session:
        found = session.get(Need, need_id)
        assert found is not None and found.status == "allocated"
        assert session.get(SupplyLine, masks).proposed == 5  # type: ignore[union-attr]
        assert session.get(SupplyLine, gloves).proposed == 7  # type: ignore[union-attr]


def _answer(kind: str, allocation: saga.ProposedAllocation, version: int = 2) -> dict[str, Any]:
    return new_event(
        f"reservation.{kind}",
        {
            "allocation_id": allocation.id,
            "pledge_line_id": allocation.pledge_line_id,
            "quantity": allocation.quantity,
            "available": 0,
            "reason": f"{kind} by the donor",
        },
        producer="donations",
        aggregate_id=allocation.id,
        aggregate_version=version,
    ).to_message()


def _accepted(allocation: saga.ProposedAllocation) -> dict[str, Any]:
    return _answer("accepted", allocation)


def test_refusals_and_releases_taken_together_undo_what_was_proposed_and_reserved(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A run's refusals, or a cancelled pledge's releases, come back together: taken by
    one batch handler each (in dispatch's lock order), with what one by one gave:
    released reservations leave their planned shipments, proposals leave ``proposed``
    on both sides, the needs open again, the ledger in step."""
    from services.dispatch.transparency import totals

    rt = stack.runtime("dispatch")
    donor, hospital, community = (uuid.uuid4() for _ in range(3))
    with rt.unit_of_work() as session:
        masks = _supply(session, 100, donor)
        first = _need(session, rt.outbox, 10, org_id=hospital).lines[0].id
        second = _need(session, rt.outbox, 10, org_id=community).lines[0].id
    with rt.unit_of_work() as session:
        made = saga.propose_many(
            session,
            rt.outbox,
            [
                saga.Proposal(masks, first, 4, {}),
                saga.Proposal(masks, second, 3, {}),
                saga.Proposal(masks, first, 2, {}),
                saga.Proposal(masks, second, 5, {}),
                saga.Proposal(masks, first, 4, {}),
            ],
            run_id=None,
        )
        a1, a2, a3, a4, a5 = (result.allocation for result in made)
        assert a1 and a2 and a3 and a4 and a5
        session.expunge_all()
    handled, _ = rt.inbox.handle_many([_accepted(a1), _accepted(a2)])
    assert [outcome for _, outcome in handled] == [Outcome.APPLIED] * 2
    with rt.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Shipment)) == 2

    with caplog.at_level(logging.WARNING, logger="shared.inbox"):
        # Two reservations and a proposal released; two proposals refused.
        released, again = rt.inbox.handle_many(
            [_answer("released", a1, 3), _answer("released", a2, 3), _answer("released", a3)]
        )
        refused, again_too = rt.inbox.handle_many(
            [_answer("rejected", a4), _answer("rejected", a5)]
        )
    # By the batch handlers, not one by one.
    assert {"reservation.rejected", "reservation.released"} <= set(rt.inbox.batch_handlers)
    assert "refused" not in caplog.text
    assert again == again_too == []
    assert [outcome for _, outcome in released + refused] == [Outcome.APPLIED] * 5

    with rt.session_factory() as session:
        statuses = {a.id: (a.status, a.status_reason) for a in session.scalars(select(Allocation))}
        assert statuses == {
            a1.id: ("cancelled", "released by the donor"),
            a2.id: ("cancelled", "released by the donor"),
            a3.id: ("cancelled", "released by the donor"),
            a4.id: ("rejected", "rejected by the donor"),
            a5.id: ("rejected", "rejected by the donor"),
        }
        lines = {line.id: line for line in session.scalars(select(NeedLine))}
        assert [
            (lines[i].proposed, lines[i].reserved, lines[i].status) for i in (first, second)
        ] == [
            (0, 0, "open"),
            (0, 0, "open"),
        ]
        assert [need.status for need in session.scalars(select(Need))] == ["open", "open"]
        assert session.get_one(SupplyLine, masks).proposed == 0
        # The released reservations left the shipments planned for them.
        assert [len(s.lines) for s in session.scalars(select(Shipment))] == [0, 0]
        assert totals.compare(session) == []


def test_reservations_accepted_together_are_reserved_and_planned_together(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    rt = stack.runtime("dispatch")
    donor, other_donor, hospital, community = (uuid.uuid4() for _ in range(4))
    with rt.unit_of_work() as session:
        masks = _supply(session, 100, donor)
        more_masks = _supply(session, 50, other_donor)
        first = _need(session, rt.outbox, 10, org_id=hospital).lines[0].id
        second = _need(session, rt.outbox, 10, org_id=hospital).lines[0].id
        third = _need(session, rt.outbox, 5, org_id=community).lines[0].id
    with rt.unit_of_work() as session:
        made = saga.propose_many(
            session,
            rt.outbox,
            [
                saga.Proposal(masks, first, 10, {}),
                saga.Proposal(masks, second, 5, {}),
                saga.Proposal(masks, third, 5, {}),
                saga.Proposal(more_masks, second, 5, {}),
            ],
            run_id=None,
        )
        a1, a2, a3, a4 = (result.allocation for result in made)
        assert a1 and a2 and a3 and a4
        session.expunge_all()

    # The first comes back alone: it opens the planned shipment of its route.
    [(_, outcome)], _ = rt.inbox.handle_many([_accepted(a1)])
    assert outcome is Outcome.APPLIED
    # The rest together, with a second acceptance of the first.
    batch = [_accepted(a2), _accepted(a3), _accepted(a4), _accepted(a1)]
    with caplog.at_level(logging.WARNING, logger="shared.inbox"):
        handled, again = rt.inbox.handle_many(batch)
    # Taken by the batch handler, not event by event after it failed.
    assert "refused" not in caplog.text
    assert again == []
    assert [outcome for _, outcome in handled] == [Outcome.APPLIED] * 3 + [Outcome.STALE]

    with rt.session_factory() as session:
        statuses = {a.id: a.status for a in session.scalars(select(Allocation))}
        assert statuses == dict.fromkeys([a1.id, a2.id, a3.id, a4.id], "reserved")
        lines = {line.id: line for line in session.scalars(select(NeedLine))}
        assert [
            (lines[i].proposed, lines[i].reserved, lines[i].status) for i in (first, second)
        ] == [
            (0, 10, "allocated"),
            (0, 10, "allocated"),
        ]
        assert {s.id: s.proposed for s in session.scalars(select(SupplyLine))} == {
            masks: 0,
            more_masks: 0,
        }
        planned = {
            (shipment.donor_org_id, shipment.recipient_org_id): [
                (line.line_no, line.allocation_id) for line in shipment.lines
            ]
            for shipment in session.scalars(select(Shipment))
        }
        assert planned == {
            # The second joined the shipment the first opened, as its line 2.
            (donor, hospital): [(1, a1.id), (2, a2.id)],
            (donor, community): [(1, a3.id)],
            (other_donor, hospital): [(1, a4.id)],
        }
        # Joining moves the shipment's updated_at and its version (its ETag): its lines
        # changed.
        joined = session.scalars(
            select(Shipment).where(
                Shipment.donor_org_id == donor, Shipment.recipient_org_id == hospital
            )
        ).one()
        assert joined.updated_at > joined.created_at
        assert joined.version == 2
        created = session.scalar(
            select(func.count())
            .select_from(rt.outbox.row_class)
            .where(rt.outbox.row_class.type == "shipment.created")
        )
        assert created == 3
        # The first shipment's number, then the two opened together: taken by one
        # statement, in order, none twice.
        numbers = sorted(str(s.tracking_number) for s in session.scalars(select(Shipment)))
        year = numbers[0].split("-")[1]
        assert numbers == [f"AL-{year}-{n:06d}" for n in (1, 2, 3)]


def test_a_run_and_an_approval_work_with_the_garbage_collector_paused_and_relay_alongside(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's read, solve and writes make and drop hundreds of thousands of objects
    without cycles; the collector's full passes over them are held off until it ends."""
    import gc

    from services.dispatch import matching

    rt = stack.runtime("dispatch")
    with rt.unit_of_work() as session:
        _supply(session, 10)
        _need(session, rt.outbox, 5)

    def noting(seen: list[bool], call: Any, what: Any) -> Any:
        """``call``, noting ``what()`` in ``seen`` each time it is called."""

        def noted(*args: Any, **kwargs: Any) -> Any:
            seen.append(what())
            return call(*args, **kwargs)

        return noted

    during: list[bool] = []
    monkeypatch.setattr(matching, "match", noting(during, matching.match, gc.isenabled))
    preview = matching_service.run(rt, items=["mask"], dry_run=True, trigger="manual")
    assert preview is not None and during == [False]
    assert gc.isenabled()
    paused: list[bool] = []
    monkeypatch.setattr(saga, "write_planned", noting(paused, saga.write_planned, gc.isenabled))
    # A thread relays each slice while the next is written, on every backend.
    alongside: list[bool] = []
    relaying = noting(alongside, rt.outbox.relaying_alongside, lambda: True)
    monkeypatch.setattr(rt.outbox, "relaying_alongside", relaying)
    assert matching_service.approve(rt, preview.id, None).status == "applied"
    assert paused == [False]
    assert gc.isenabled()
    assert alongside == [True]
    assert rt.outbox._background is None
