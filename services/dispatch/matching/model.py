"""The data the matcher takes and gives: plain, immutable dataclasses.

Quantities are whole numbers of the item's base unit (see ``shared.catalog``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

Urgency = Literal["critical", "high", "normal"]

# Most urgent first; the position is the urgency's rank.
URGENCIES: tuple[Urgency, ...] = ("critical", "high", "normal")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a line is: an administrative region code (2, 4 or 6 digits, GB/T 2260)
    and, when known, coordinates in degrees. Without coordinates the region's
    reference point stands in (see ``geo``)."""

    region: str
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class SupplyLine:
    """Donated supply available to allocate.

    ``standard`` is the standard the goods meet (``None``: not stated).
    ``best_before`` makes the line perishable: it may only go where it arrives on or
    before that day. ``restrict_regions`` (region code prefixes) and
    ``restrict_recipient_kinds`` are the donor's restrictions; empty means none.
    """

    id: str
    item: str
    standard: str | None
    quantity: int
    location: Location
    donor_id: str
    best_before: date | None = None
    restrict_regions: tuple[str, ...] = ()
    restrict_recipient_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DemandLine:
    """One line of a recipient's need.

    ``standards`` lists the acceptable standards; empty means any, including
    supply that states none. ``needed_by`` is soft: it ranks lines, it never
    forbids a delivery. Only lines that are ``verified`` and ``open`` are matched;
    the caller normally passes only those, the flags let it pass others too.
    """

    id: str
    item: str
    standards: tuple[str, ...]
    quantity: int
    location: Location
    recipient_id: str
    recipient_kind: str
    urgency: Urgency
    needed_by: date | None = None
    verified: bool = True
    open: bool = True


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an allocation is in the plan.

    ``urgency`` is the demand line's. ``fairness_tier`` (1-based) is the tier of the
    demand line that the allocation's last unit fills: with the default four tiers,
    1 means the line is then at most 25% filled, 4 that it is filled beyond 75%.
    ``distance_km`` is the great-circle distance between the two lines' locations.
    """

    urgency: Urgency
    fairness_tier: int
    distance_km: float


@dataclass(frozen=True, slots=True)
class Allocation:
    supply_id: str
    demand_id: str
    item: str
    quantity: int
    reason: Reason


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """Tunable assumptions of the matcher.

    ``speed_km_per_day`` and ``handling_days`` give a perishable's transport time:
    a line at ``d`` km arrives ``handling_days + d / speed_km_per_day`` days after
    ``today``. ``fairness_tiers`` splits each demand line into that many tiers of
    (nearly) equal size, earlier tiers worth more (see the package docs).
    ``unknown_distance_km`` is the distance assumed when a location can be placed
    neither by coordinates nor by its region code.
    """

    speed_km_per_day: float = 500.0
    handling_days: float = 1.0
    fairness_tiers: int = 4
    unknown_distance_km: float = 3000.0

    def __post_init__(self) -> None:
        if not (self.speed_km_per_day > 0 and math.isfinite(self.speed_km_per_day)):
            raise ValueError("speed_km_per_day must be a positive number")
        if not (self.handling_days >= 0 and math.isfinite(self.handling_days)):
            raise ValueError("handling_days must be a non-negative number")
        if self.fairness_tiers < 1:
            raise ValueError("fairness_tiers must be at least 1")
        if not (self.unknown_distance_km >= 0 and math.isfinite(self.unknown_distance_km)):
            raise ValueError("unknown_distance_km must be a non-negative number")


DEFAULT_OPTIONS = MatchOptions()


@dataclass(frozen=True, slots=True)
class PlanStats:
    """Figures about a plan and how it was found.

    ``supply_groups``, ``demand_groups``, ``arcs`` and ``solves`` describe the flow
    model (zero for the greedy baseline); ``seconds`` is wall time and takes no part
    in comparing plans.
    """

    supply_lines: int
    demand_lines: int
    ignored_demand_lines: int
    items: int
    supply_groups: int
    demand_groups: int
    arcs: int
    solves: int
    delivered: int
    delivered_by_urgency: dict[str, int]
    seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Plan:
    """A matching plan.

    ``allocations`` are sorted by (item, demand id, supply id), at most one per
    pair of lines. ``unmet`` maps each matched demand line that is not fully met to
    its missing quantity; fully met lines are absent, as are ignored lines (not
    verified or not open).
    """

    allocations: tuple[Allocation, ...]
    unmet: dict[str, int]
    stats: PlanStats

    def delivered_by_demand(self) -> dict[str, int]:
        """Quantity allocated to each demand line that gets any."""
        out: dict[str, int] = {}
        for a in self.allocations:
            out[a.demand_id] = out.get(a.demand_id, 0) + a.quantity
        return out

    def delivered_by_supply(self) -> dict[str, int]:
        """Quantity allocated from each supply line that gives any."""
        out: dict[str, int] = {}
        for a in self.allocations:
            out[a.supply_id] = out.get(a.supply_id, 0) + a.quantity
        return out
