"""A community's residents' data, exported for its committee and erased on request.

The export (the community's part of ``GET /api/v1/orgs/{id}/personal-data``, answered
by ``residents.api.personal_data``) holds
everything the community service keeps: buildings, appointments, households with
their flags, notes and phones, orders, deliveries with their notes, cases with their
notes, and the coordinators' readings of it. It is the committee's (and a
coordinator's with a recorded reason, as for any reading of residents' data): a
building leader, a volunteer or a social worker of the community is refused, since each
sees only part of it.

Erasure (``org.residents_erased``) leaves households their size and whether they were
vulnerable, and cases, orders and deliveries their quantities and statuses, so every
count and ``check-invariants`` still add up. A member who leaves the organisation
(``org.member_removed``) ends their appointments.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.community.models import (
    AccessRecord,
    Appointment,
    Case,
    CaseFollowUp,
    Household,
    HouseholdDelivery,
    OrderLine,
    OrderRound,
    messaging,
)
from services.community.residents import service as residents

log = logging.getLogger(__name__)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def counts(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    return residents.personal_data(session, org_id)


def everything(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """All the community service holds of the community ``org_id``, with its counts
    (for the operator's ``aidlink personal-data export`` as for its committee)."""
    return {**counts(session, org_id), **_records(session, org_id)}


def _records(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    households = list(
        session.scalars(
            select(Household)
            .where(Household.org_id == org_id)
            .order_by(Household.building_id, Household.unit, Household.room)
        )
    )
    rounds = list(
        session.scalars(
            select(OrderRound).where(OrderRound.org_id == org_id).order_by(OrderRound.created_at)
        )
    )
    lines = (
        list(
            session.scalars(
                select(OrderLine)
                .where(OrderLine.round_id.in_([r.id for r in rounds]))
                .order_by(OrderLine.round_id, OrderLine.household_id, OrderLine.item)
            )
        )
        if rounds
        else []
    )
    cases = list(session.scalars(select(Case).where(Case.org_id == org_id).order_by(Case.number)))
    follow_ups: dict[uuid.UUID, list[CaseFollowUp]] = {}
    if cases:
        for follow_up in session.scalars(
            select(CaseFollowUp)
            .where(CaseFollowUp.case_id.in_([c.id for c in cases]))
            .order_by(CaseFollowUp.at, CaseFollowUp.id)
        ):
            follow_ups.setdefault(follow_up.case_id, []).append(follow_up)
    return {
        "buildings": [
            {"id": str(b.id), "name": b.name, "area": b.area}
            for b in residents.list_buildings(session, org_id)
        ],
        "appointments": [
            {
                "id": str(a.id),
                "user_id": str(a.user_id),
                "role": a.role,
                "building_id": str(a.building_id) if a.building_id else None,
                "area": a.area,
                "name": a.name,
                "hours_per_day": a.hours_per_day,
                "created_at": _iso(a.created_at),
            }
            for a in session.scalars(
                select(Appointment)
                .where(Appointment.org_id == org_id)
                .order_by(Appointment.created_at, Appointment.id)
            )
        ],
        "household_records": [
            {
                "id": str(h.id),
                "building_id": str(h.building_id),
                "unit": h.unit,
                "room": h.room,
                "people": h.people,
                "flags": list(h.flags or []),
                "vulnerable": h.vulnerable,
                "note": h.note,
                "phone": h.phone,
                "erased": h.erased,
            }
            for h in households
        ],
        "order_rounds": [
            {
                "id": str(r.id),
                "title": r.title,
                "status": r.status,
                "limits": r.limits,
                "requested": r.requested,
                "confirmed_at": _iso(r.confirmed_at),
                "orders": [
                    {
                        "household_id": str(line.household_id),
                        "building_id": str(line.building_id),
                        "item": line.item,
                        "quantity": line.quantity,
                        "entered_by": str(line.entered_by) if line.entered_by else None,
                        "entered_at": _iso(line.entered_at),
                    }
                    for line in lines
                    if line.round_id == r.id
                ],
            }
            for r in rounds
        ],
        "deliveries": [
            {
                "id": str(d.id),
                "distribution_id": str(d.distribution_id),
                "household_id": str(d.household_id),
                "building_id": str(d.building_id),
                "items": d.items,
                "status": d.status,
                "note": d.note,
                "done_at": _iso(d.done_at),
                "done_by": str(d.done_by) if d.done_by else None,
            }
            for d in session.scalars(
                select(HouseholdDelivery)
                .where(HouseholdDelivery.org_id == org_id)
                .order_by(HouseholdDelivery.created_at, HouseholdDelivery.id)
            )
        ],
        "cases": [
            {
                "id": str(c.id),
                "number": c.number,
                "kind": c.kind,
                "urgency": c.urgency,
                "household_id": str(c.household_id) if c.household_id else None,
                "status": c.status,
                "summary": c.summary,
                "taken_by": str(c.taken_by) if c.taken_by else None,
                "assigned_to": str(c.assigned_to) if c.assigned_to else None,
                "closing_note": c.closing_note,
                "closed_at": _iso(c.closed_at),
                "erased": c.erased,
                "follow_ups": [
                    {"at": _iso(f.at), "kind": f.kind, "note": f.note, "by": str(f.by)}
                    for f in follow_ups.get(c.id, [])
                ],
            }
            for c in cases
        ],
        "access_records": [
            {
                "at": _iso(r.at),
                "coordinator_org_id": str(r.coordinator_org_id) if r.coordinator_org_id else None,
                "reason": r.reason,
                "what": r.what,
            }
            for r in session.scalars(
                select(AccessRecord)
                .where(AccessRecord.org_id == org_id)
                .order_by(AccessRecord.at, AccessRecord.id)
            )
        ],
    }


def erase_residents(session: Session, org_id: uuid.UUID) -> None:
    """Every household's details, every case's text, the deliveries' notes, the
    appointments' names and the coordinators' access records go (and the answers kept
    for Idempotency-Keys of writes to the community, which repeat them); sizes,
    flags' count as vulnerable, quantities and statuses stay."""
    residents.erase_community(session, org_id)
    session.execute(
        update(HouseholdDelivery)
        .where(HouseholdDelivery.org_id == org_id)
        .values(note=None)
        .execution_options(synchronize_session=False)
    )
    keys = messaging.idempotency
    session.execute(
        delete(keys)
        .where(keys.path.startswith(f"/api/v1/community/{org_id}/"))
        .execution_options(synchronize_session=False)
    )
    log.info("erased the residents' data of community %s", org_id)


def end_appointments(session: Session, org_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """A member who left the organisation holds no role in its community any more; the
    cases they had not closed go back to be assigned to someone else."""
    ended = session.execute(
        delete(Appointment)
        .where(Appointment.org_id == org_id, Appointment.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(ended, "rowcount", 0) or 0)
    session.execute(
        update(Case)
        .where(
            Case.org_id == org_id,
            Case.assigned_to == user_id,
            Case.status.in_(("assigned", "in_progress")),
        )
        .values(
            status="open",
            assigned_to=None,
            assigned_at=None,
            assigned_by=None,
            version=Case.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    log.info("ended %d appointments of %s in %s", count, user_id, org_id)
    return count
