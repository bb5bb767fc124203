"""Use cases of residents' cases: intake, the social workers' hours and load,
assignment (to a named worker, or to the one with most spare capacity), follow-ups,
closing and reopening, the committee's counts, and erasure.

Cases send no events. Nothing here logs a case's text: at INFO a line names ids, kinds
and statuses only.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.community.cases import domain
from services.community.cases.domain import CaseFacts, View, Worker
from services.community.models import Appointment, Case, CaseCounter, CaseFollowUp, Household
from services.community.residents.domain import Standing
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken
from shared.pagination import paginate

log = logging.getLogger(__name__)

# A follow-up may be dated a little ahead of the server's clock, not more.
CLOCK_SKEW = timedelta(minutes=10)


def facts(case: Case) -> CaseFacts:
    return CaseFacts(status=case.status, taken_by=case.taken_by, assigned_to=case.assigned_to)


# Reading ---------------------------------------------------------------------------------


def case_in(session: Session, org_id: uuid.UUID, case_id: uuid.UUID) -> Case:
    """The case ``case_id`` of the community, whoever asks (callers check who reads it)."""
    case = session.get(Case, case_id)
    if case is None or case.org_id != org_id:
        raise NotFound(f"No case {case_id}.", slug="case-not-found")
    return case


def _refuse_reading(standing: Standing, case_id: uuid.UUID) -> Exception:
    if standing.committee:
        return Forbidden(
            "The committee sees counts of cases (cases/summary); a case is read by its "
            "social worker and the case supervisors.",
            slug="forbidden",
        )
    # Someone else's case is answered as missing: its existence is not theirs to learn.
    return NotFound(f"No case {case_id}.", slug="case-not-found")


def get_case(session: Session, standing: Standing, case_id: uuid.UUID) -> tuple[Case, View]:
    """A case and how much of it the caller reads."""
    case = case_in(session, standing.org_id, case_id)
    view = domain.view_of(standing, facts(case))
    if view is View.NONE:
        raise _refuse_reading(standing, case_id)
    return case, view


def follow_ups(session: Session, case: Case) -> list[CaseFollowUp]:
    return list(
        session.scalars(
            select(CaseFollowUp)
            .where(CaseFollowUp.case_id == case.id)
            .order_by(CaseFollowUp.at, CaseFollowUp.recorded_at, CaseFollowUp.id)
        )
    )


def dump(
    session: Session, case: Case, view: View, *, with_follow_ups: bool = True
) -> dict[str, Any]:
    """A case as ``view`` lets the caller read it: what is withheld is left out, not
    sent empty."""
    out: dict[str, Any] = {
        "id": case.id,
        "number": case.number,
        "kind": case.kind,
        "urgency": case.urgency,
        "status": case.status,
        "household_id": case.household_id,
        "building_id": case.building_id,
        "taken_by": case.taken_by,
        "assigned_to": case.assigned_to,
        "assigned_at": case.assigned_at,
        "closed_at": case.closed_at,
        "erased": case.erased,
        "version": case.version,
        "created_at": case.created_at,
        "updated_at": case.updated_at,
        "notes_visible": view is View.NOTES,
    }
    if view in (View.INTAKE, View.NOTES):
        out["summary"] = case.summary
    if view is View.NOTES:
        out["closing_note"] = case.closing_note
        if with_follow_ups:
            out["follow_ups"] = follow_ups(session, case)
    return out


def list_cases(session: Session, standing: Standing, args: dict[str, Any]) -> dict[str, Any]:
    """The cases the caller may see: every one for case supervisors (and a coordinator
    giving a reason); for anyone else those assigned to them as a social worker and
    those they took in."""
    stmt = select(Case).where(Case.org_id == standing.org_id)
    if not domain.reads_every_case(standing):
        me = standing.user_id
        mine = [Case.taken_by == me]
        if standing.social_worker:
            mine.append(Case.assigned_to == me)
        stmt = stmt.where(or_(*mine))
    for name in ("status", "kind", "urgency", "assigned_to", "household_id", "number"):
        if args.get(name) is not None:
            stmt = stmt.where(getattr(Case, name) == args[name])
    page = paginate(session, stmt, Case, cursor=args.get("cursor"), limit=args.get("limit", 50))
    page["items"] = [
        dump(session, case, domain.view_of(standing, facts(case)), with_follow_ups=False)
        for case in page["items"]
    ]
    return page


def summary(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """Counts only: the community's cases not yet closed by kind and urgency, by status,
    and how many are closed."""
    rows = session.execute(
        select(Case.status, Case.kind, Case.urgency, func.count())
        .where(Case.org_id == org_id)
        .group_by(Case.status, Case.kind, Case.urgency)
    ).all()
    by_kind = {kind: dict.fromkeys(domain.URGENCIES, 0) for kind in domain.KINDS}
    by_status = dict.fromkeys(domain.STATUSES, 0)
    for status, kind, urgency, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if status in domain.ACTIVE:
            by_kind.setdefault(kind, dict.fromkeys(domain.URGENCIES, 0))
            by_kind[kind][urgency] = by_kind[kind].get(urgency, 0) + count
    by_urgency = {u: sum(kinds.get(u, 0) for kinds in by_kind.values()) for u in domain.URGENCIES}
    return {
        "org_id": org_id,
        "open": sum(by_status[s] for s in domain.ACTIVE),
        "closed": by_status["closed"],
        "by_status": by_status,
        "by_urgency": by_urgency,
        "by_kind": by_kind,
    }


def require_counts(standing: Standing) -> None:
    if not (standing.committee or standing.case_supervisor or standing.coordinator):
        raise Forbidden(
            "Counts of cases are for the committee, case supervisors and coordinators.",
            slug="forbidden",
        )


# Intake ----------------------------------------------------------------------------------


def next_number(session: Session, org_id: uuid.UUID, year: int) -> str:
    """The community's next case number of ``year``, taken in the caller's transaction:
    the counter's row stays locked until it commits, so no two cases share a number."""
    for _attempt in range(3):
        taken = session.execute(
            update(CaseCounter)
            .where(CaseCounter.org_id == org_id, CaseCounter.year == year)
            .values(last=CaseCounter.last + 1)
            .returning(CaseCounter.last)
            .execution_options(synchronize_session=False)
        ).scalar()
        if taken is None:
            try:
                with session.begin_nested():
                    session.execute(insert(CaseCounter).values(org_id=org_id, year=year, last=1))
                taken = 1
            except IntegrityError:
                continue  # another intake began the year: take the next number
        return domain.case_number(year, taken)
    raise RuntimeError(f"could not take a case number for {org_id} in {year}")


