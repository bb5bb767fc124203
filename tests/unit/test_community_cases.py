"""Residents' cases without a database: which social worker has room for the next case,
who reads how much of a case, and how a case moves."""

from __future__ import annotations

import uuid

from services.community.cases.domain import (
    CaseFacts,
    View,
    Worker,
    case_number,
    may_assign,
    may_write_notes,
    status_after_follow_up,
    status_after_reopen,
    view_of,
    with_most_spare_capacity,
)
from services.community.residents.domain import Standing, standing_from

ORG = uuid.UUID(int=99)
A, B, C, LEADER = (uuid.UUID(int=n) for n in range(1, 5))
BUILDING = uuid.UUID(int=50)


def test_the_worker_with_most_hours_to_spare_gets_the_case() -> None:
    workers = [
        Worker(A, 6, ("urgent", "urgent")),  # 2 hours to spare
        Worker(B, 2),  # 2 hours, fewer cases
        Worker(C, 3, ("routine",)),  # 2.5 hours
    ]
    assert with_most_spare_capacity(workers, "urgent") == workers[2]
    # A tie goes to the worker with fewer cases.
    assert with_most_spare_capacity(workers[:2], "soon") == workers[1]


def test_no_one_gets_a_case_they_have_no_room_for() -> None:
    workers = [Worker(A, 6, ("urgent",) * 3), Worker(B, 1.5, ("routine",)), Worker(C, 0)]
    assert with_most_spare_capacity(workers, "urgent") is None
    assert with_most_spare_capacity(workers, "soon") == workers[1]
    assert with_most_spare_capacity([], "routine") is None


def test_the_notes_are_for_the_assigned_worker_and_the_supervisors() -> None:
    case = CaseFacts(status="assigned", taken_by=LEADER, assigned_to=A)
    worker_a = Standing(org_id=ORG, user_id=A, social_worker=True)
    worker_b = Standing(org_id=ORG, user_id=B, social_worker=True)
    leader = Standing(org_id=ORG, user_id=LEADER, leads=frozenset({BUILDING}))
    committee = Standing(org_id=ORG, user_id=C, committee=True)
    supervisor = Standing(org_id=ORG, user_id=C, case_supervisor=True)
    coordinator = Standing(org_id=ORG, user_id=C, coordinator=True)
    assert view_of(worker_a, case) is View.NOTES
    assert view_of(supervisor, case) is View.NOTES
    assert view_of(coordinator, case) is View.NOTES
    assert view_of(leader, case) is View.STATUS
    assert view_of(worker_b, case) is View.NONE
    assert view_of(committee, case) is View.NONE
    # Before a worker has it, whoever took it in still reads what they wrote.
    unassigned = CaseFacts(status="open", taken_by=LEADER, assigned_to=None)
    assert view_of(leader, unassigned) is View.INTAKE
    assert may_write_notes(worker_a, case) and not may_write_notes(worker_b, case)
    assert not may_write_notes(coordinator, case) and not may_assign(coordinator)
    assert may_assign(committee) and may_assign(supervisor) and not may_assign(worker_a)


def test_a_case_moves_from_assigned_to_in_progress_and_back_from_closed() -> None:
    case = CaseFacts(status="assigned", taken_by=LEADER, assigned_to=A)
    assert status_after_follow_up(case, A) == "in_progress"
    assert status_after_follow_up(case, C) == "assigned"  # a supervisor's note
    closed = CaseFacts(status="closed", taken_by=LEADER, assigned_to=A)
    assert status_after_reopen(closed) == "assigned"
    assert status_after_reopen(CaseFacts("closed", LEADER, None)) == "open"
    assert case_number(2020, 7) == "C-2020-0007"


def test_a_committee_member_may_also_supervise_cases() -> None:
    both = standing_from(ORG, A, [("committee", None), ("case_supervisor", None)])
    assert both.committee and both.case_supervisor
    only = standing_from(ORG, A, [("case_supervisor", None)])
    assert only.case_supervisor and not only.committee
