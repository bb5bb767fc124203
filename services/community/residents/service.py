"""Use cases of buildings, appointments and households, and each caller's standing.

Nothing here logs a household's details: at INFO a line names ids and counts only.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.community.cases import service as cases
from services.community.models import AccessRecord, Appointment, Building, Household, Organisation
from services.community.residents import domain
from services.community.residents.domain import Standing
from shared.errors import Conflict, Forbidden, NotFound, RuleBroken
from shared.identity import Identity

log = logging.getLogger(__name__)

COMMUNITY_KIND = "community_committee"


def standing_of(
    session: Session,
    identity: Identity,
    org_id: uuid.UUID,
    reason: str | None = None,
    *,
    residents: bool = True,
) -> Standing:
    """What ``identity`` may do in the community ``org_id``: its members by their
    appointments; a coordinator, to read, and to read ``residents``' data only with a
    ``reason`` (recorded by :func:`record_access`); anyone else nothing."""
    if identity.org_id == org_id and identity.org_kind == COMMUNITY_KIND:
        rows = session.execute(
            select(Appointment.role, Appointment.building_id, Appointment.area).where(
                Appointment.org_id == org_id, Appointment.user_id == identity.user_id
            )
        ).all()
        areas = [area for role, _b, area in rows if role == "area_leader" and area]
        by_area: dict[str, set[uuid.UUID]] = {}
        if areas:
            for building_id, area in session.execute(
                select(Building.id, Building.area).where(
                    Building.org_id == org_id, Building.area.in_(areas)
                )
            ):
                by_area.setdefault(str(area), set()).add(building_id)
        return domain.standing_from(
            org_id,
            identity.user_id,
            [(role, building) for role, building, _a in rows],
            by_area,
            areas,
        )
    if identity.is_coordinator:
        org = session.get(Organisation, org_id)
        if org is None or org.kind != COMMUNITY_KIND:
            raise NotFound(f"No community {org_id}.", slug="community-not-found")
        if residents and (not reason or len(reason.strip()) < domain.MIN_REASON):
            raise Forbidden(
                "Residents' data is the community's: a coordinator reads it only with a "
                f"reason (the X-Access-Reason header, at least {domain.MIN_REASON} "
                "characters), which is recorded.",
                slug="reason-required",
            )
        return Standing(org_id=org_id, coordinator=True, user_id=identity.user_id)
    raise Forbidden("This community's data belongs to another organisation.", slug="forbidden")


def record_access(
    session: Session, standing: Standing, identity: Identity, reason: str | None, what: str
) -> None:
    """A coordinator's reading of residents' data, kept with its reason."""
    if not standing.coordinator:
        return
    session.add(
        AccessRecord(
            org_id=standing.org_id,
            user_id=identity.user_id,
            coordinator_org_id=identity.org_id,
            reason=(reason or "").strip()[:500],
            what=what[:200],
        )
    )


def require_committee(standing: Standing) -> None:
    if not standing.committee:
        raise Forbidden("Only the community's committee may do this.", slug="forbidden")


# Buildings -----------------------------------------------------------------------------


def list_buildings(session: Session, org_id: uuid.UUID) -> list[Building]:
    return list(
        session.scalars(select(Building).where(Building.org_id == org_id).order_by(Building.name))
    )


def add_building(session: Session, standing: Standing, *, name: str, area: str | None) -> Building:
    require_committee(standing)
    building = Building(id=uuid.uuid4(), org_id=standing.org_id, name=name.strip(), area=area)
    session.add(building)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"The community already has a building called {name!r}.", slug="building-exists"
        ) from None
    return building


def get_building(session: Session, org_id: uuid.UUID, building_id: uuid.UUID) -> Building:
    building = session.get(Building, building_id)
    if building is None or building.org_id != org_id:
        raise NotFound(f"No building {building_id} in this community.", slug="building-not-found")
    return building


# Appointments --------------------------------------------------------------------------


def list_appointments(session: Session, standing: Standing) -> list[Appointment]:
    require_committee(standing)
    return list(
        session.scalars(
            select(Appointment)
            .where(Appointment.org_id == standing.org_id)
            .order_by(Appointment.created_at, Appointment.id)
        )
    )


def appoint(session: Session, standing: Standing, data: dict[str, Any]) -> Appointment:
    require_committee(standing)
    role = data["role"]
    building_id = data.get("building_id")
    if role in domain.BUILDING_ROLES:
        if building_id is None:
            raise RuleBroken(
                f"A {role} is appointed for a building.",
                errors={"building_id": [f"Name the building of this {role}."]},
            )
        get_building(session, standing.org_id, building_id)
    elif building_id is not None:
        raise RuleBroken(
            f"A {role} is not appointed for a building.",
            errors={"building_id": ["Leave it out for this role."]},
        )
    if role in domain.AREA_ROLES and not data.get("area"):
        raise RuleBroken(
            "An area leader is appointed for an area.",
            errors={"area": ["Name the area."]},
        )
    if role == "social_worker" and data.get("hours_per_day") is None:
        raise RuleBroken(
            "A social worker states the hours a day they can give.",
            errors={"hours_per_day": ["Give the hours a day (0 to 24)."]},
        )
    appointment = Appointment(
        id=uuid.uuid4(),
        org_id=standing.org_id,
        user_id=data["user_id"],
        role=role,
        building_id=building_id,
        area=data.get("area") if role in domain.AREA_ROLES else None,
        name=data.get("name"),
        hours_per_day=data.get("hours_per_day") if role == "social_worker" else None,
        created_by=standing.user_id,
    )
    session.add(appointment)
    session.flush()
    log.info("appointed %s as %s in %s", appointment.user_id, role, standing.org_id)
    return appointment


def dismiss(session: Session, standing: Standing, appointment_id: uuid.UUID) -> None:
    require_committee(standing)
    appointment = session.get(Appointment, appointment_id)
    if appointment is None or appointment.org_id != standing.org_id:
        raise NotFound(f"No appointment {appointment_id}.", slug="appointment-not-found")
    session.delete(appointment)


# Households ----------------------------------------------------------------------------


def list_households(
    session: Session, standing: Standing, building_id: uuid.UUID | None = None
) -> list[Household]:
    """The households the caller sees, by building, unit and room."""
    stmt = select(Household).where(Household.org_id == standing.org_id, Household.erased.is_(False))
    seen = standing.buildings_seen()
    if building_id is not None:
        if not standing.sees_households_of(building_id):
            raise Forbidden("Another building's households are its leader's.", slug="forbidden")
        stmt = stmt.where(Household.building_id == building_id)
    elif seen is not None:
        stmt = stmt.where(Household.building_id.in_(seen))
    households = list(session.scalars(stmt))
    names = {b.id: b.name for b in list_buildings(session, standing.org_id)}
    households.sort(key=lambda h: (names.get(h.building_id, ""), h.unit, h.room))
    return households


def get_household(session: Session, standing: Standing, household_id: uuid.UUID) -> Household:
    household = session.get(Household, household_id)
    if (
        household is None
        or household.org_id != standing.org_id
        or household.erased
        or not standing.sees_households_of(household.building_id)
    ):
        # Another building's household is answered as missing: its existence is not
        # the caller's to learn.
        raise NotFound(f"No household {household_id}.", slug="household-not-found")
    return household


def add_household(session: Session, standing: Standing, data: dict[str, Any]) -> Household:
    building = get_building(session, standing.org_id, data["building_id"])
    if not standing.keeps_households_of(building.id):
        raise Forbidden(
            "Households are kept by the committee and the building's leader.", slug="forbidden"
        )
    flags = domain.normalise_flags(data.get("flags") or [])
    household = Household(
        id=uuid.uuid4(),
        org_id=standing.org_id,
        building_id=building.id,
        unit=(data.get("unit") or "").strip(),
        room=data["room"].strip(),
        people=data["people"],
        flags=flags,
        vulnerable=domain.is_vulnerable(flags),
        note=data.get("note"),
        phone=data.get("phone"),
    )
    session.add(household)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "The building already has a household at that unit and room.",
            slug="household-exists",
        ) from None
    log.info("household %s added in building %s", household.id, building.id)
    return household


def change_household(
    session: Session, standing: Standing, household: Household, data: dict[str, Any]
) -> Household:
    if not standing.keeps_households_of(household.building_id):
        raise Forbidden(
            "Households are kept by the committee and the building's leader.", slug="forbidden"
        )
    if "building_id" in data and data["building_id"] != household.building_id:
        building = get_building(session, standing.org_id, data["building_id"])
        if not standing.keeps_households_of(building.id):
            raise Forbidden("That building's households are its leader's.", slug="forbidden")
        household.building_id = building.id
    for name in ("unit", "room"):
        if name in data:
            setattr(household, name, (data[name] or "").strip())
    for name in ("people", "note", "phone"):
        if name in data:
            setattr(household, name, data[name])
    if "flags" in data:
        household.flags = domain.normalise_flags(data["flags"] or [])
        household.vulnerable = domain.is_vulnerable(household.flags)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "The building already has a household at that unit and room.",
            slug="household-exists",
        ) from None
    return household


def remove_household(session: Session, standing: Standing, household: Household) -> None:
    """A household that moved away: its details and its cases' text go, what it was
    given stays counted."""
    if not standing.keeps_households_of(household.building_id):
        raise Forbidden(
            "Households are kept by the committee and the building's leader.", slug="forbidden"
        )
    _blank(household)
    cases.erase_household(session, household.id)


def _blank(household: Household) -> None:
    household.erased = True
    household.unit = ""
    household.room = f"~{household.id.hex[:15]}"
    household.flags = []
    household.note = None
    household.phone = None


def erase_community(session: Session, org_id: uuid.UUID) -> None:
    """The organisation's data erased (org.erased): households keep only their size and
    whether they were vulnerable, for the counts; cases keep no text; appointments and
    access records go."""
    for household in session.scalars(select(Household).where(Household.org_id == org_id)):
        _blank(household)
    cases.erase_community(session, org_id)
    session.execute(update(Appointment).where(Appointment.org_id == org_id).values(name=None))
    session.execute(delete(AccessRecord).where(AccessRecord.org_id == org_id))


def personal_data(session: Session, org_id: uuid.UUID) -> dict[str, Any]:
    """What an export of the organisation holds of residents: counts only."""
    households = list(
        session.scalars(
            select(Household).where(Household.org_id == org_id, Household.erased.is_(False))
        )
    )
    return {
        "households": len(households),
        "people": sum(h.people for h in households),
        "vulnerable_households": sum(1 for h in households if h.vulnerable),
    }
