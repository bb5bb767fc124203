"""The hard rules: which supply line may serve which demand line.

A supply line may serve a demand line only if

* both are for the same item;
* the demand line accepts the supply's standard: its list of acceptable standards
  is empty (anything goes, even supply that states no standard) or names it;
* the donor's restrictions allow it: the demand's region code starts with one of
  the supply's ``restrict_regions`` prefixes (if any), and the recipient's kind is
  one of its ``restrict_recipient_kinds`` (if any);
* a perishable arrives in time: ``handling_days + distance / speed_km_per_day``
  days after ``today`` is no later than its ``best_before`` day;
* the demand line is verified and open (other lines are ignored altogether).

``needed_by`` is soft and never forbids a pair. The solver and the greedy baseline
both go through ``compatibility`` so they apply exactly the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from services.dispatch.matching.geo import DistanceProvider, distance_matrix
from services.dispatch.matching.model import (
    URGENCIES,
    DemandLine,
    Location,
    MatchOptions,
    SupplyLine,
)

# What of a supply line the rules look at, besides its location:
# (standard, best_before, restrict_regions, restrict_recipient_kinds), the tuples
# sorted and without duplicates.
SupplyTerms = tuple[str | None, date | None, tuple[str, ...], tuple[str, ...]]
# What of a demand line they look at, besides its location: (accepted standards,
# None for any; recipient kind).
DemandTerms = tuple[tuple[str, ...] | None, str]


def reach_km(best_before: date | None, today: date, options: MatchOptions) -> float:
    """How far a line may travel and still arrive by its best-before day."""
    if best_before is None:
        return math.inf
    days_left = (best_before - today).days
    return (days_left - options.handling_days) * options.speed_km_per_day


def standard_accepted(standard: str | None, accepted: Iterable[str] | None) -> bool:
    if accepted is None:
        return True
    return standard is not None and standard in accepted


def region_allowed(prefixes: Sequence[str], region: str | None) -> bool:
    return not prefixes or (region is not None and region.startswith(tuple(prefixes)))


def kind_allowed(kinds: Sequence[str], kind: str) -> bool:
    return not kinds or kind in kinds


def _canonical(values: tuple[str, ...]) -> tuple[str, ...]:
    return values if len(values) < 2 else tuple(sorted(set(values)))


def supply_terms(line: SupplyLine) -> SupplyTerms:
    return supply_terms_of(
        line.standard, line.best_before, line.restrict_regions, line.restrict_recipient_kinds
    )


def supply_terms_of(
    standard: str | None,
    best_before: date | None,
    regions: Iterable[str],
    kinds: Iterable[str],
) -> SupplyTerms:
    return (standard, best_before, _canonical(tuple(regions)), _canonical(tuple(kinds)))


def demand_terms(line: DemandLine) -> DemandTerms:
    accepted = tuple(sorted(set(line.standards))) if line.standards else None
    return (accepted, line.recipient_kind)


def compatibility(
    supply: Sequence[SupplyTerms],
    demand: Sequence[DemandTerms],
    demand_regions: Sequence[str | None],
    dist_km: npt.NDArray[np.float64],
    today: date,
    options: MatchOptions,
) -> npt.NDArray[np.bool_]:
    """Which supply (rows) may serve which demand (columns) of one item.

    ``dist_km[i, j]`` is the distance between supply ``i`` and demand ``j``;
    ``demand_regions[j]`` is demand ``j``'s region code. Each rule is evaluated
    once per distinct combination of terms, then spread over the matrix.
    """
    n_s, n_d = len(supply), len(demand)
    ok = np.ones((n_s, n_d), dtype=bool)
    if n_s == 0 or n_d == 0:
        return ok

    def index(values: Iterable[object]) -> tuple[list[object], npt.NDArray[np.intp]]:
        seen: dict[object, int] = {}
        idx = [seen.setdefault(v, len(seen)) for v in values]
        return list(seen), np.array(idx, dtype=np.intp)

    standards, s_std = index(t[0] for t in supply)
    accepts, d_acc = index(t[0] for t in demand)
    if any(a is not None for a in accepts):
        table = np.array(
            [[standard_accepted(s, a) for s in standards] for a in accepts],  # type: ignore[arg-type]
            dtype=np.bool_,
        )
        ok &= table[d_acc[None, :], s_std[:, None]]

    region_sets, s_reg = index(t[2] for t in supply)
    if any(region_sets):
        regions, d_reg = index(demand_regions)
        table = np.array(
            [[region_allowed(p, r) for r in regions] for p in region_sets],  # type: ignore[arg-type]
            dtype=np.bool_,
        )
        ok &= table[s_reg[:, None], d_reg[None, :]]

    kind_sets, s_kind = index(t[3] for t in supply)
    if any(kind_sets):
        kinds, d_kind = index(t[1] for t in demand)
        table = np.array(
            [[kind_allowed(ks, k) for k in kinds] for ks in kind_sets],  # type: ignore[arg-type]
            dtype=np.bool_,
        )
        ok &= table[s_kind[:, None], d_kind[None, :]]

    if any(t[1] is not None for t in supply):
        reach = np.array([reach_km(t[1], today, options) for t in supply], dtype=np.float64)
        ok &= dist_km <= reach[:, None]
    return ok


@dataclass(slots=True)
class Instance:
    """Validated input: lines sorted by id, locations indexed, distances computed.

    ``supply`` holds the lines with a positive quantity, ``demand`` the verified,
    open lines (``demand_in_input_order`` the same, as given). ``s_loc[i]`` and
    ``d_loc[j]`` index rows and columns of ``dist_km``, the distances between the
    distinct supply and demand locations.
    """

    supply: list[SupplyLine]
    demand: list[DemandLine]
    demand_in_input_order: list[DemandLine]
    ignored_demand: int
    s_loc: list[int]
    d_loc: list[int]
    d_loc_regions: list[str | None]
    dist_km: npt.NDArray[np.float64]
    _region_tables: dict[tuple[str, ...], npt.NDArray[np.bool_]] = field(default_factory=dict)

    def regions_allowed(self, prefixes: tuple[str, ...]) -> npt.NDArray[np.bool_]:
        """Per demand location (column of ``dist_km``): may a supply line restricted
        to ``prefixes`` go there."""
        table = self._region_tables.get(prefixes)
        if table is None:
            table = np.array(
                [region_allowed(prefixes, r) for r in self.d_loc_regions], dtype=np.bool_
            )
            self._region_tables[prefixes] = table
        return table

    def items(self) -> list[tuple[str, list[int], list[int]]]:
        """(item, indexes into ``supply``, indexes into ``demand``) for every item
        with lines on both sides, in item order."""
        s_by: dict[str, list[int]] = {}
        d_by: dict[str, list[int]] = {}
        for i, s in enumerate(self.supply):
            s_by.setdefault(s.item, []).append(i)
        for j, d in enumerate(self.demand):
            d_by.setdefault(d.item, []).append(j)
        return [(item, s_by[item], d_by[item]) for item in sorted(s_by.keys() & d_by.keys())]


def _check_quantity(kind: str, line_id: str, quantity: object, name: str = "quantity") -> None:
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 0:
        raise ValueError(f"{kind} line {line_id!r}: {name} must be a non-negative integer")


def _check_location(kind: str, line_id: str, location: Location) -> None:
    if not isinstance(location, Location):
        raise ValueError(f"{kind} line {line_id!r}: location must be a Location")
    if location.region is not None and not isinstance(location.region, str):
        raise ValueError(f"{kind} line {line_id!r}: region must be a string or None")
    if (location.lat is None) != (location.lon is None):
        raise ValueError(f"{kind} line {line_id!r}: give both lat and lon, or neither")
    if location.lat is not None and location.lon is not None:
        lat, lon = float(location.lat), float(location.lon)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"{kind} line {line_id!r}: lat/lon out of range")


def prepare(
    supply: Iterable[SupplyLine],
    demand: Iterable[DemandLine],
    options: MatchOptions,
    distances: DistanceProvider | None = None,
) -> Instance:
    """Check the lines and index them; raises ``ValueError`` on bad input, also
    when the distance provider answers a distance that is negative or not a
    number."""
    supply = list(supply)
    demand = list(demand)
    if not _plainly_valid(supply, demand):
        _check_lines(supply, demand)

    active = [d for d in demand if d.verified and d.open]
    kept_supply = sorted((s for s in supply if s.quantity > 0), key=attrgetter("id"))
    kept_demand = sorted(active, key=attrgetter("id"))

    s_locs: dict[Location, int] = {}
    d_locs: dict[Location, int] = {}
    s_loc = [s_locs.setdefault(s.location, len(s_locs)) for s in kept_supply]
    d_loc = [d_locs.setdefault(d.location, len(d_locs)) for d in kept_demand]
    provider = distances or partial(distance_matrix, unknown_km=options.unknown_distance_km)
    dist = np.asarray(provider(list(s_locs), list(d_locs)), dtype=np.float64)
    if dist.shape != (len(s_locs), len(d_locs)):
        raise ValueError(
            f"the distance provider answered a {dist.shape} matrix for "
            f"{len(s_locs)} supply and {len(d_locs)} demand places"
        )
    if dist.size and not (np.isfinite(dist).all() and (dist >= 0).all()):
        raise ValueError("the distance provider answered a negative or missing distance")
    return Instance(
        supply=kept_supply,
        demand=kept_demand,
        demand_in_input_order=active,
        ignored_demand=len(demand) - len(active),
        s_loc=s_loc,
        d_loc=d_loc,
        d_loc_regions=[loc.region for loc in d_locs],
        dist_km=dist,
    )


def _plainly_valid(supply: list[SupplyLine], demand: list[DemandLine]) -> bool:
    """Whether the lines pass every check of ``_check_lines``, tested in bulk (the
    usual case, where checking line by line costs more than the rest of the
    preparation). False only means that ``_check_lines`` must look closer."""
    if len({s.id for s in supply}) != len(supply) or len({d.id for d in demand}) != len(demand):
        return False
    quantities = [s.quantity for s in supply] + [d.quantity for d in demand]
    if not all(type(q) is int and q >= 0 for q in quantities):
        return False
    if not all(d.urgency in URGENCIES for d in demand):
        return False
    stated = [v for d in demand for v in (d.stock, d.daily_use) if v is not None]
    if not all(type(v) is int and v >= 0 for v in stated):
        return False
    locations = [s.location for s in supply] + [d.location for d in demand]
    if not all(type(loc) is Location for loc in locations):
        return False
    try:
        distinct = set(locations)
    except TypeError:
        return False
    for loc in distinct:
        try:
            _check_location("", "", loc)
        except (ValueError, TypeError):
            return False
    return True


def _check_lines(supply: list[SupplyLine], demand: list[DemandLine]) -> None:
    """Check the lines one by one; raises ``ValueError`` naming the first bad one."""
    seen: set[str] = set()
    for s in supply:
        if s.id in seen:
            raise ValueError(f"supply line id {s.id!r} appears twice")
        seen.add(s.id)
        _check_quantity("supply", s.id, s.quantity)
        _check_location("supply", s.id, s.location)
    seen = set()
    for d in demand:
        if d.id in seen:
            raise ValueError(f"demand line id {d.id!r} appears twice")
        seen.add(d.id)
        _check_quantity("demand", d.id, d.quantity)
        _check_location("demand", d.id, d.location)
        if d.urgency not in URGENCIES:
            raise ValueError(f"demand line {d.id!r}: urgency must be one of {URGENCIES}")
        for name in ("stock", "daily_use"):
            value = getattr(d, name)
            if value is not None:
                _check_quantity("demand", d.id, value, name)
