"""How good are the plans, over weeks of real-world-shaped donations and requests?

Reproducible synthetic instances shaped like the requests and donations of a 2020 PPE
donation platform: 15 weekly batches, about 1,700 donor lines and 31,000 request lines
over 5 items, request sizes heavy-tailed (log-normal, 1 to 1,000,000 units, many under
10), total supply about 6% of total demand, donors and recipients spread over a
country-sized area and clustered in cities (a city's share falls with its rank). Each
week's new requests and donations join what is still open; supply waits until it is
shipped, requests stay open until filled. One in ten requests is posted as several
lines of one need.

Each strategy runs the same weeks on the same instance:

* ``fcfs``: first come, first served (``matching.greedy``): requests in the order
  posted, each from the nearest supply with stock;
* ``plain flow``: a plain min-cost flow: as many units shipped as can be, then the
  least unit-distance (``match`` with no urgency, needed-by or fill weight);
* ``aidlink``: ``match`` with the library's defaults, and beside it a few settings of
  ``MatchOptions`` a coordinator may choose.

and the benchmark prints, for the whole period:

* fill (all): mean over requests of delivered / requested (0 for unserved);
* fill (served): the same over requests that got anything;
* small served: share of requests under 10 units that got anything;
* shipments/donor: distinct (week, donor, recipient) per (week, donor) that shipped;
* unit km: kilometres per unit delivered;
* wait days: mean days a delivered unit of supply waited before it shipped;
* seconds: time spent in the matcher over all weeks.

Target (issue: fair allocation): aidlink's defaults beat both baselines on both fill
rates at once, stay within 5% of the plain flow on unit km, keep shipments per donor
at most 1.5 times the plain flow's, and equal it on waiting days. The figures are
printed next to the baselines' measured in the same run, with the ratios; nothing
here asserts.

The days-of-supply variant (``--days``) gives hospitals stock on hand and a daily use
(their request covers 10 to 30 days; stock 0 to 7 days) and prints, week by week
averaged, the lowest days of supply among the critical needs that state them, before
the week's plan and after it.

    .venv/bin/python -m bench.allocation_quality
    .venv/bin/python -m bench.allocation_quality --weeks 15 --seed 2020 --days
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from services.dispatch.matching import (
    DemandLine,
    Location,
    MatchOptions,
    Plan,
    SupplyLine,
    greedy,
    match,
)

START = date(2020, 2, 3)
ITEMS = ("mask", "gloves_exam", "protective_suit", "face_shield", "hand_sanitiser")
ITEM_SHARE = (0.40, 0.20, 0.15, 0.15, 0.10)
KINDS = (("hospital", 0.55), ("community_committee", 0.30), ("care_home", 0.15))
URGENCY_SHARE = (("critical", 0.10), ("high", 0.30), ("normal", 0.60))
SUPPLY_RATIO = 0.06


@dataclass(frozen=True, slots=True)
class Week:
    supply: list[SupplyLine]
    demand: list[DemandLine]


def make_weeks(
    seed: int, weeks: int, donor_lines: int, request_lines: int, days: bool, urgent: float
) -> list[Week]:
    """The weekly batches of new donor and request lines."""
    rng = random.Random(seed)
    cities = [
        (rng.uniform(21.0, 44.0), rng.uniform(101.0, 122.0)) for _ in range(60)
    ]  # about 2,500 x 2,100 km
    weights = [1 / (rank + 1) for rank in range(len(cities))]

    def place() -> Location:
        lat, lon = rng.choices(cities, weights)[0]
        return Location(
            lat=round(lat + rng.gauss(0, 0.12), 4), lon=round(lon + rng.gauss(0, 0.12), 4)
        )

    donors = [(f"donor-{n:04d}", place()) for n in range(450)]
    recipients = [
        (f"org-{n:05d}", place(), rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0])
        for n in range(7000)
    ]
    out: list[Week] = []
    request_no = 0
    for week in range(weeks):
        n_requests = round(request_lines / weeks * rng.uniform(0.7, 1.3))
        demand: list[DemandLine] = []
        asked = dict.fromkeys(ITEMS, 0)
        while len(demand) < n_requests:
            request_no += 1
            org, loc, kind = rng.choice(recipients)
            item = rng.choices(ITEMS, ITEM_SHARE)[0]
            size = min(1_000_000, max(1, round(math.exp(rng.gauss(math.log(150), 2.6)))))
            mix = rng.choices([u for u, _ in URGENCY_SHARE], [w for _, w in URGENCY_SHARE])[0]
            urgency = mix if rng.random() < urgent else "normal"
            parts = rng.randint(2, 4) if rng.random() < 0.1 and size >= 4 else 1
            cuts = sorted(rng.sample(range(1, size), parts - 1)) if parts > 1 else []
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, size], strict=True)]
            stock = use = None
            if days and kind == "hospital":
                use = max(1, round(size / rng.uniform(10, 30)))
                stock = round(use * rng.uniform(0, 7))
                # As the service derives it from days of supply when none is given.
                cover = stock / use
                urgency = "critical" if cover < 2 else "high" if cover < 5 else "normal"
            for k, q in enumerate(sizes):
                demand.append(
                    DemandLine(
                        id=f"r{request_no:06d}-{k}",
                        item=item,
                        standards=(),
                        quantity=q,
                        location=loc,
                        recipient_id=org,
                        recipient_kind=kind,
                        urgency=urgency,  # type: ignore[arg-type]
                        needed_by=None,
                        need_id=f"r{request_no:06d}",
                        requested=q,
                        stock=None if stock is None else round(stock * q / size),
                        daily_use=None if use is None else max(1, round(use * q / size)),
                    )
                )
            asked[item] += size
        n_donor = round(donor_lines / weeks * rng.uniform(0.7, 1.3))
        raw = [
            (rng.choices(ITEMS, ITEM_SHARE)[0], rng.lognormvariate(0, 1.2)) for _ in range(n_donor)
        ]
        total_w = {item: sum(w for i, w in raw if i == item) or 1.0 for item in ITEMS}
        ratio = SUPPLY_RATIO * rng.uniform(0.8, 1.2)
        supply = [
            SupplyLine(
                id=f"w{week:02d}-s{n:04d}",
                item=item,
                standard=None,
                quantity=max(1, round(asked[item] * ratio * w / total_w[item])),
                location=(donor := rng.choice(donors))[1],
                donor_id=donor[0],
            )
            for n, (item, w) in enumerate(raw)
        ]
        out.append(Week(supply=supply, demand=demand))
    return out


Solver = Callable[[list[SupplyLine], list[DemandLine], date], Plan]


@dataclass(slots=True)
class Outcome:
    name: str
    fill_all: float = 0.0
    fill_served: float = 0.0
    small_served: float = 0.0
    shipments_per_donor: float = 0.0
    unit_km: float = 0.0
    wait_days: float = 0.0
    seconds: float = 0.0
    lowest_days_before: list[float] = field(default_factory=list)
    lowest_days_after: list[float] = field(default_factory=list)
    tenth_days_before: list[float] = field(default_factory=list)
    tenth_days_after: list[float] = field(default_factory=list)


def simulate(name: str, weeks: Sequence[Week], solve: Solver) -> Outcome:
    """Run the weeks: each week's plan is shipped at once (the quantities leave the
    open supply and requests)."""
    supply_left: dict[str, SupplyLine] = {}
    arrived: dict[str, int] = {}
    demand_left: dict[str, DemandLine] = {}
    requested: dict[str, int] = {}
    delivered: dict[str, int] = {}
    need_of: dict[str, str] = {}
    shipments: set[tuple[int, str, str]] = set()
    donor_weeks: set[tuple[int, str]] = set()
    units = unit_km = waited = 0.0
    seconds = 0.0
    outcome = Outcome(name)
    for w, week in enumerate(weeks):
        for s in week.supply:
            supply_left[s.id] = s
            arrived[s.id] = w
        for d in week.demand:
            demand_left[d.id] = d
            need = d.need_id or d.id
            need_of[d.id] = need
            requested[need] = requested.get(need, 0) + d.quantity
        supply = list(supply_left.values())
        demand = list(demand_left.values())
        started = time.perf_counter()
        plan = solve(supply, demand, START + timedelta(weeks=w))
        seconds += time.perf_counter() - started
        _days_of_supply(demand, plan, outcome)
        by_s = {s.id: s for s in supply}
        by_d = {d.id: d for d in demand}
        for a in plan.allocations:
            s, d = by_s[a.supply_id], by_d[a.demand_id]
            shipments.add((w, s.donor_id, d.recipient_id))
            donor_weeks.add((w, s.donor_id))
            units += a.quantity
            unit_km += a.quantity * a.reason.distance_km
            waited += a.quantity * 7 * (w - arrived[s.id])
            delivered[need_of[d.id]] = delivered.get(need_of[d.id], 0) + a.quantity
            supply_left[s.id] = replace(
                supply_left[s.id], quantity=supply_left[s.id].quantity - a.quantity
            )
            left = demand_left[d.id]
            demand_left[d.id] = replace(
                left,
                quantity=left.quantity - a.quantity,
                # Delivered units join the need's stock: its days of supply rise.
                stock=None if left.stock is None else left.stock + a.quantity,
            )
        supply_left = {k: v for k, v in supply_left.items() if v.quantity > 0}
        demand_left = {k: v for k, v in demand_left.items() if v.quantity > 0}
    fills = [delivered.get(n, 0) / q for n, q in requested.items()]
    served = [f for f in fills if f > 0]
    small = [n for n, q in requested.items() if q < 10]
    outcome.fill_all = sum(fills) / len(fills)
    outcome.fill_served = sum(served) / max(1, len(served))
    outcome.small_served = sum(1 for n in small if delivered.get(n, 0)) / max(1, len(small))
    outcome.shipments_per_donor = len(shipments) / max(1, len(donor_weeks))
    outcome.unit_km = unit_km / max(1.0, units)
    outcome.wait_days = waited / max(1.0, units)
    outcome.seconds = seconds
    return outcome


def _days_of_supply(demand: list[DemandLine], plan: Plan, outcome: Outcome) -> None:
    critical: dict[str, list[DemandLine]] = {}
    for d in demand:
        if d.urgency == "critical" and d.daily_use:
            critical.setdefault(d.need_id or d.id, []).append(d)
    if not critical:
        return
    got = plan.delivered_by_demand()
    before, after = [], []
    for lines in critical.values():
        use = sum(d.daily_use or 0 for d in lines)
        stock = sum(d.stock or 0 for d in lines)
        before.append(stock / use)
        after.append((stock + sum(got.get(d.id, 0) for d in lines)) / use)
    before.sort()
    after.sort()
    tenth = len(before) // 10
    outcome.lowest_days_before.append(min(before))
    outcome.lowest_days_after.append(min(after))
    outcome.tenth_days_before.append(before[tenth])
    outcome.tenth_days_after.append(after[tenth])


def plain_flow(supply: list[SupplyLine], demand: list[DemandLine], today: date) -> Plan:
    """As many units as can be shipped, then the least unit-distance."""
    neutral = [
        replace(d, urgency="normal", needed_by=None, stock=None, daily_use=None) for d in demand
    ]
    return match(supply, neutral, today=today, options=MatchOptions(fill_km=0))


def fcfs(supply: list[SupplyLine], demand: list[DemandLine], today: date) -> Plan:
    return greedy(supply, demand, today=today)


def aidlink(options: MatchOptions) -> Solver:
    def solve(supply: list[SupplyLine], demand: list[DemandLine], today: date) -> Plan:
        return match(supply, demand, today=today, options=options)

    return solve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--weeks", type=int, default=15)
    parser.add_argument("--donor-lines", type=int, default=1700)
    parser.add_argument("--request-lines", type=int, default=31000)
    parser.add_argument("--days", action="store_true", help="the days-of-supply variant")
    parser.add_argument(
        "--urgent-share",
        type=float,
        default=0.0,
        help="share of requests that state an urgency (critical, high, normal as 1:3:6); "
        "the rest are normal, as on the platform whose requests the data imitates",
    )
    parser.add_argument(
        "--settings",
        default="fill_km=50;fill_km=1000;fairness_tiers=4",
        help="MatchOptions settings to compare with the defaults, ';' between them",
    )
    return parser.parse_args(argv)


def _options(text: str) -> MatchOptions:
    values: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, value = part.split("=")
        values[key.strip()] = (
            int(value) if key.strip() in ("fairness_tiers", "days_horizon") else float(value)
        )
    return MatchOptions(**values)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    weeks = make_weeks(
        args.seed, args.weeks, args.donor_lines, args.request_lines, args.days, args.urgent_share
    )
    n_supply = sum(len(w.supply) for w in weeks)
    n_demand = sum(len(w.demand) for w in weeks)
    print("aidlink allocation quality benchmark")
    print(
        f"  seed {args.seed}, {args.weeks} weekly batches, {n_supply} donor lines, "
        f"{n_demand} request lines, {len(ITEMS)} items, supply about {SUPPLY_RATIO:.0%} of "
        f"demand{', hospitals with days of supply' if args.days else ''}"
    )
    defaults = MatchOptions()
    runs: list[tuple[str, Solver]] = [
        ("fcfs", fcfs),
        ("plain flow", plain_flow),
        (f"aidlink defaults (fill_km={defaults.fill_km:g})", aidlink(defaults)),
    ]
    for text in filter(None, args.settings.split(";")):
        runs.append((f"aidlink {text}", aidlink(_options(text))))
    outcomes = []
    for name, solve in runs:
        print(f"  running {name} over {len(weeks)} weeks ...", file=sys.stderr, flush=True)
        outcomes.append(simulate(name, weeks, solve))
    plain = outcomes[1]
    print()
    print(
        f"  {'':34} {'fill all':>8} {'served':>7} {'small':>6} {'ship/donor':>10} "
        f"{'unit km':>8} {'wait d':>7} {'seconds':>8}"
    )
    for o in outcomes:
        print(
            f"  {o.name:34} {o.fill_all:8.3f} {o.fill_served:7.3f} {o.small_served:6.1%} "
            f"{o.shipments_per_donor:10.2f} {o.unit_km:8.1f} {o.wait_days:7.2f} {o.seconds:8.2f}"
        )
    print()
    print(
        "  against the plain flow (target: fill > 1 and > fcfs's, unit km <= 1.05, "
        "ship/donor <= 1.5, wait = 1):"
    )
    for o in outcomes[2:]:
        print(
            f"  {o.name:34} fill all {o.fill_all / plain.fill_all:5.2f}  served "
            f"{o.fill_served / plain.fill_served:5.2f}  unit km {o.unit_km / plain.unit_km:5.2f}  "
            f"ship/donor {o.shipments_per_donor / plain.shipments_per_donor:5.2f}  wait "
            + (
                f"{o.wait_days / plain.wait_days:5.2f}"
                if plain.wait_days
                else f"{o.wait_days:.2f} d vs 0 d"
            )
        )
    if args.days:
        print()
        print(
            "  days of supply among critical needs stating them, before and after each "
            "week's plan (mean over weeks): the lowest, and the 10th percentile"
        )
        for o in outcomes:
            if o.lowest_days_before:
                print(
                    f"  {o.name:34} lowest {_mean(o.lowest_days_before):5.2f} -> "
                    f"{_mean(o.lowest_days_after):5.2f}   10th percentile "
                    f"{_mean(o.tenth_days_before):5.2f} -> {_mean(o.tenth_days_after):5.2f}"
                )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
