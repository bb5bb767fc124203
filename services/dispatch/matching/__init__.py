"""Matching donated supply to needs: which supply line goes to which demand line.

Pure Python on numpy and OR-Tools; no web framework, task queue or database. The
caller loads the lines, calls ``match`` and stores the plan.

    from services.dispatch.matching import DemandLine, Location, SupplyLine, match

    plan = match(supply_lines, demand_lines, today=date.today())
    for a in plan.allocations:
        ...  # a.supply_id, a.demand_id, a.quantity, a.reason
    plan.unmet  # {demand line id: quantity still missing}

Hard rules (``rules``): same item; an acceptable standard; the donor's region and
recipient-kind restrictions; perishables arrive by their best-before day at
``MatchOptions.speed_km_per_day`` plus ``handling_days``; only verified, open
demand lines take part.

Objective, in lexicographic order:

1. urgency-weighted quantity: every unit that can reach a critical need does,
   then high, then normal;
2. fairness: each demand line is split into ``fairness_tiers`` equal tiers (25%
   each by default) worth less and less, so scarce supply reaches the first tier
   of every need it can before any need gets its second;
3. needed-by: among otherwise equal units, the earlier needed-by day (lines
   without one come last);
4. distance times quantity (great-circle km, ``geo``);
5. fewer shipments: not optimised; lines at one place are matched as a group, and
   the split back to lines keeps each donor's lines together (see ``solver``).

``match`` finds the exact optimum of 1-4 with OR-Tools min-cost flows, item by
item, over lines aggregated by place (``solver`` describes the model). It is
deterministic and does not depend on the order of its input: the same lines in
any order give the same plan. ``greedy`` is a first-come-first-served baseline
under the same hard rules.
"""

from services.dispatch.matching.geo import REGION_POINTS, UNKNOWN_DISTANCE_KM, distance_km
from services.dispatch.matching.greedy import greedy
from services.dispatch.matching.model import (
    DEFAULT_OPTIONS,
    URGENCIES,
    Allocation,
    DemandLine,
    Location,
    MatchOptions,
    Plan,
    PlanStats,
    Reason,
    SupplyLine,
    Urgency,
)
from services.dispatch.matching.solver import match

__all__ = [
    "DEFAULT_OPTIONS",
    "REGION_POINTS",
    "UNKNOWN_DISTANCE_KM",
    "URGENCIES",
    "Allocation",
    "DemandLine",
    "Location",
    "MatchOptions",
    "Plan",
    "PlanStats",
    "Reason",
    "SupplyLine",
    "Urgency",
    "distance_km",
    "greedy",
    "match",
]