def take_in(session: Session, standing: Standing, data: dict[str, Any]) -> Case:
    """A resident's request taken in as a case, ``open`` until it is assigned."""
    if not domain.may_take_in(standing):
        raise Forbidden(
            "Cases are taken in by social workers, building leaders, case supervisors and "
            "the committee.",
            slug="forbidden",
        )
    household_id = data.get("household_id")
    building_id = None
    if household_id is not None:
        household = session.get(Household, household_id)
        everywhere = standing.committee or standing.case_supervisor or standing.social_worker
        if (
            household is None
            or household.org_id != standing.org_id
            or household.erased
            or not (everywhere or household.building_id in standing.leads)
        ):
            raise RuleBroken(
                "The case names a household the caller cannot take a case in for.",
                errors={
                    "household_id": [
                        "No such household in this community"
                        + ("" if everywhere else " among the buildings you lead")
                        + "."
                    ]
                },
            )
        building_id = household.building_id
    now = utcnow()
    case = Case(
        id=uuid.uuid4(),
        org_id=standing.org_id,
        number=next_number(session, standing.org_id, now.year),
        kind=data["kind"],
        urgency=data["urgency"],
        household_id=household_id,
        building_id=building_id,
        summary=data["summary"].strip(),
        status="open",
        taken_by=standing.user_id,
    )
    session.add(case)
    session.flush()
    log.info("case %s (%s, %s) taken in in %s", case.id, case.kind, case.urgency, case.org_id)
    return case


# Social workers' hours -------------------------------------------------------------------


def workers(
    session: Session, org_id: uuid.UUID, *, besides: uuid.UUID | None = None
) -> list[Worker]:
    """The community's social workers with their hours a day and their active cases
    (leaving out the case ``besides``)."""
    hours: dict[uuid.UUID, float] = {}
    for user_id, stated in session.execute(
        select(Appointment.user_id, Appointment.hours_per_day)
        .where(Appointment.org_id == org_id, Appointment.role == "social_worker")
        .order_by(Appointment.created_at)
    ):
        hours[user_id] = float(stated or 0)
    load: dict[uuid.UUID, list[str]] = {user_id: [] for user_id in hours}
    stmt = select(Case.assigned_to, Case.urgency).where(
        Case.org_id == org_id,
        Case.status.in_(("assigned", "in_progress")),
        Case.assigned_to.in_(list(hours)),
    )
    if besides is not None:
        stmt = stmt.where(Case.id != besides)
    for assigned_to, urgency in session.execute(stmt):
        if assigned_to is not None:
            load[assigned_to].append(urgency)
    return [
        Worker(
            user_id=user_id, hours_per_day=hours[user_id], urgencies=tuple(sorted(load[user_id]))
        )
        for user_id in hours
    ]


