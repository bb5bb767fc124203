"""Who may see and change what inside a community, and what a household is.

A member of the community organisation is on its committee unless the committee has
appointed them to a narrower role: a building leader sees and keeps the households of
their buildings, an area leader those of every building of the area, a volunteer the
deliveries of their buildings, a social worker their own cases; a case supervisor
reads every case's notes. A coordinator reads residents' data only with a reason,
which is recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

# Flags a community may record on a household; any of them makes it vulnerable.
FLAGS = (
    "elderly_alone",
    "chronic_medicine",
    "disability",
    "pregnancy",
    "infants",
    "medical_family",
    "quarantine",
)

ROLES = (
    "committee",
    "building_leader",
    "area_leader",
    "volunteer",
    "social_worker",
    "case_supervisor",
)
# Roles held for a building, and for an area.
BUILDING_ROLES = ("building_leader", "volunteer")
AREA_ROLES = ("area_leader",)

# A coordinator's reason to read residents' data is at least this long.
MIN_REASON = 10


def is_vulnerable(flags: Iterable[str]) -> bool:
    """A household with any recorded flag is served first when the rule says so."""
    return any(flag in FLAGS for flag in flags)


def normalise_flags(flags: Iterable[str]) -> list[str]:
    """The flags in the catalogue's order, each once."""
    wanted = set(flags)
    return [flag for flag in FLAGS if flag in wanted]


@dataclass(frozen=True)
class Standing:
    """What one caller may do in one community."""

    org_id: uuid.UUID
    committee: bool = False
    # A coordinator reading with a recorded reason: sees, never changes.
    coordinator: bool = False
    # Buildings whose households the caller keeps (leader) or delivers to (volunteer).
    leads: frozenset[uuid.UUID] = field(default_factory=frozenset)
    delivers: frozenset[uuid.UUID] = field(default_factory=frozenset)
    social_worker: bool = False
    case_supervisor: bool = False
    user_id: uuid.UUID | None = None

    @property
    def sees_everything(self) -> bool:
        return self.committee or self.coordinator

    @property
    def roles(self) -> list[str]:
        named = [
            ("committee", self.committee),
            ("coordinator", self.coordinator),
            ("building_leader", bool(self.leads)),
            ("volunteer", bool(self.delivers)),
            ("social_worker", self.social_worker),
            ("case_supervisor", self.case_supervisor),
        ]
        return [name for name, held in named if held]

    def sees_households_of(self, building_id: uuid.UUID) -> bool:
        return self.sees_everything or building_id in self.leads

    def keeps_households_of(self, building_id: uuid.UUID) -> bool:
        return self.committee or building_id in self.leads

    def sees_deliveries_of(self, building_id: uuid.UUID) -> bool:
        return self.sees_households_of(building_id) or building_id in self.delivers

    def buildings_seen(self) -> frozenset[uuid.UUID] | None:
        """The buildings whose households the caller sees; None for all of them."""
        return None if self.sees_everything else self.leads


def standing_from(
    org_id: uuid.UUID,
    user_id: uuid.UUID | None,
    appointments: Iterable[tuple[str, uuid.UUID | None]],
    buildings_of_area: dict[str, set[uuid.UUID]] | None = None,
    areas: Iterable[str] = (),
) -> Standing:
    """The standing of a member of the community from their appointments, each a role
    and the building it is for: none at all (or ``committee``) is the committee's."""
    held = list(appointments)
    social_worker = any(role == "social_worker" for role, _ in held)
    case_supervisor = any(role == "case_supervisor" for role, _ in held)
    if not held or any(role == "committee" for role, _ in held):
        # A committee member may also be one of its social workers or case supervisors.
        return Standing(
            org_id=org_id,
            committee=True,
            user_id=user_id,
            social_worker=social_worker,
            case_supervisor=case_supervisor,
        )
    leads = {b for role, b in held if role == "building_leader" and b is not None}
    for area in areas:
        leads |= (buildings_of_area or {}).get(area, set())
    return Standing(
        org_id=org_id,
        user_id=user_id,
        leads=frozenset(leads),
        delivers=frozenset(b for role, b in held if role == "volunteer" and b is not None),
        social_worker=social_worker,
        case_supervisor=case_supervisor,
    )
