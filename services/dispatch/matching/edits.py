"""Plans written or changed by hand: a coordinator edits a preview before approving it.

``plan_of`` takes the allocations as a person left them, checks every hard rule of the
matcher (same item, an accepted standard, the donor's region and recipient-kind
restrictions, perishables arriving in time, only verified and open needs) and the
bounds (no supply line gives, no demand line gets, more than it has or asks), and
gives the plan with its reasons and unmet demand, as ``match`` would. A plan that
breaks a rule is refused as a whole, with every broken rule named.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from services.dispatch.matching.geo import DistanceProvider
from services.dispatch.matching.model import (
    DEFAULT_OPTIONS,
    DemandLine,
    MatchOptions,
    Plan,
    SupplyLine,
)
from services.dispatch.matching.rules import (
    Instance,
    compatibility,
    demand_terms,
    prepare,
    supply_terms,
)
from services.dispatch.matching.solver import build_plan


@dataclass(frozen=True, slots=True)
class Planned:
    """One allocation as a person wrote it: ``quantity`` of supply line ``supply_id``
    to demand line ``demand_id``."""

    supply_id: str
    demand_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class BrokenRule:
    """A broken rule: ``index`` of the allocation it is about (``None`` for a bound
    broken by several together, whose indexes are ``involved``) and what is wrong,
    in words."""

    index: int | None
    message: str
    involved: tuple[int, ...] = ()


class PlanRefused(ValueError):
    """The plan breaks a hard rule or a bound; ``problems`` names each."""

    def __init__(self, problems: Sequence[BrokenRule]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))


def plan_of(
    allocations: Iterable[Planned],
    supply: Iterable[SupplyLine],
    demand: Iterable[DemandLine],
    *,
    today: date,
    options: MatchOptions = DEFAULT_OPTIONS,
    distances: DistanceProvider | None = None,
) -> Plan:
    """The plan of the given allocations, or ``PlanRefused`` naming every broken rule.

    Allocations of the same pair of lines add up; a quantity of 0 is left out."""
    started = time.perf_counter()
    planned = list(allocations)
    supply_lines = list(supply)
    demand_lines = list(demand)
    inst = prepare(supply_lines, demand_lines, options, distances)
    s_index = {s.id: i for i, s in enumerate(inst.supply)}
    d_index = {d.id: j for j, d in enumerate(inst.demand)}
    known_supply = {s.id for s in supply_lines}
    known_demand = {d.id: d for d in demand_lines}
    problems: list[BrokenRule] = []
    pairs: list[tuple[int, int, int]] = []
    kept: list[int] = []
    for n, a in enumerate(planned):
        if not isinstance(a.quantity, int) or isinstance(a.quantity, bool) or a.quantity < 0:
            problems.append(BrokenRule(n, "the quantity must be a whole number, 0 or more"))
            continue
        if a.quantity == 0:
            continue
        i, j = s_index.get(a.supply_id), d_index.get(a.demand_id)
        if i is None:
            why = (
                "has nothing left" if a.supply_id in known_supply else "is not in the plan's supply"
            )
            problems.append(BrokenRule(n, f"supply line {a.supply_id} {why}"))
        if j is None:
            d = known_demand.get(a.demand_id)
            why = "is not in the plan's demand" if d is None else "is not verified and open"
            problems.append(BrokenRule(n, f"demand line {a.demand_id} {why}"))
        if i is None or j is None:
            continue
        broken = _broken_rule(inst, i, j, today, options)
        if broken:
            problems.append(BrokenRule(n, broken))
            continue
        pairs.append((i, j, a.quantity))
        kept.append(n)

    # The bounds: no line gives or gets more than it has or asks, whatever the
    # allocations that add up to it.
    sides = (
        (
            [s.quantity for s in inst.supply],
            [s.id for s in inst.supply],
            0,
            "supply line {id} would give {total} of its {quantity}",
        ),
        (
            [d.quantity for d in inst.demand],
            [d.id for d in inst.demand],
            1,
            "demand line {id} would get {total} of the {quantity} it asks",
        ),
    )
    for quantities, ids, side, message in sides:
        total = np.zeros(len(quantities), dtype=np.int64)
        involved: dict[int, list[int]] = {}
        for n, pair in zip(kept, pairs, strict=True):
            total[pair[side]] += pair[2]
            involved.setdefault(pair[side], []).append(n)
        for k in np.flatnonzero(total > quantities).tolist():
            text = message.format(id=ids[k], total=int(total[k]), quantity=quantities[k])
            problems.append(BrokenRule(None, text, tuple(involved[k])))
    if problems:
        raise PlanRefused(problems)
    s_arr, d_arr, q_arr = (np.array([p[k] for p in pairs], dtype=np.int64) for k in range(3))
    return build_plan(inst, s_arr, d_arr, q_arr, options, None, started)


def _broken_rule(inst: Instance, i: int, j: int, today: date, options: MatchOptions) -> str | None:
    """Which hard rule, if any, forbids supply line ``i`` to serve demand line ``j``."""
    s, d = inst.supply[i], inst.demand[j]
    if s.item != d.item:
        return f"supply line {s.id} is {s.item}, demand line {d.id} asks for {d.item}"
    dist = inst.dist_km[inst.s_loc[i] : inst.s_loc[i] + 1, inst.d_loc[j] : inst.d_loc[j] + 1]
    if compatibility(
        [supply_terms(s)], [demand_terms(d)], [d.location.region], dist, today, options
    )[0, 0]:
        return None
    terms = demand_terms(d)
    if terms[0] is not None and s.standard not in terms[0]:
        stated = s.standard or "no standard"
        return f"demand line {d.id} accepts {', '.join(terms[0])}, not {stated}"
    if s.restrict_regions and not (
        d.location.region and d.location.region.startswith(tuple(s.restrict_regions))
    ):
        return f"the donor of supply line {s.id} gives only to {', '.join(s.restrict_regions)}"
    if s.restrict_recipient_kinds and d.recipient_kind not in s.restrict_recipient_kinds:
        return (
            f"the donor of supply line {s.id} gives only to "
            f"{', '.join(s.restrict_recipient_kinds)}, not to a {d.recipient_kind}"
        )
    return f"supply line {s.id} would spoil before it reaches demand line {d.id}"