def _names(session: Session, org_id: uuid.UUID) -> dict[uuid.UUID, str | None]:
    return dict(
        session.execute(
            select(Appointment.user_id, Appointment.name).where(
                Appointment.org_id == org_id, Appointment.role == "social_worker"
            )
        ).all()
    )


def _worker_row(worker: Worker, name: str | None) -> dict[str, Any]:
    return {
        "user_id": worker.user_id,
        "name": name,
        "hours_per_day": worker.hours_per_day,
        "active_cases": len(worker.urgencies),
        "by_urgency": {u: worker.urgencies.count(u) for u in domain.URGENCIES},
        "load_hours": worker.load,
        "spare_hours": worker.spare,
    }


def list_workers(session: Session, standing: Standing) -> list[dict[str, Any]]:
    """Each social worker's hours, active cases and spare hours: all of them for the
    committee and case supervisors, their own for a social worker."""
    everyone = (standing.committee or standing.case_supervisor) and not standing.coordinator
    if not (everyone or standing.social_worker):
        raise Forbidden(
            "Social workers' hours are for the committee, case supervisors and the "
            "workers themselves.",
            slug="forbidden",
        )
    names = _names(session, standing.org_id)
    return [
        _worker_row(worker, names.get(worker.user_id))
        for worker in workers(session, standing.org_id)
        if everyone or worker.user_id == standing.user_id
    ]


