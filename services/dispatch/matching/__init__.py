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

Objective. Two strict levels, then one weighed sum:

1. urgency-weighted quantity: every unit that can reach a critical need does,
   then high, then normal;
2. needed-by: among units of one urgency, the earlier needed-by day (lines
   without one come last);
3. fairness against distance, in kilometres per unit: a unit is worth
   ``fill_km / Q`` km to a need of ``Q`` units (all its lines of the item: a
   need split into lines gains nothing; what it already got counts), or, for a
   need that states its stock and daily use, ``days_km / (1 + d)`` at ``d`` days
   of supply, whatever its size (``fairness``); the plan minimises distance times
   quantity less that worth. Distances come from a provider: a function or a
   matrix (road distance or travel time from a routing service, a coordinator's
   table: ``geo.pairwise``, ``geo.table``), great-circle from coordinates by
   default, region reference points where a place has none. Region codes are
   optional and nothing assumes one country;
4. fewer shipments: not a term of the flow; lines at one place are matched as a
   group, and the split back to lines keeps each donor's lines together.

Why this order and these weights. Measured on real-world-shaped weekly batches
(``bench/allocation_quality.py``: 15 weeks, 31,000 requests, supply 6% of demand),
against a plain min-cost flow (most units, then least distance) and
first-come-first-served:

* fairness on the share filled, per need, completes small requests near a donor
  first; a request of one unit is never starved by rounding (tiers round up);
* ``fill_km`` is the trade-off between fill rates and shipments: each request
  served is at least one shipment. At the default of 50 km the mean fill over
  all requests is 1.5 times the plain flow's and small requests (under 10 units)
  are served three times as often, at the same unit-distance, with 1.5 times the
  plain flow's shipments per donor; 200 km gives a mean fill of 1.9 times for 1.9
  times the shipments, 1,000 km 2.5 times for 2.4 times;
* ``fairness_tiers`` above 1 spread supply over more needs before completing
  any: slightly more needs get something, at the cost of shipments;
* strict urgency costs distance wherever critical needs are far from supply;
  that is the rule of the design (``--urgent-share`` in the benchmark shows it).

Every allocation's ``Reason`` says why in figures and words (``describe``):
urgency, the need's fill and days of supply after it, the distance and whether
the donor is the nearest.

``match`` finds the exact optimum with OR-Tools min-cost flows, item by item, over
lines aggregated by place (``solver`` describes the model). It is deterministic
and does not depend on the order of its input: the same lines in any order give
the same plan. ``greedy`` is a first-come-first-served baseline under the same hard
rules. ``plan_of`` checks a plan edited by hand against every hard rule and bound
and gives its reasons (``edits``).
"""

from services.dispatch.matching.edits import BrokenRule, Planned, PlanRefused, plan_of
from services.dispatch.matching.geo import (
    REGION_POINTS,
    UNKNOWN_DISTANCE_KM,
    DistanceProvider,
    distance_km,
    pairwise,
    table,
)
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
    "BrokenRule",
    "DemandLine",
    "DistanceProvider",
    "Location",
    "MatchOptions",
    "Plan",
    "PlanRefused",
    "PlanStats",
    "Planned",
    "Reason",
    "SupplyLine",
    "Urgency",
    "distance_km",
    "greedy",
    "match",
    "pairwise",
    "plan_of",
    "table",
]
