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
    """Where a line is: coordinates in degrees when known, and optionally a region
    code. Without coordinates the region's reference point stands in (``geo`` knows
    China's GB/T 2260 codes); a location that neither places is at
    ``MatchOptions.unknown_distance_km`` from everything. Region codes also decide
    donors' region restrictions (prefixes); any country's codes work there."""

    region: str | None = None
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

    ``need_id`` names the need (request) the line belongs to; lines of one need and
    item share its fairness, so splitting a request into lines gains nothing
    (``None``: the line is a need of its own). ``requested`` is what the line asked
    for at first, where ``quantity`` is only what is still missing (the share
    filled counts what it already got). ``stock`` (on hand) and
    ``daily_use``, in the item's base unit, state the need's days of supply; where
    a need's lines state them (summed over its lines of the item), fairness is on
    days of supply instead of the share of the request filled.
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
    need_id: str | None = None
    requested: int | None = None
    stock: int | None = None
    daily_use: int | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an allocation is in the plan, in figures a person can read.

    ``urgency`` is the demand line's. ``need_fill`` is the share of the need (its
    lines of this item) filled once this allocation and the nearer ones to it are
    counted, from 0 to 1; ``days_of_supply`` the need's days of supply then, where
    it states its stock and daily use. ``distance_km`` is the distance between the
    two lines' locations (from the distance provider), and ``nearest`` whether no
    other supply line of the plan that serves this need is nearer (not whether a
    nearer donor exists: that one's supply may have gone to a need it served better).
    """

    urgency: Urgency
    distance_km: float
    need_fill: float
    days_of_supply: float | None = None
    nearest: bool = True

    def describe(self) -> str:
        """The reason in words, e.g. "critical, 1.5 days of supply after it; brings
        this need to 60%; the nearest donor in this plan, 12 km"."""
        parts: list[str] = [self.urgency]
        if self.days_of_supply is not None:
            parts[0] += f", {self.days_of_supply:.1f} days of supply after it"
        share = f"{self.need_fill:.0%}" if self.need_fill >= 0.005 else "under 1%"
        parts.append(f"brings this need to {share}")
        where = "the nearest donor in this plan" if self.nearest else "a farther donor"
        parts.append(f"{where}, {self.distance_km:.0f} km")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Allocation:
    supply_id: str
    demand_id: str
    item: str
    quantity: int
    reason: Reason


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """Tunable assumptions and trade-offs of the matcher (see the package docs).

    ``speed_km_per_day`` and ``handling_days`` give a perishable's transport time:
    a line at ``d`` km arrives ``handling_days + d / speed_km_per_day`` days after
    ``today``. ``unknown_distance_km`` is the distance assumed when a location can
    be placed neither by coordinates nor by its region code.

    Fairness, weighed against distance in kilometres per unit:

    * ``fill_km``: filling a whole need is worth sending its units that much
      farther, so a unit that fills the share ``1/Q`` of a need of ``Q`` units is
      worth ``fill_km / Q`` km. Small requests are completed first where supply is
      near enough; a request of one unit is worth ``fill_km`` km. 0: distance alone.
    * ``fairness_tiers``: with more than one, a need's fill is cut into that many
      tiers (rounded up, so a one-unit need has a first tier), the first worth the
      most (weights ``T, T-1, ..., 1`` averaging 1), which spreads supply over more
      needs before completing any.
    * ``days_km`` and ``days_horizon``: for a need stating stock and daily use, a
      unit that raises its days of supply from ``d`` (in whole days) is worth
      ``days_km / (1 + d)`` km whatever the need's size, so scarce supply lifts the
      needs with the fewest days first (to within a day); nothing beyond
      ``days_horizon`` days counts.
    """

    speed_km_per_day: float = 500.0
    handling_days: float = 1.0
    unknown_distance_km: float = 3000.0
    fill_km: float = 50.0
    fairness_tiers: int = 1
    days_km: float = 10.0
    days_horizon: int = 30

    def __post_init__(self) -> None:
        if not (self.speed_km_per_day > 0 and math.isfinite(self.speed_km_per_day)):
            raise ValueError("speed_km_per_day must be a positive number")
        if not (self.handling_days >= 0 and math.isfinite(self.handling_days)):
            raise ValueError("handling_days must be a non-negative number")
        if not (self.unknown_distance_km >= 0 and math.isfinite(self.unknown_distance_km)):
            raise ValueError("unknown_distance_km must be a non-negative number")
        if not (0 <= self.fill_km <= 100_000 and math.isfinite(self.fill_km)):
            raise ValueError("fill_km must be a number from 0 to 100000")
        if not 1 <= self.fairness_tiers <= 100:
            raise ValueError("fairness_tiers must be from 1 to 100")
        if not (0 <= self.days_km <= 100_000 and math.isfinite(self.days_km)):
            raise ValueError("days_km must be a number from 0 to 100000")
        if not 1 <= self.days_horizon <= 365:
            raise ValueError("days_horizon must be from 1 to 365")


DEFAULT_OPTIONS = MatchOptions()


@dataclass(frozen=True, slots=True)
class PlanStats:
    """Figures about a plan and how it was found.

    ``supply_groups``, ``demand_groups``, ``arcs`` and ``solves`` describe the flow
    model (zero for the greedy baseline); ``delivered`` is the quantity planned per
    item and urgency, in the item's base unit (quantities of different items are
    never added up); ``seconds`` is wall time and takes no part in comparing plans.
    """

    supply_lines: int
    demand_lines: int
    ignored_demand_lines: int
    items: int
    supply_groups: int
    demand_groups: int
    arcs: int
    solves: int
    delivered: dict[str, dict[str, int]]
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