def set_hours(
    session: Session, standing: Standing, user_id: uuid.UUID, hours_per_day: float
) -> dict[str, Any]:
    """The hours a day a social worker can give: their own, or anyone's for the committee
    and case supervisors. Cases already assigned stay with them."""
    if not domain.may_set_hours(standing, user_id):
        raise Forbidden(
            "A social worker's hours are set by the worker, the committee or a case supervisor.",
            slug="forbidden",
        )
    changed = session.execute(
        update(Appointment)
        .where(
            Appointment.org_id == standing.org_id,
            Appointment.user_id == user_id,
            Appointment.role == "social_worker",
        )
        .values(hours_per_day=hours_per_day)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not changed:
        raise NotFound(f"No social worker {user_id} in this community.", slug="worker-not-found")
    log.info(
        "social worker %s in %s gives %.1f hours a day", user_id, standing.org_id, hours_per_day
    )
    [worker] = [w for w in workers(session, standing.org_id) if w.user_id == user_id]
    return _worker_row(worker, _names(session, standing.org_id).get(user_id))


# Changing a case -------------------------------------------------------------------------


def _refuse_writing(standing: Standing, case: Case, what: str) -> Exception:
    if domain.view_of(standing, facts(case)) is View.NONE:
        return _refuse_reading(standing, case.id)
    return Forbidden(
        f"{what} is for the case's social worker and case supervisors.", slug="forbidden"
    )


def _still_active(case: Case) -> None:
    if case.erased:
        raise Conflict(
            "This case's household was erased; the case is kept for the counts only.",
            slug="case-erased",
        )
    if case.status == "closed":
        raise Conflict(
            "This case is closed; a case supervisor may reopen it.",
            slug="case-closed",
            current_status=case.status,
        )


def assign(
    session: Session,
    standing: Standing,
    case_id: uuid.UUID,
    *,
    social_worker_id: uuid.UUID | None,
    auto: bool,
) -> Case:
    """Hand a case to a social worker (the committee and case supervisors): the one
    named, or the one with most spare capacity."""
    if not domain.may_assign(standing):
        case = case_in(session, standing.org_id, case_id)
        raise _refuse_writing(standing, case, "Assigning a case")
    case = case_in(session, standing.org_id, case_id)
    _still_active(case)
    team = workers(session, standing.org_id, besides=case.id)
    if auto:
        chosen = domain.with_most_spare_capacity(team, case.urgency)
        if chosen is None:
            raise Conflict(
                f"No social worker has {domain.HOURS_BY_URGENCY[case.urgency]:g} hours a day "
                f"to spare for another {case.urgency} case; name one in social_worker_id, "
                "or raise someone's hours.",
                slug="no-capacity",
            )
        worker_id = chosen.user_id
    else:
        assert social_worker_id is not None
        named = {w.user_id: w for w in team}.get(social_worker_id)
        if named is None:
            raise RuleBroken(
                "Cases are assigned to the community's social workers.",
                errors={
                    "social_worker_id": [
                        f"{social_worker_id} is not a social worker of this community."
                    ]
                },
            )
        if named.hours_per_day <= 0:
            raise RuleBroken(
                "This social worker has stated no hours to give.",
                errors={"social_worker_id": ["This social worker gives 0 hours a day."]},
            )
        worker_id = named.user_id
    case.assigned_to = worker_id
    case.assigned_at = utcnow()
    case.assigned_by = standing.user_id
    case.status = "assigned"
    session.flush()
    log.info("case %s assigned to social worker %s", case.id, worker_id)
    return case


def follow_up(
    session: Session,
    standing: Standing,
    case_id: uuid.UUID,
    *,
    note: str,
    at: datetime | None,
) -> CaseFollowUp:
    """A dated note (the visit, the call, what was done): the assigned worker's first
    one starts the work (``in_progress``)."""
    case = case_in(session, standing.org_id, case_id)
    if not domain.may_write_notes(standing, facts(case)):
        raise _refuse_writing(standing, case, "Writing a follow-up")
    _still_active(case)
    now = utcnow()
    if at is not None and at > now + CLOCK_SKEW:
        raise RuleBroken(
            "A follow-up records what happened.",
            errors={"at": ["A follow-up cannot be dated in the future."]},
        )
    entry = CaseFollowUp(
        id=uuid.uuid4(),
        case_id=case.id,
        kind="note",
        at=at or now,
        note=note.strip(),
        by=standing.user_id,
        recorded_at=now,
    )
    session.add(entry)
    case.status = domain.status_after_follow_up(facts(case), standing.user_id)
    case.updated_at = now  # a new note is a change of the case (and of its ETag)
    session.flush()
    log.info("case %s: follow-up %s, now %s", case.id, entry.id, case.status)
    return entry


def close(session: Session, standing: Standing, case_id: uuid.UUID, closing_note: str) -> Case:
    """Close a case with a note on how it ended (its worker, or a case supervisor)."""
    case = case_in(session, standing.org_id, case_id)
    if not domain.may_write_notes(standing, facts(case)):
        raise _refuse_writing(standing, case, "Closing a case")
    _still_active(case)
    note = closing_note.strip()
    if not note:
        raise RuleBroken(
            "A case is closed with a note.",
            errors={"closing_note": ["Say how the case ended."]},
        )
    case.status = "closed"
    case.closing_note = note
    case.closed_at = utcnow()
    case.closed_by = standing.user_id
    session.flush()
    log.info("case %s closed", case.id)
    return case


def reopen(session: Session, standing: Standing, case_id: uuid.UUID, reason: str) -> Case:
    """A closed case taken up again (case supervisors): back to its worker while they
    are still a social worker here, else back in the queue. The closing note stays in
    the case's history."""
    case = case_in(session, standing.org_id, case_id)
    if not (standing.case_supervisor and not standing.coordinator):
        raise _refuse_writing(standing, case, "Reopening a case")
    if case.erased:
        _still_active(case)  # refuses: an erased case is not taken up again
    if case.status != "closed":
        raise Conflict(
            f"This case is {case.status}, not closed.",
            slug="case-not-closed",
            current_status=case.status,
        )
    now = utcnow()
    if case.closing_note is not None:
        session.add(
            CaseFollowUp(
                id=uuid.uuid4(),
                case_id=case.id,
                kind="closing",
                at=case.closed_at or now,
                note=case.closing_note,
                by=case.closed_by,
                recorded_at=now,
            )
        )
    session.add(
        CaseFollowUp(
            id=uuid.uuid4(),
            case_id=case.id,
            kind="reopened",
            at=now,
            note=reason.strip(),
            by=standing.user_id,
            recorded_at=now,
        )
    )
    still_here = case.assigned_to in {w.user_id for w in workers(session, case.org_id)}
    if not still_here:
        case.assigned_to = None
        case.assigned_at = None
    case.status = domain.status_after_reopen(facts(case))
    case.closing_note = None
    case.closed_at = None
    case.closed_by = None
    session.flush()
    log.info("case %s reopened, now %s", case.id, case.status)
    return case


# Erasure and export ------------------------------------------------------------------------


def _erase(session: Session, cases: list[Case]) -> None:
    """The cases' text goes; their kind, urgency and dates stay for the counts. A case
    still active ends with its household: closed, with no note."""
    now = utcnow()
    for case in cases:
        case.summary = None
        case.closing_note = None
        case.erased = True
        if case.status != "closed":
            case.status = "closed"
            case.closed_at = now
            case.closed_by = None
    if cases:
        session.execute(
            update(CaseFollowUp)
            .where(CaseFollowUp.case_id.in_([c.id for c in cases]))
            .values(note=None)
            .execution_options(synchronize_session=False)
        )


def erase_household(session: Session, household_id: uuid.UUID) -> None:
    """A household that moved away or was erased: its cases keep no text."""
    _erase(session, list(session.scalars(select(Case).where(Case.household_id == household_id))))


def erase_community(session: Session, org_id: uuid.UUID) -> None:
    """The organisation's data erased (org.erased): every case keeps no text."""
    _erase(session, list(session.scalars(select(Case).where(Case.org_id == org_id))))
