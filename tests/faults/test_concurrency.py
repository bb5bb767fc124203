"""Many at once: matching runs of the same items from several threads and processes,
and many proposals competing for the same pledge lines in two donations workers.
Nothing is over-committed and every proposal gets exactly one answer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from services.dispatch.models import SupplyLine
from services.dispatch.transparency.totals import moves as ledger_moves
from tests.support.faults import Saga, assert_accounted
from tests.support.stack import REPO_ROOT, Stack, eventually

# Matching from a process of its own, as a second dispatch machine would.
MATCHER = """
from services.dispatch.matching import service as matching_service
from services.dispatch.app import create_app
from shared.errors import Conflict

app = create_app()
rt = app.extensions["aidlink"]
applied = busy = 0
with app.app_context():
    for _ in range(4):
        try:
            matching_service.run(rt, items=["mask", "gloves_exam"], dry_run=False, trigger="manual")
            applied += 1
        except Conflict:
            busy += 1
print(applied, busy)
"""


def test_matching_at_once_from_threads_and_processes_never_over_commits(stack: Stack) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    stack.start_worker("dispatch")
    # Two donations workers take competing proposals for the same lines at once.
    stack.start_worker("donations")
    stack.start_worker("donations")
    saga = Saga.begin(stack, donors=1, hospitals=3)
    saga.submit()
    eventually(saga.supply_known, timeout=60)
    # Dispatch's copy of the pledges is stale and three times too generous (from an
    # older version), so it proposes more than exists: donations must refuse the rest.
    pledged = {line["id"]: line["quantity"] for p in saga.pledges for line in p["lines"]}
    # The public ledger follows that copy as the service's own writes keep it.
    with (
        stack.runtime("dispatch").unit_of_work() as session,
        ledger_moves(session, supply_lines=[uuid.UUID(i) for i in pledged]),
    ):
        for line_id, quantity in pledged.items():
            session.execute(
                update(SupplyLine)
                .where(SupplyLine.id == uuid.UUID(line_id))
                .values(quantity=3 * quantity, pledge_version=0)
            )

    env = {**os.environ, **stack.settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    matchers = [
        subprocess.Popen(
            [sys.executable, "-c", MATCHER], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    answers: list[int] = []
    lock = threading.Lock()

    def coordinator_runs() -> None:
        client = stack.client()
        for _ in range(3):
            response = client.post(
                "/api/v1/matching/runs",
                json={"dry_run": False, "items": ["mask", "gloves_exam"]},
                headers=saga.chief.headers,
            )
            with lock:
                answers.append(response.status_code)

    threads = [threading.Thread(target=coordinator_runs) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    outputs = [m.communicate(timeout=120)[0].decode().split() for m in matchers]
    assert all(m.returncode == 0 for m in matchers)

    # Each run was applied or refused as busy, never half-done.
    assert set(answers) <= {201, 409}, answers
    applied = answers.count(201) + sum(int(out[0]) for out in outputs)
    assert applied >= 1

    assert_accounted(saga, settle=120)
    allocations = saga.allocations()
    # More was proposed than pledged, so some proposals were refused...
    assert any(a.status == "rejected" for a in allocations)
    # ...and what was reserved never exceeds a line, or a need.
    reserved: dict[str, int] = {}
    for allocation in allocations:
        if allocation.status == "reserved":
            key = str(allocation.pledge_line_id)
            reserved[key] = reserved.get(key, 0) + allocation.quantity
    assert reserved and all(reserved[line] <= pledged[line] for line in reserved)
    needed: dict[Any, int] = {}
    for need in saga.needs:
        for line in need["lines"]:
            needed[line["id"]] = line["quantity"]
    taken: dict[str, int] = {}
    for allocation in allocations:
        if allocation.status == "reserved":
            taken[str(allocation.need_line_id)] = (
                taken.get(str(allocation.need_line_id), 0) + allocation.quantity
            )
    assert all(taken[line] <= needed[line] for line in taken)


def test_the_same_scans_and_the_same_receipt_sent_at_once_apply_once(stack: Stack) -> None:
    """Eight scanners send the same pickup and the same delivery batch at once, then
    eight clients confirm the same receipt at once: each change happens once."""
    from services.dispatch.models import NeedLine, ShipmentEvent
    from services.invariants import check
    from tests.support.shipping import (
        assign_carrier,
        backdate_shipments,
        list_shipments,
        reserved,
    )
    from tests.support.world import saga_world

    people = saga_world(stack, carriers=True)
    # The gateway's and community's queues drain too, so the check finds the system at rest.
    stack.start_worker("gateway")
    stack.start_worker("community")
    reserved(
        stack,
        people,
        {"mask": 300},
        [("hospital", {"mask": 300}, {"region": "420103", "address": "ward 3"})],
    )
    [shipment] = list_shipments(stack.client(), people["coordinator"])
    backdate_shipments(stack)  # planned days ago: the scans below are hours back
    assign_carrier(stack.client(), shipment, people)
    at = datetime.now(UTC) - timedelta(hours=2)
    rows = [
        {"shipment_id": shipment["id"], "status": status, "occurred_at": when.isoformat()}
        for status, when in (("picked_up", at), ("delivered", at + timedelta(hours=1)))
    ]

    def at_once(send: Callable[[Any], Any], times: int = 8) -> list[Any]:
        barrier = threading.Barrier(times)
        answers: list[Any] = [None] * times

        def run(i: int) -> None:
            client = stack.apps["gateway"].test_client()
            barrier.wait()
            answers[i] = send(client)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(times)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        return answers

    batches = at_once(
        lambda c: c.post(
            "/api/v1/shipments/events:batch",
            json={"events": rows},
            headers=people["carrier"].headers,
        )
    )
    assert all(b.status_code == 200 for b in batches), [b.get_data() for b in batches]
    outcomes = [row["outcome"] for b in batches for row in b.json["results"]]
    assert outcomes.count("applied") == 2, outcomes
    assert set(outcomes) <= {"applied", "duplicate"}, outcomes
    dispatch = stack.runtime("dispatch")
    with dispatch.session_factory() as session:
        history = session.scalars(
            select(ShipmentEvent.status).where(
                ShipmentEvent.shipment_id == uuid.UUID(shipment["id"]),
                ShipmentEvent.source == "batch",
            )
        ).all()
    assert sorted(history) == ["delivered", "picked_up"]

    line = shipment["lines"][0]
    body = {"lines": [{"shipment_line_id": line["id"], "accepted": 280, "damaged": 0, "short": 20}]}
    receipts = at_once(
        lambda c: c.post(
            f"/api/v1/shipments/{shipment['id']}/receipt",
            json=body,
            headers=people["hospital"].headers,
        )
    )
    codes = sorted(r.status_code for r in receipts)
    assert codes.count(201) == 1 and set(codes) <= {201, 409}, codes
    with dispatch.session_factory() as session:
        need_line = session.get(NeedLine, uuid.UUID(line["need_line_id"]))
        assert need_line is not None
        # The 20 short went back to matching once, the 280 were received once.
        assert (need_line.received, need_line.shipped) == (280, 280)
    report = check(stack.settings, settle=60)
    assert report.violations == []
