"""How fast and how good is the matcher, next to first-come-first-served?

For each size N, a random but reproducible instance of N supply and N demand lines
is drawn: 15 items, 300 places (most needs in Hubei, donors all over the country),
some standards, donor restrictions and perishables, and about two thirds as much
supply as demand, so that priorities matter. ``match`` and the ``greedy``
baseline solve the same instance; the benchmark prints, for each:

* time: wall time of the call (best and median of ``--repeat`` runs);
* delivered: quantity delivered to critical / high / normal needs as a share of
  what those needs asked for, per item, averaged over the items (quantities of
  different items are never added up);
* served: share of needs that get anything, and of critical needs;
* min crit fill: the lowest fill rate among critical needs that some compatible
  supply line could serve at all;
* unit km: sum(distance * quantity) / sum(quantity).

and the ratio of the matcher's best time on each size to the 1.0 s target (the
target is set for 20k x 20k). It prints figures only and never fails on them.

    .venv/bin/python -m bench.matching
    .venv/bin/python -m bench.matching --sizes 1000,5000,20000 --seed 7 --repeat 3
    .venv/bin/python -m bench.matching --through-service --sizes 1000,5000,20000
    .venv/bin/python -m bench.matching --through-service \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

``--through-service`` times the whole run as dispatch's worker performs it (read,
solve, write, events) with needs posted during it: ``bench/matching_service.py``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from services.dispatch.matching import (
    URGENCIES,
    DemandLine,
    Location,
    Plan,
    SupplyLine,
    greedy,
    match,
)
from services.dispatch.matching.geo import CITY_POINTS, PROVINCE_POINTS
from services.dispatch.matching.model import DEFAULT_OPTIONS
from services.dispatch.matching.rules import compatibility, demand_terms, prepare, supply_terms

TARGET_SECONDS = 1.0
TODAY = date(2020, 2, 10)
N_PLACES = 300

# (item, standards, perishable, base units per typical line)
ITEMS: tuple[tuple[str, tuple[str, ...], bool, int], ...] = (
    ("mask", ("GB19083-2010", "YY0469-2011", "GB2626-2006", "YY/T0969-2013"), False, 2000),
    ("gloves_exam", ("nitrile", "latex"), False, 1000),
    ("protective_suit", ("GB19082-2009",), False, 200),
    ("goggles", ("GB14866-2006",), False, 200),
    ("face_shield", (), False, 300),
    ("shoe_cover", (), False, 1000),
    ("disinfectant_84", (), False, 200_000),
    ("alcohol_75", (), False, 100_000),
    ("hand_sanitiser", (), False, 50_000),
    ("air_purifier", (), False, 10),
    ("thermometer", (), False, 100),
    ("test_kit", (), False, 500),
    ("fruit", (), True, 500_000),
    ("vegetables", (), True, 1_000_000),
    ("rice", (), False, 2_000_000),
)

# What hospitals insist on, per item with standards.
HOSPITAL_STANDARDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "mask": (("GB19083-2010",), ("GB19083-2010", "YY0469-2011"), ("YY0469-2011", "YY/T0969-2013")),
    "gloves_exam": (("nitrile",),),
    "protective_suit": (("GB19082-2009",),),
    "goggles": (("GB14866-2006",),),
}

RECIPIENT_KINDS = (
    ("hospital", 0.40),
    ("field_hospital", 0.10),
    ("community_committee", 0.30),
    ("civil_affairs_bureau", 0.10),
    ("care_home", 0.10),
)
URGENCY_MIX = {
    True: (0.35, 0.40, 0.25),  # hospitals
    False: (0.10, 0.30, 0.60),
}


@dataclass(frozen=True, slots=True)
class Place:
    location: Location
    in_hubei: bool


def make_places(rng: random.Random) -> list[Place]:
    """300 places: 40% in Hubei's cities, the rest in other cities and provinces;
    one in ten without coordinates (placed by its region code)."""
    hubei = [c for c in CITY_POINTS if c.startswith("42")]
    other_cities = [c for c in CITY_POINTS if not c.startswith("42")]
    provinces = [p for p in PROVINCE_POINTS if p != "42"]
    places: list[Place] = []
    for n in range(N_PLACES):
        if n < N_PLACES * 0.4:
            base = rng.choice(hubei)
        elif rng.random() < 0.6:
            base = rng.choice(other_cities)
        else:
            base = rng.choice(provinces) + f"{rng.randint(1, 9):02d}"
        region = base + f"{rng.randint(1, 20):02d}"
        point = CITY_POINTS.get(base[:4]) or PROVINCE_POINTS[base[:2]]
        spread = 0.15 if base[:4] in CITY_POINTS else 1.0
        if rng.random() < 0.1:
            loc = Location(region)
        else:
            loc = Location(
                region,
                round(point[0] + rng.gauss(0, spread), 4),
                round(point[1] + rng.gauss(0, spread), 4),
            )
        places.append(Place(loc, region.startswith("42")))
    return places


def log_uniform(rng: random.Random, typical: int) -> int:
    return max(1, int(typical * 10 ** rng.uniform(-1, 1)))


def make_instance(n: int, seed: int) -> tuple[list[SupplyLine], list[DemandLine]]:
    rng = random.Random(seed)
    places = make_places(rng)
    hubei = [p for p in places if p.in_hubei]
    donors = [(f"donor-{k:05d}", rng.choice(places)) for k in range(max(10, n // 8))]
    kinds = [k for k, _ in RECIPIENT_KINDS]
    kind_weights = [w for _, w in RECIPIENT_KINDS]
    recipients = []
    for k in range(max(10, n // 4)):
        place = rng.choice(hubei) if rng.random() < 0.6 else rng.choice(places)
        recipients.append((f"org-{k:05d}", place, rng.choices(kinds, kind_weights)[0]))

    supply: list[SupplyLine] = []
    for k in range(n):
        item, standards, perishable, typical = rng.choice(ITEMS)
        donor, place = rng.choice(donors)
        standard = rng.choice(standards) if standards and rng.random() < 0.85 else None
        regions: tuple[str, ...] = ()
        if rng.random() < 0.08:
            home = (place.location.region or "")[:2]
            regions = rng.choice((("42",), ("4201",), ("42", "41"), (home,)))
        restrict_kinds: tuple[str, ...] = ()
        if rng.random() < 0.05:
            restrict_kinds = ("hospital", "field_hospital")
        supply.append(
            SupplyLine(
                id=f"s{k:06d}",
                item=item,
                standard=standard,
                quantity=log_uniform(rng, typical),
                location=place.location,
                donor_id=donor,
                best_before=TODAY + timedelta(days=rng.randint(2, 10)) if perishable else None,
                restrict_regions=regions,
                restrict_recipient_kinds=restrict_kinds,
            )
        )

    demand: list[DemandLine] = []
    for k in range(n):
        item, _standards, _perishable, typical = rng.choice(ITEMS)
        org, place, kind = rng.choice(recipients)
        hospital = kind in ("hospital", "field_hospital")
        accepted: tuple[str, ...] = ()
        if hospital and item in HOSPITAL_STANDARDS and rng.random() < 0.7:
            accepted = rng.choice(HOSPITAL_STANDARDS[item])
        urgency = rng.choices(URGENCIES, URGENCY_MIX[hospital])[0]
        needed_by = None if rng.random() < 0.2 else TODAY + timedelta(days=rng.randint(0, 14))
        demand.append(
            DemandLine(
                id=f"d{k:06d}",
                item=item,
                standards=accepted,
                quantity=log_uniform(rng, int(typical * 1.5)),
                location=place.location,
                recipient_id=org,
                recipient_kind=kind,
                urgency=urgency,
                needed_by=needed_by,
            )
        )
    return supply, demand


@dataclass(frozen=True, slots=True)
class Figures:
    times: list[float]
    delivered_share: dict[str, float]
    served: float
    served_critical: float
    min_critical_fill: float
    unit_km: float
    plan: Plan

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def reachable_demand(supply: Sequence[SupplyLine], demand: Sequence[DemandLine]) -> set[str]:
    """Ids of demand lines some compatible supply line could serve."""
    inst = prepare(supply, demand, DEFAULT_OPTIONS)
    out: set[str] = set()
    for _item, s_idx, d_idx in inst.items():
        dist = inst.dist_km[
            np.ix_(
                np.array([inst.s_loc[i] for i in s_idx], dtype=np.intp),
                np.array([inst.d_loc[j] for j in d_idx], dtype=np.intp),
            )
        ]
        ok = compatibility(
            [supply_terms(inst.supply[i]) for i in s_idx],
            [demand_terms(inst.demand[j]) for j in d_idx],
            [inst.demand[j].location.region for j in d_idx],
            dist,
            TODAY,
            DEFAULT_OPTIONS,
        )
        for n in np.flatnonzero(ok.any(axis=0)).tolist():
            out.add(inst.demand[d_idx[n]].id)
    return out


def measure(
    solve: Callable[..., Plan],
    supply: list[SupplyLine],
    demand: list[DemandLine],
    reachable: set[str],
    repeat: int,
) -> Figures:
    times = []
    plan: Plan | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        plan = solve(supply, demand, today=TODAY)
        times.append(time.perf_counter() - started)
    assert plan is not None
    got = plan.delivered_by_demand()
    # Quantities of different items are never added: shares per item, averaged.
    asked: dict[str, dict[str, int]] = {}
    for d in demand:
        asked.setdefault(d.item, dict.fromkeys(URGENCIES, 0))[d.urgency] += d.quantity
    share: dict[str, float] = {}
    for u in URGENCIES:
        per_item = [
            plan.stats.delivered.get(item, {}).get(u, 0) / by_u[u]
            for item, by_u in asked.items()
            if by_u[u]
        ]
        share[u] = sum(per_item) / max(1, len(per_item))
    critical = [d for d in demand if d.urgency == "critical"]
    fills = [got.get(d.id, 0) / d.quantity for d in critical if d.id in reachable]
    total = sum(a.quantity for a in plan.allocations)
    km = sum(a.quantity * a.reason.distance_km for a in plan.allocations)
    return Figures(
        times=times,
        delivered_share=share,
        served=sum(1 for d in demand if got.get(d.id, 0) > 0) / len(demand),
        served_critical=sum(1 for d in critical if got.get(d.id, 0) > 0) / max(1, len(critical)),
        min_critical_fill=min(fills, default=1.0),
        unit_km=km / total if total else 0.0,
        plan=plan,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.matching",
        description="Speed and quality of the matcher next to first-come-first-served.",
    )
    parser.add_argument(
        "--sizes",
        default="1000,5000,20000",
        help="comma-separated numbers of lines per side (default 1000,5000,20000)",
    )
    parser.add_argument("--seed", type=int, default=7, help="instance seed (default 7)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per size and method; best and median shown"
    )
    from bench.matching_service import add_arguments

    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes must be positive")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.post_every <= 0:
        parser.error("--post-every must be positive")
    if args.database_url and not args.through_service:
        parser.error("--database-url applies to --through-service only")
    if args.broker and not args.through_service:
        parser.error("--broker applies to --through-service only")
    return args


def report(n: int, supply_n: int, opt: Figures, base: Figures) -> None:
    s = opt.plan.stats
    print()
    print(f"N = {n} supply x {supply_n} demand lines")
    print(
        f"  model: {s.items} items, {s.supply_groups} supply groups, {s.demand_groups} demand "
        f"groups, {s.arcs} arcs, {s.solves} solves"
    )
    print(
        f"  {'':8} {'best s':>8} {'median s':>8}   {'critical':>8} {'high':>5} "
        f"{'normal':>6}   {'served':>6} {'crit':>6} {'min crit fill':>13} {'unit km':>8}"
    )
    for name, f in (("match", opt), ("greedy", base)):
        cells = "".join(
            f" {f.delivered_share[u]:{w}.0%}"
            for u, w in (("critical", 8), ("high", 5), ("normal", 6))
        )
        print(
            f"  {name:8} {f.best:8.3f} {f.median:8.3f}  {cells}   {f.served:6.1%} "
            f"{f.served_critical:6.1%} {f.min_critical_fill:13.1%} {f.unit_km:8.1f}"
        )
    ratio = opt.best / TARGET_SECONDS
    print(
        f"  match time / {TARGET_SECONDS} s target: {ratio:.2f} (best), "
        f"{opt.median / TARGET_SECONDS:.2f} (median)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.through_service:
        from bench import matching_service

        return matching_service.main(
            args.sizes, args.seed, args.database_url, args.post_every, args.broker
        )
    print("aidlink matching benchmark")
    print(
        f"  seed {args.seed}, {len(ITEMS)} items, {N_PLACES} places, today {TODAY}, "
        f"repeat {args.repeat}; target {TARGET_SECONDS} s for 20000 x 20000"
    )
    for n in args.sizes:
        print(f"\ngenerating {n} x {n} ...", flush=True)
        supply, demand = make_instance(n, args.seed)
        reachable = reachable_demand(supply, demand)
        opt = measure(match, supply, demand, reachable, args.repeat)
        base = measure(greedy, supply, demand, reachable, args.repeat)
        report(n, len(demand), opt, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
