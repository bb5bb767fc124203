"""Residents' cases: what a case is, how it moves, who reads what of it, and which
social worker has room for the next one.

A case is a resident's request for a service (counselling, help to reach a clinic, a
medicine pickup, child care while a parent is in quarantine, something else), taken in
by a social worker, a building leader or the committee, then handed to a social worker:
``open`` -> ``assigned`` -> ``in_progress`` -> ``closed`` (with a closing note), and
back from ``closed`` when a case supervisor reopens it.

Its notes (the summary taken at intake, the follow-ups, the closing note) are read by
the assigned social worker and the community's case supervisors, and by a coordinator
giving a recorded reason; whoever took the case in sees what became of it, and the
summary they wrote until the case is assigned; the committee sees counts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from services.community.residents.domain import Standing

KINDS = ("counselling", "clinic_access", "medicine_pickup", "child_care", "other")
URGENCIES = ("routine", "soon", "urgent")
STATUSES = ("open", "assigned", "in_progress", "closed")
ACTIVE = ("open", "assigned", "in_progress")
# Hours a day an active case is reckoned to take of its worker's time, by urgency.
HOURS_BY_URGENCY = {"routine": 0.5, "soon": 1.0, "urgent": 2.0}
NUMBER_PREFIX = "C"


def case_number(year: int, sequence: int) -> str:
    """The number people read and say: C-2026-0001, per community and year."""
    return f"{NUMBER_PREFIX}-{year}-{sequence:04d}"


class View(Enum):
    """How much of a case a caller reads."""

    NONE = 0
    # Its number, kind, urgency, status, household and worker: for whoever took it in.
    STATUS = 1
    # And the summary they wrote, while no worker has it yet.
    INTAKE = 2
    # Everything: the assigned worker, case supervisors, a coordinator with a reason.
    NOTES = 3


@dataclass(frozen=True)
class CaseFacts:
    """What deciding on a case needs to know of it."""

    status: str
    taken_by: uuid.UUID | None
    assigned_to: uuid.UUID | None


def reads_every_case(standing: Standing) -> bool:
    return standing.case_supervisor or standing.coordinator


def view_of(standing: Standing, case: CaseFacts) -> View:
    if reads_every_case(standing):
        return View.NOTES
    me = standing.user_id
    if me is not None and standing.social_worker and case.assigned_to == me:
        return View.NOTES
    if me is not None and case.taken_by == me:
        return View.INTAKE if case.assigned_to is None else View.STATUS
    return View.NONE


def may_take_in(standing: Standing) -> bool:
    return (
        standing.committee
        or standing.case_supervisor
        or standing.social_worker
        or bool(standing.leads)
    ) and not standing.coordinator


def may_assign(standing: Standing) -> bool:
    return (standing.committee or standing.case_supervisor) and not standing.coordinator


def may_write_notes(standing: Standing, case: CaseFacts) -> bool:
    """Follow-ups and the closing note: the assigned worker and case supervisors."""
    if standing.coordinator:
        return False
    if standing.case_supervisor:
        return True
    return (
        standing.social_worker
        and standing.user_id is not None
        and (case.assigned_to == standing.user_id)
    )


def may_set_hours(standing: Standing, worker: uuid.UUID) -> bool:
    """A social worker states their own hours; the committee and case supervisors
    anyone's."""
    if standing.coordinator:
        return False
    return standing.committee or standing.case_supervisor or standing.user_id == worker


def status_after_follow_up(case: CaseFacts, author: uuid.UUID | None) -> str:
    """The assigned worker's first follow-up starts the work."""
    if case.status == "assigned" and author is not None and author == case.assigned_to:
        return "in_progress"
    return case.status


def status_after_reopen(case: CaseFacts) -> str:
    """Back to its worker if it had one, else back in the queue."""
    return "assigned" if case.assigned_to is not None else "open"


@dataclass(frozen=True)
class Worker:
    """A social worker of the community, the hours a day they give, and their active
    cases' urgencies."""

    user_id: uuid.UUID
    hours_per_day: float
    urgencies: tuple[str, ...] = ()

    @property
    def load(self) -> float:
        return sum(HOURS_BY_URGENCY.get(u, 1.0) for u in self.urgencies)

    @property
    def spare(self) -> float:
        return self.hours_per_day - self.load


def with_most_spare_capacity(workers: Iterable[Worker], urgency: str) -> Worker | None:
    """The worker with the most hours to spare once their active cases are reckoned by
    urgency, among those with room for a case of ``urgency``; ties go to the one with
    fewer cases, then by id, so the same state gives the same choice. None when no one
    has room."""
    needed = HOURS_BY_URGENCY[urgency]
    fits = [w for w in workers if w.hours_per_day > 0 and w.spare >= needed]
    if not fits:
        return None
    return min(fits, key=lambda w: (-w.spare, len(w.urgencies), str(w.user_id)))
