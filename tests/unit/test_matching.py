"""The matching library: hand-made plans with known optima, and properties of any plan."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

from services.dispatch.matching import (
    URGENCIES,
    DemandLine,
    Location,
    MatchOptions,
    Plan,
    SupplyLine,
    Urgency,
    distance_km,
    greedy,
    match,
)
from services.dispatch.matching.geo import haversine_km, region_point

TODAY = date(2020, 2, 10)

WUHAN = Location("420102", 30.593, 114.305)
HUANGSHI = Location("420202", 30.200, 115.039)  # about 80 km from Wuhan
BEIJING = Location("110101", 39.904, 116.407)  # about 1050 km from Wuhan
SHANGHAI = Location("310101", 31.230, 121.474)  # about 690 km from Wuhan
CHENGDU = Location("510104", 30.573, 104.066)  # about 980 km from Wuhan


def supply(
    id: str,
    quantity: int,
    location: Location = WUHAN,
    *,
    item: str = "mask",
    standard: str | None = "GB19083-2010",
    donor: str = "donor-1",
    best_before: date | None = None,
    regions: tuple[str, ...] = (),
    kinds: tuple[str, ...] = (),
) -> SupplyLine:
    return SupplyLine(
        id=id,
        item=item,
        standard=standard,
        quantity=quantity,
        location=location,
        donor_id=donor,
        best_before=best_before,
        restrict_regions=regions,
        restrict_recipient_kinds=kinds,
    )


def need(
    id: str,
    quantity: int,
    location: Location = WUHAN,
    *,
    item: str = "mask",
    urgency: Urgency = "high",
    standards: tuple[str, ...] = (),
    kind: str = "hospital",
    needed_by: date | None = None,
    verified: bool = True,
    open: bool = True,
    need_id: str | None = None,
    stock: int | None = None,
    daily_use: int | None = None,
    requested: int | None = None,
) -> DemandLine:
    return DemandLine(
        id=id,
        item=item,
        standards=standards,
        quantity=quantity,
        location=location,
        recipient_id=f"org-{id}",
        recipient_kind=kind,
        urgency=urgency,
        needed_by=needed_by,
        verified=verified,
        open=open,
        need_id=need_id,
        stock=stock,
        daily_use=daily_use,
        requested=requested,
    )


def flows(plan: Plan) -> dict[tuple[str, str], int]:
    return {(a.supply_id, a.demand_id): a.quantity for a in plan.allocations}


# Hand-made plans -----------------------------------------------------------------------


def test_urgency_wins_over_distance() -> None:
    plan = match(
        [supply("s1", 10)],
        [need("near", 10, WUHAN, urgency="normal"), need("far", 10, BEIJING, urgency="critical")],
        today=TODAY,
    )
    assert flows(plan) == {("s1", "far"): 10}
    assert plan.unmet == {"near": 10}
    (a,) = plan.allocations
    assert a.reason.urgency == "critical"
    assert a.reason.need_fill == 1.0
    assert a.reason.distance_km == pytest.approx(1052, abs=5)
    assert a.reason.describe() == (
        "critical; brings this need to 100%; the nearest donor in this plan, 1053 km"
    )


def test_critical_before_high_before_normal() -> None:
    plan = match(
        [supply("s1", 12)],
        [
            need("n", 10, urgency="normal"),
            need("h", 10, HUANGSHI, urgency="high"),
            need("c", 2, BEIJING, urgency="critical"),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("s1", "c"): 2, ("s1", "h"): 10}
    assert plan.stats.delivered == {"mask": {"critical": 2, "high": 10, "normal": 0}}


def test_a_one_unit_request_is_served_when_supply_allows() -> None:
    # Fairness on the share filled: the one unit completes a request, 5 units are
    # half a percent of the other. (Shares cut into tiers rounded down starved it.)
    plan = match(
        [supply("s1", 5)],
        [need("thermometers", 1, HUANGSHI), need("large", 1000, HUANGSHI)],
        today=TODAY,
    )
    assert plan.delivered_by_demand() == {"thermometers": 1, "large": 4}
    for tiers in (2, 4, 10):
        plan = match(
            [supply("s1", 5)],
            [need("thermometers", 1, HUANGSHI), need("large", 1000, HUANGSHI)],
            today=TODAY,
            options=MatchOptions(fairness_tiers=tiers),
        )
        assert plan.delivered_by_demand()["thermometers"] == 1


def test_small_requests_are_completed_before_large_ones_are_topped_up() -> None:
    plan = match(
        [supply("s1", 30)],
        [need("small", 4, BEIJING), need("middle", 20, BEIJING), need("large", 100, BEIJING)],
        today=TODAY,
    )
    assert plan.delivered_by_demand() == {"small": 4, "middle": 20, "large": 6}
    reasons = {a.demand_id: a.reason for a in plan.allocations}
    assert reasons["small"].need_fill == 1.0 and reasons["large"].need_fill == 0.06


def test_what_a_need_already_got_counts_toward_its_share() -> None:
    # Both miss 10; the first asked for 1,000 and has 990, the second asked for 10.
    plan = match(
        [supply("s1", 10)],
        [need("topped-up", 10, HUANGSHI, requested=1000), need("new", 10, HUANGSHI)],
        today=TODAY,
    )
    assert plan.delivered_by_demand() == {"new": 10}
    assert {a.demand_id: a.reason.need_fill for a in plan.allocations} == {"new": 1.0}


def test_a_need_split_into_lines_gets_what_it_would_get_as_one_line() -> None:
    whole = match(
        [supply("s1", 30)],
        [need("hospital", 50, HUANGSHI), need("clinic", 10, HUANGSHI)],
        today=TODAY,
    ).delivered_by_demand()
    split = match(
        [supply("s1", 30)],
        [
            *(need(f"hospital-{n}", 10, HUANGSHI, need_id="hospital") for n in range(5)),
            need("clinic", 10, HUANGSHI),
        ],
        today=TODAY,
    ).delivered_by_demand()
    assert whole == {"clinic": 10, "hospital": 20}
    assert split["clinic"] == whole["clinic"]
    assert sum(q for line, q in split.items() if line.startswith("hospital")) == 20

    # Tiers too are cut on the need: forty one-unit lines are one need of forty.
    tiers = MatchOptions(fairness_tiers=4)
    one = [need("a", 40, HUANGSHI), need("b", 40, HUANGSHI)]
    many = [
        need("a", 40, HUANGSHI),
        *(need(f"b{n:02d}", 1, HUANGSHI, need_id="b") for n in range(40)),
    ]
    assert match([supply("s1", 20)], one, today=TODAY, options=tiers).delivered_by_demand() == {
        "a": 10,
        "b": 10,
    }
    got = match([supply("s1", 20)], many, today=TODAY, options=tiers).delivered_by_demand()
    assert got["a"] == 10 and sum(q for line, q in got.items() if line != "a") == 10
    # And what a need already had counts: 30 of 40 filled, its next units are in its
    # last tier, behind a new need's first.
    had = [need("a", 10, HUANGSHI, requested=40), need("b", 40, HUANGSHI)]
    assert match([supply("s1", 10)], had, today=TODAY, options=tiers).delivered_by_demand() == {
        "b": 10
    }


def test_a_request_far_away_is_not_worth_any_distance() -> None:
    # A one-unit request is worth fill_km (50 km by default) of detour, no more.
    plan = match(
        [supply("s1", 5)],
        [need("beijing", 1, BEIJING), need("wuhan", 1000, WUHAN)],
        today=TODAY,
    )
    assert plan.delivered_by_demand() == {"wuhan": 5}
    plan = match(
        [supply("s1", 5)],
        [need("beijing", 1, BEIJING), need("wuhan", 1000, WUHAN)],
        today=TODAY,
        options=MatchOptions(fill_km=2000),
    )
    assert plan.delivered_by_demand() == {"beijing": 1, "wuhan": 4}


def test_days_of_supply_are_equalised_among_hospitals() -> None:
    # Stock and daily use: 1, 3 and 6 days of supply. 100 units of supply lift the
    # lowest first, whatever each hospital uses a day: all end near one level.
    hospitals = [
        need("a", 1000, HUANGSHI, urgency="critical", stock=10, daily_use=10),
        need("b", 1000, HUANGSHI, urgency="critical", stock=60, daily_use=20),
        need("c", 1000, HUANGSHI, urgency="critical", stock=30, daily_use=5),
    ]
    plan = match([supply("s1", 100)], hospitals, today=TODAY)
    got = plan.delivered_by_demand()
    assert sum(got.values()) == 100
    cover = {d.id: ((d.stock or 0) + got.get(d.id, 0)) / (d.daily_use or 1) for d in hospitals}
    assert max(cover.values()) - min(cover.values()) <= 1.0, cover
    assert min(cover.values()) >= 3.5
    by_need = {a.demand_id: a.reason for a in plan.allocations}
    assert by_need["a"].days_of_supply == pytest.approx(cover["a"], abs=0.05)
    assert "days of supply after it" in by_need["a"].describe()


def test_a_custom_distance_matrix_changes_the_plan() -> None:
    from services.dispatch.matching.geo import table

    # By great-circle Huangshi is nearer to Wuhan than Beijing; a coordinator's
    # table says the road to Huangshi is cut (2,000 km around).
    lines = [supply("s1", 5, WUHAN)]
    needs = [need("huangshi", 5, HUANGSHI), need("beijing", 5, BEIJING)]
    assert match(lines, needs, today=TODAY).delivered_by_demand() == {"huangshi": 5}
    roads = table({("420102", "420202"): 2000.0})
    plan = match(lines, needs, today=TODAY, distances=roads)
    assert plan.delivered_by_demand() == {"beijing": 5}
    assert plan.allocations[0].reason.distance_km == pytest.approx(1052, abs=5)

    def matrix(rows: Sequence[Location], cols: Sequence[Location]) -> np.ndarray:
        return np.array([[1.0 if b is BEIJING else 9.0 for b in cols] for _a in rows])

    assert match(lines, needs, today=TODAY, distances=matrix).delivered_by_demand() == {
        "beijing": 5
    }
    with pytest.raises(ValueError, match="negative or missing"):
        match(lines, needs, today=TODAY, distances=lambda r, c: -np.ones((len(r), len(c))))


def test_places_without_region_codes_in_any_country() -> None:
    lyon = Location(lat=45.764, lon=4.836)
    paris = Location(lat=48.857, lon=2.352)
    marseille = Location(lat=43.296, lon=5.370)
    plan = match(
        [supply("s1", 5, lyon, regions=())],
        [need("paris", 5, paris), need("marseille", 5, marseille)],
        today=TODAY,
    )
    assert plan.delivered_by_demand() == {"marseille": 5}
    restricted = match(
        [supply("s1", 5, lyon, regions=("FR-13",))],
        [need("paris", 5, paris), need("marseille", 5, Location("FR-13", 43.296, 5.370))],
        today=TODAY,
    )
    assert restricted.delivered_by_demand() == {"marseille": 5}


def test_earlier_needed_by_wins_within_a_tier() -> None:
    plan = match(
        [supply("s1", 2)],
        [
            need("later-near", 8, WUHAN, needed_by=TODAY + timedelta(days=5)),
            need("sooner-far", 8, BEIJING, needed_by=TODAY + timedelta(days=1)),
            need("whenever", 8, WUHAN),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("s1", "sooner-far"): 2}


def test_needed_by_outranks_fill() -> None:
    plan = match(
        [supply("s1", 4)],
        [
            need("later", 4, WUHAN, needed_by=TODAY + timedelta(days=5)),
            need("sooner", 8, WUHAN, needed_by=TODAY + timedelta(days=1)),
        ],
        today=TODAY,
    )
    assert plan.delivered_by_demand() == {"sooner": 4}


def test_distance_decides_between_equal_needs() -> None:
    plan = match(
        [supply("wuhan", 5, WUHAN), supply("chengdu", 5, CHENGDU)],
        [need("near-wuhan", 5, HUANGSHI), need("in-chengdu", 5, CHENGDU)],
        today=TODAY,
    )
    assert flows(plan) == {("wuhan", "near-wuhan"): 5, ("chengdu", "in-chengdu"): 5}


@pytest.mark.parametrize(
    ("restriction", "expected"),
    [
        ({"regions": ("42",)}, {("s1", "hubei"): 10}),
        ({"regions": ("4202",)}, {("s1", "hubei"): 10}),
        ({"regions": ("4201", "4203")}, {}),
        ({"regions": ("4202", "11")}, {("s1", "beijing"): 10}),
        ({"regions": ("11",)}, {("s1", "beijing"): 10}),
        ({}, {("s1", "beijing"): 10}),
    ],
)
def test_region_restriction(restriction: dict[str, tuple[str, ...]], expected: object) -> None:
    # The Beijing need is critical: without a restriction it takes everything.
    plan = match(
        [supply("s1", 10, **restriction)],  # type: ignore[arg-type]
        [
            need("hubei", 10, HUANGSHI, urgency="normal"),
            need("beijing", 10, BEIJING, urgency="critical"),
        ],
        today=TODAY,
    )
    assert flows(plan) == expected


def test_recipient_kind_restriction() -> None:
    plan = match(
        [supply("s1", 10, kinds=("hospital", "field_hospital"))],
        [
            need("committee", 10, WUHAN, urgency="critical", kind="community_committee"),
            need("hospital", 10, BEIJING, urgency="normal", kind="hospital"),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("s1", "hospital"): 10}
    assert plan.unmet == {"committee": 10}


def test_wrong_standard_is_never_sent() -> None:
    plan = match(
        [supply("kn95", 10, standard="GB2626-2006")],
        [need("medical", 10, urgency="critical", standards=("GB19083-2010",))],
        today=TODAY,
    )
    assert plan.allocations == ()
    assert plan.unmet == {"medical": 10}


def test_unstated_standard_only_where_any_is_accepted() -> None:
    plan = match(
        [supply("plain", 10, standard=None)],
        [
            need("strict", 10, urgency="critical", standards=("GB19083-2010", "YY0469-2011")),
            need("any", 10, BEIJING, urgency="normal"),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("plain", "any"): 10}


def test_acceptable_standards_are_any_of_the_list() -> None:
    plan = match(
        [supply("a", 3, standard="A"), supply("b", 3, standard="B"), supply("c", 3, standard="C")],
        [need("ab", 9, standards=("A", "B"))],
        today=TODAY,
    )
    assert flows(plan) == {("a", "ab"): 3, ("b", "ab"): 3}


def test_spoiling_produce_is_not_sent_far() -> None:
    # Two days left: a day of handling, then 500 km/day -> it may go 500 km.
    fruit = supply("fruit", 10, item="fruit", standard=None, best_before=TODAY + timedelta(days=2))
    plan = match(
        [fruit],
        [
            need("far", 10, BEIJING, item="fruit", urgency="critical"),
            need("near", 4, HUANGSHI, item="fruit", urgency="normal"),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("fruit", "near"): 4}
    assert plan.unmet == {"far": 10}

    # With more days left it reaches Beijing, and the critical need comes first.
    later = supply("fruit", 10, item="fruit", standard=None, best_before=TODAY + timedelta(days=4))
    plan = match(
        [later],
        [
            need("far", 10, BEIJING, item="fruit", urgency="critical"),
            need("near", 4, HUANGSHI, item="fruit", urgency="normal"),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("fruit", "far"): 10}


def test_spoiled_or_spoiling_today_goes_only_where_it_is() -> None:
    at_once = supply("a", 5, item="fruit", standard=None, best_before=TODAY + timedelta(days=1))
    spoiled = supply("b", 5, item="fruit", standard=None, best_before=TODAY - timedelta(days=1))
    plan = match(
        [at_once, spoiled],
        [need("here", 20, WUHAN, item="fruit"), need("near", 20, HUANGSHI, item="fruit")],
        today=TODAY,
    )
    assert flows(plan) == {("a", "here"): 5}


def test_slower_transport_shortens_the_reach() -> None:
    fruit = supply("f", 10, item="fruit", standard=None, best_before=TODAY + timedelta(days=3))
    needs = [need("shanghai", 10, SHANGHAI, item="fruit")]
    assert match([fruit], needs, today=TODAY).delivered_by_demand() == {"shanghai": 10}
    slow = MatchOptions(speed_km_per_day=300)
    assert match([fruit], needs, today=TODAY, options=slow).allocations == ()


def test_unmet_demand_is_reported_exactly() -> None:
    plan = match(
        [supply("s1", 5), supply("s2", 7, item="gloves", standard=None)],
        [
            need("a", 8),
            need("b", 4, item="gloves"),
            need("c", 6, item="gloves"),
            need("d", 3, item="suits"),
        ],
        today=TODAY,
    )
    assert plan.unmet == {"a": 3, "c": 3, "d": 3}
    assert plan.stats.delivered == {
        "mask": {"critical": 0, "high": 5, "normal": 0},
        "gloves": {"critical": 0, "high": 7, "normal": 0},
    }


def test_only_verified_open_needs_are_matched() -> None:
    plan = match(
        [supply("s1", 10)],
        [
            need("unverified", 10, urgency="critical", verified=False),
            need("closed", 10, urgency="critical", open=False),
            need("ok", 4, BEIJING, urgency="normal"),
        ],
        today=TODAY,
    )
    assert flows(plan) == {("s1", "ok"): 4}
    assert plan.unmet == {}
    assert plan.stats.ignored_demand_lines == 2


def test_lines_of_one_donor_are_used_together() -> None:
    plan = match(
        [
            supply("x1", 5, donor="donor-b"),
            supply("x2", 5, donor="donor-a"),
            supply("x3", 5, donor="donor-b"),
        ],
        [need("n", 10)],
        today=TODAY,
    )
    assert flows(plan) == {("x2", "n"): 5, ("x1", "n"): 5}


def test_zero_quantities_and_empty_input() -> None:
    assert match([], [], today=TODAY).allocations == ()
    plan = match([supply("s", 0)], [need("n", 0), need("m", 3)], today=TODAY)
    assert plan.allocations == ()
    assert plan.unmet == {"m": 3}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (([supply("s", 1), supply("s", 2)], []), "appears twice"),
        (([], [need("n", 1), need("n", 2)]), "appears twice"),
        (([supply("s", -1)], []), "non-negative integer"),
        (([], [need("n", 1.5)]), "non-negative integer"),  # type: ignore[arg-type]
        (([], [need("n", 1, urgency="urgent")]), "urgency"),  # type: ignore[arg-type]
        (([supply("s", 1, Location("42", 30.0, None))], []), "both lat and lon"),
        (([supply("s", 1, Location("42", 95.0, 114.0))], []), "out of range"),
    ],
)
def test_bad_input_is_refused(
    lines: tuple[list[SupplyLine], list[DemandLine]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        match(*lines, today=TODAY)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        MatchOptions(speed_km_per_day=0)
    for bad in ({"fairness_tiers": 0}, {"fill_km": -1}, {"days_km": math.nan}, {"days_horizon": 0}):
        with pytest.raises(ValueError):
            MatchOptions(**bad)


def test_no_fill_weight_means_distance_decides() -> None:
    lines = [supply("s1", 8)]
    needs = [need("near", 100, WUHAN), need("small", 2, HUANGSHI)]
    # 80 km farther: worth it at 200 km for a whole need (100 km a unit here), not at 0.
    fair = MatchOptions(fill_km=200)
    assert match(lines, needs, today=TODAY, options=fair).delivered_by_demand() == {
        "near": 6,
        "small": 2,
    }
    assert match(lines, needs, today=TODAY).delivered_by_demand() == {"near": 8}
    plain = MatchOptions(fill_km=0)
    assert match(lines, needs, today=TODAY, options=plain).delivered_by_demand() == {"near": 8}


# Distances -----------------------------------------------------------------------------


def test_haversine() -> None:
    assert haversine_km(30.593, 114.305, 39.904, 116.407) == pytest.approx(1052, abs=5)
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371.0088)
    assert haversine_km(30, 114, 30, 114) == 0


def test_region_fallbacks() -> None:
    # A district has its own point, near its city's.
    wuchang, wuhan = region_point("420106"), region_point("4201")
    assert wuchang is not None and wuhan is not None and wuchang != wuhan
    assert haversine_km(*wuchang, *wuhan) < 15
    assert region_point("429004") != region_point("42")  # Xiantao has a point of its own
    assert region_point("421299") == region_point("4212")
    assert region_point("469999") == region_point("46")  # no such county or city -> province
    assert region_point("99") is None
    for code in ("11", "42", "54", "65", "4228", "4403", "5101"):
        assert region_point(code) is not None
    provinces = "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53"
    provinces += " 54 61 62 63 64 65"
    assert all(region_point(p) is not None for p in provinces.split())
    assert len(provinces.split()) == 31
    hubei = [str(4200 + n) for n in (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 28)]
    assert len({region_point(c) for c in hubei}) == len(hubei)


def test_distance_between_locations() -> None:
    assert distance_km(Location("4201"), Location("1101")) == pytest.approx(1052, abs=5)
    # Coordinates win over the region code.
    assert distance_km(Location("4201", 39.904, 116.407), BEIJING) == 0
    assert distance_km(Location("99"), WUHAN) == 3000
    assert distance_km(Location("99"), WUHAN, unknown_km=5000) == 5000


def test_unknown_places_are_far_but_not_forbidden() -> None:
    plan = match(
        [supply("s1", 10, Location("990000"))],
        [need("n", 10, WUHAN)],
        today=TODAY,
    )
    assert flows(plan) == {("s1", "n"): 10}
    assert plan.allocations[0].reason.distance_km == 3000


# Greedy baseline ----------------------------------------------------------------------


def test_greedy_serves_in_input_order_from_the_nearest() -> None:
    lines = [supply("near", 6, HUANGSHI), supply("far", 6, BEIJING)]
    needs = [need("normal", 8, WUHAN, urgency="normal"), need("critical", 8, urgency="critical")]
    plan = greedy(lines, needs, today=TODAY)
    assert flows(plan) == {("near", "normal"): 6, ("far", "normal"): 2, ("far", "critical"): 4}
    assert plan.unmet == {"critical": 4}
    best = match(lines, needs, today=TODAY)
    assert best.delivered_by_demand() == {"critical": 8, "normal": 4}


def test_greedy_obeys_the_rules() -> None:
    plan = greedy(
        [supply("s1", 10, regions=("11",)), supply("s2", 10, standard="GB2626-2006")],
        [need("hubei", 10, WUHAN, standards=("GB19083-2010",))],
        today=TODAY,
    )
    assert plan.allocations == ()


# Determinism ---------------------------------------------------------------------------


REGIONS = ["420102", "420202", "4205", "4228", "110101", "310101", "440106", "5101", "42", "990000"]


def random_instance(
    rng: random.Random, n_supply: int, n_demand: int
) -> tuple[list[SupplyLine], list[DemandLine]]:
    """Lines over a few places, items, standards, restrictions and perishables."""
    places = [Location(r) for r in REGIONS]
    for r in REGIONS[:6]:
        point = region_point(r) or (30.0, 114.0)
        places.append(
            Location(r, point[0] + rng.uniform(-0.5, 0.5), point[1] + rng.uniform(-0.5, 0.5))
        )
    lines = []
    for n in range(n_supply):
        item = rng.choice(["mask", "gloves", "fruit"])
        lines.append(
            supply(
                f"s{n:03d}",
                rng.randint(1, 40),
                rng.choice(places),
                item=item,
                standard=rng.choice(["A", "B", None]) if item == "mask" else None,
                donor=f"donor-{rng.randint(1, 4)}",
                best_before=TODAY + timedelta(days=rng.randint(0, 6)) if item == "fruit" else None,
                regions=rng.choice([(), (), (), ("42",), ("4201", "11")]),
                kinds=rng.choice([(), (), (), ("hospital",), ("hospital", "care_home")]),
            )
        )
    needs = []
    for n in range(n_demand):
        item = rng.choice(["mask", "gloves", "fruit"])
        # Some needs have several lines, some state their days of supply.
        need_no = rng.randint(0, max(1, n_demand * 2 // 3))
        days = need_no % 5 == 0
        needs.append(
            need(
                f"d{n:03d}",
                rng.choice([rng.randint(0, 50), rng.randint(1, 3), rng.randint(100, 5000)]),
                rng.choice(places),
                item=item,
                urgency=rng.choice(URGENCIES),
                standards=rng.choice([(), (), ("A",), ("A", "B"), ("C",)])
                if item == "mask"
                else (),
                kind=rng.choice(["hospital", "care_home", "community_committee"]),
                needed_by=rng.choice([None, TODAY + timedelta(days=rng.randint(-1, 5))]),
                verified=rng.random() > 0.05,
                need_id=f"need-{need_no}",
                requested=rng.choice([None, None, rng.randint(0, 100)]),
                stock=rng.randint(0, 60) if days else None,
                daily_use=rng.randint(1, 20) if days else None,
            )
        )
    return lines, needs


def test_same_input_same_plan_whatever_the_order() -> None:
    rng = random.Random(3)
    lines, needs = random_instance(rng, 150, 150)
    first = match(lines, needs, today=TODAY)
    assert first.allocations
    assert match(lines, needs, today=TODAY) == first
    for _ in range(3):
        rng.shuffle(lines)
        rng.shuffle(needs)
        assert match(lines, needs, today=TODAY) == first


# Properties ----------------------------------------------------------------------------


def compatible(s: SupplyLine, d: DemandLine, options: MatchOptions) -> bool:
    """The hard rules, written out again independently of the library."""
    if s.item != d.item:
        return False
    if d.standards and s.standard not in d.standards:
        return False
    region = d.location.region or ""
    if s.restrict_regions and not any(region.startswith(p) for p in s.restrict_regions):
        return False
    if s.restrict_recipient_kinds and d.recipient_kind not in s.restrict_recipient_kinds:
        return False
    if s.best_before is not None:
        days = (
            options.handling_days + distance_km(s.location, d.location) / options.speed_km_per_day
        )
        if days > (s.best_before - TODAY).days + 1e-9:
            return False
    return d.verified and d.open


def check_plan(
    plan: Plan, lines: Sequence[SupplyLine], needs: Sequence[DemandLine], options: MatchOptions
) -> None:
    by_id_s = {s.id: s for s in lines}
    by_id_d = {d.id: d for d in needs}
    for sid, q in plan.delivered_by_supply().items():
        assert q <= by_id_s[sid].quantity
    got = plan.delivered_by_demand()
    for did, q in got.items():
        assert q <= by_id_d[did].quantity
    pairs = [(a.supply_id, a.demand_id) for a in plan.allocations]
    assert len(pairs) == len(set(pairs))
    for a in plan.allocations:
        assert a.quantity > 0
        s, d = by_id_s[a.supply_id], by_id_d[a.demand_id]
        assert compatible(s, d, options), (s, d)
        assert a.item == d.item
        assert a.reason.urgency == d.urgency
        assert 0 < a.reason.need_fill <= 1
        assert (a.reason.days_of_supply is not None) == bool(d.daily_use)
    expected_unmet = {
        d.id: d.quantity - got.get(d.id, 0)
        for d in needs
        if d.verified and d.open and d.quantity > got.get(d.id, 0)
    }
    assert plan.unmet == expected_unmet


instances = st.builds(
    lambda seed, n_s, n_d: random_instance(random.Random(seed), n_s, n_d),
    st.integers(0, 2**32),
    st.integers(0, 30),
    st.integers(0, 30),
)


@settings(database=None, max_examples=60, deadline=None)
@given(instances, st.randoms(use_true_random=False))
def test_any_plan_keeps_to_quantities_and_rules(
    instance: tuple[list[SupplyLine], list[DemandLine]], rnd: random.Random
) -> None:
    lines, needs = instance
    plan = match(lines, needs, today=TODAY)
    check_plan(plan, lines, needs, MatchOptions())
    assert match(lines, needs, today=TODAY) == plan
    rnd.shuffle(lines)
    rnd.shuffle(needs)
    assert match(lines, needs, today=TODAY) == plan
    check_plan(greedy(lines, needs, today=TODAY), lines, needs, MatchOptions())


# The optimum, checked against a plain line-by-line model ------------------------------


def pieces_of(
    d: DemandLine, needs: Sequence[DemandLine], options: MatchOptions
) -> list[tuple[int, int]]:
    """(units, value per unit in tenths of a km) of a demand line, best first: the
    fairness rule written out again, line by line."""
    mates = [
        m
        for m in needs
        if m.item == d.item and m.verified and m.open and (m.need_id or m.id) == (d.need_id or d.id)
    ]
    size = sum(max(m.quantity, m.requested or 0) for m in mates)
    use = sum(m.daily_use or 0 for m in mates)
    q = d.quantity
    out: list[tuple[int, int]] = []
    if use > 0:
        stock = sum(m.stock or 0 for m in mates)
        share = use * q / max(sum(m.quantity for m in mates), 1)
        start = stock / use
        given, level = 0, math.floor(start)
        while given < q and level < options.days_horizon:
            upto = min(q, math.ceil(share * (level + 1 - start) - 1e-9))
            if upto > given:
                out.append((upto - given, round(options.days_km * 10 / (1 + level))))
                given = upto
            level += 1
        if given < q:
            out.append((q - given, 0))
        return out
    # The need's units in order: what it had, then its lines by id; tiers of the need.
    T = options.fairness_tiers
    start = sum(max(m.quantity, m.requested or 0) - m.quantity for m in mates)
    start += sum(m.quantity for m in mates if m.id < d.id)
    for k in range(T):
        low, high = math.ceil(size * k / T), math.ceil(size * (k + 1) / T)
        units = max(0, min(start + q, high) - max(start, low))
        if units:
            weight = 2 * (T - k) / (T + 1)
            out.append((int(units), round(options.fill_km * 10 * weight / max(size, 1))))
    return out


def objective(
    delivered: dict[str, int],
    distance_units: int,
    needs: Sequence[DemandLine],
    options: MatchOptions,
) -> tuple[int, int]:
    """(priority, value - distance) of a plan, both to maximise: the priority weighs
    urgency over needed-by; the value is that of each line's best pieces for what it
    gets. Equal pairs mean equally good plans."""
    priority = 0
    value = 0
    by_item: dict[str, list[DemandLine]] = {}
    for d in needs:
        if d.verified and d.open:
            by_item.setdefault(d.item, []).append(d)
    for lines in by_item.values():
        days = sorted({d.needed_by for d in lines if d.needed_by is not None})
        R = len(days) + any(d.needed_by is None for d in lines)
        for d in lines:
            x = delivered.get(d.id, 0)
            r = days.index(d.needed_by) if d.needed_by is not None else len(days)
            u = URGENCIES.index(d.urgency)
            priority += x * ((3 - u) * R + (R - 1 - r))
            for units, worth in sorted(pieces_of(d, needs, options), key=lambda p: -p[1]):
                take = min(x, units)
                value += take * worth
                x -= take
    return priority, value - distance_units


def reference_objective(
    lines: Sequence[SupplyLine], needs: Sequence[DemandLine], options: MatchOptions
) -> tuple[int, int]:
    """The optimum of one min-cost flow per item over every compatible pair of lines,
    with the priorities weighted far enough apart to be strict."""
    active = [d for d in needs if d.verified and d.open]
    delivered: dict[str, int] = {}
    distance = 0
    for item in sorted({s.item for s in lines}):
        ss = [s for s in lines if s.item == item and s.quantity > 0]
        ds = [d for d in active if d.item == item]
        pairs = [
            (i, j, round(distance_km(s.location, d.location) * 10))
            for i, s in enumerate(ss)
            for j, d in enumerate(ds)
            if compatible(s, d, options)
        ]
        if not pairs:
            continue
        days = sorted({d.needed_by for d in ds if d.needed_by is not None})
        R = len(days) + any(d.needed_by is None for d in ds)
        pieces = {d.id: pieces_of(d, needs, options) for d in ds}
        top = max((w for ps in pieces.values() for _u, w in ps), default=0)
        q_n = (2 * min(len(ss), len(ds)) + 2) * max(p[2] for p in pairs) + 2 * top + 1
        flow = SimpleMinCostFlow()
        sink = len(ss) + len(ds)
        for i, j, km in pairs:
            flow.add_arc_with_capacity_and_unit_cost(i, len(ss) + j, 10**9, km)
        for j, d in enumerate(ds):
            r = days.index(d.needed_by) if d.needed_by is not None else len(days)
            u = URGENCIES.index(d.urgency)
            for units, worth in pieces[d.id]:
                reward = (3 - u) * R * q_n + (R - 1 - r) * q_n + worth
                flow.add_arc_with_capacity_and_unit_cost(len(ss) + j, sink, units, -reward)
        for i, s in enumerate(ss):
            flow.add_arc_with_capacity_and_unit_cost(i, sink, s.quantity, 0)
            flow.set_node_supply(i, s.quantity)
        flow.set_node_supply(sink, -sum(s.quantity for s in ss))
        assert flow.solve() == SimpleMinCostFlow.OPTIMAL
        for n, (_i, j, km) in enumerate(pairs):
            q = flow.flow(n)
            delivered[ds[j].id] = delivered.get(ds[j].id, 0) + q
            distance += q * km
    return objective(delivered, distance, needs, options)


def plan_objective(
    plan: Plan, lines: Sequence[SupplyLine], needs: Sequence[DemandLine], options: MatchOptions
) -> tuple[int, int]:
    by_id_s = {s.id: s for s in lines}
    by_id_d = {d.id: d for d in needs}
    distance = sum(
        a.quantity
        * round(distance_km(by_id_s[a.supply_id].location, by_id_d[a.demand_id].location) * 10)
        for a in plan.allocations
    )
    return objective(plan.delivered_by_demand(), distance, needs, options)


@settings(database=None, max_examples=60, deadline=None)
@given(instances, st.sampled_from([1, 2, 4]), st.sampled_from([0.0, 200.0, 3000.0]))
def test_plan_is_optimal(
    instance: tuple[list[SupplyLine], list[DemandLine]], tiers: int, fill_km: float
) -> None:
    lines, needs = instance
    options = MatchOptions(fairness_tiers=tiers, fill_km=fill_km)
    plan = match(lines, needs, today=TODAY, options=options)
    assert plan_objective(plan, lines, needs, options) == reference_objective(lines, needs, options)


def test_larger_plan_is_optimal() -> None:
    lines, needs = random_instance(random.Random(11), 120, 140)
    options = MatchOptions()
    plan = match(lines, needs, today=TODAY)
    check_plan(plan, lines, needs, options)
    assert plan_objective(plan, lines, needs, options) == reference_objective(lines, needs, options)
    assert plan.stats.supply_groups < len(lines)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bench_shaped_instances_are_optimal(seed: int) -> None:
    """The benchmark's kind of instance (hundreds of places, perishables with many
    reaches, restrictions, standards, more demand than supply) at a size the
    line-by-line reference solves quickly: the aggregated, two-phase model and its
    vectorised decomposition reach the same optimum."""
    from bench.matching import TODAY as BENCH_TODAY
    from bench.matching import make_instance

    lines, needs = make_instance(400, seed)
    assert BENCH_TODAY == TODAY
    assert any(s.best_before for s in lines) and any(s.restrict_regions for s in lines)
    for tiers in (1, 4):
        options = MatchOptions(fairness_tiers=tiers)
        plan = match(lines, needs, today=TODAY, options=options)
        check_plan(plan, lines, needs, options)
        assert plan_objective(plan, lines, needs, options) == reference_objective(
            lines, needs, options
        )


def test_many_lines_at_few_places_split_back_exactly() -> None:
    """Thousands of lines share a handful of places, so the flow is found between
    groups and handed back to lines; every line gets exactly what the groups pass
    on, and the same input in another order gives the same plan."""
    rng = random.Random(17)
    lines, needs = random_instance(rng, 700, 900)
    plan = match(lines, needs, today=TODAY)
    check_plan(plan, lines, needs, MatchOptions())
    assert plan.stats.supply_groups < len(lines) * 3 // 4
    assert plan_objective(plan, lines, needs, MatchOptions()) == reference_objective(
        lines, needs, MatchOptions()
    )
    rng.shuffle(lines)
    rng.shuffle(needs)
    assert match(lines, needs, today=TODAY) == plan


def test_one_bad_line_among_many_is_named() -> None:
    good = [supply(f"s{n}", 5) for n in range(500)]
    needs = [need(f"n{n}", 5) for n in range(500)]
    bad_place = supply("bad", 1, Location("42", 30.0, 200.0))
    with pytest.raises(ValueError, match="'bad': lat/lon out of range"):
        match([*good, bad_place], needs, today=TODAY)
    with pytest.raises(ValueError, match="'n7' appears twice"):
        match(good, [*needs, need("n7", 1)], today=TODAY)
    with pytest.raises(ValueError, match="'b': quantity must be a non-negative integer"):
        match([*good, supply("b", True)], needs, today=TODAY)


def test_greedy_is_never_better() -> None:
    lines, needs = random_instance(random.Random(5), 80, 80)
    best = plan_objective(match(lines, needs, today=TODAY), lines, needs, MatchOptions())
    fcfs = plan_objective(greedy(lines, needs, today=TODAY), lines, needs, MatchOptions())
    assert best >= fcfs


# Packaging -----------------------------------------------------------------------------


def test_imports_no_web_queue_or_database_library() -> None:
    code = (
        "import sys, services.dispatch.matching as m; "
        "m.match([], [], today=__import__('datetime').date(2020, 1, 1)); "
        "print(sorted({n.split('.')[0] for n in sys.modules} & "
        "{'flask', 'celery', 'sqlalchemy', 'kombu', 'psycopg', 'redis'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_numpy_distance_matrix_agrees_with_scalar_distance() -> None:
    from services.dispatch.matching.geo import distance_matrix

    places = [WUHAN, BEIJING, Location("4228"), Location("990000"), SHANGHAI]
    matrix = distance_matrix(places, places)
    for i, a in enumerate(places):
        for j, b in enumerate(places):
            assert matrix[i, j] == pytest.approx(distance_km(a, b), abs=1e-6)
    assert isinstance(matrix, np.ndarray)


# Plans edited by hand -----------------------------------------------------------------


def test_an_edited_plan_keeps_to_the_rules_and_gets_its_reasons() -> None:
    from services.dispatch.matching import Planned, plan_of

    lines = [supply("s1", 10), supply("s2", 5, BEIJING)]
    needs = [need("a", 8), need("b", 6, HUANGSHI)]
    plan = plan_of(
        [Planned("s1", "a", 4), Planned("s2", "b", 5), Planned("s1", "b", 0)],
        lines,
        needs,
        today=TODAY,
    )
    assert flows(plan) == {("s1", "a"): 4, ("s2", "b"): 5}
    assert plan.unmet == {"a": 4, "b": 1}
    reasons = {a.demand_id: a.reason for a in plan.allocations}
    assert reasons["a"].need_fill == 0.5
    assert reasons["b"].distance_km == pytest.approx(distance_km(BEIJING, HUANGSHI), abs=0.1)


def test_an_edited_plan_that_breaks_a_rule_is_refused_with_every_reason() -> None:
    from services.dispatch.matching import Planned, PlanRefused, plan_of

    fruit = supply("fruit", 10, item="fruit", standard=None, best_before=TODAY + timedelta(days=2))
    lines = [
        supply("kn95", 10, standard="GB2626-2006"),
        supply("hubei-only", 10, regions=("42",)),
        supply("hospitals-only", 10, kinds=("hospital",)),
        fruit,
    ]
    needs = [
        need("medical", 10, standards=("GB19083-2010",)),
        need("beijing", 10, BEIJING),
        need("committee", 10, kind="community_committee"),
        need("fruit-far", 10, BEIJING, item="fruit"),
        need("gloves", 10, item="gloves"),
        need("unverified", 10, verified=False),
    ]
    edits = [
        Planned("kn95", "medical", 5),
        Planned("hubei-only", "beijing", 5),
        Planned("hospitals-only", "committee", 5),
        Planned("fruit", "fruit-far", 5),
        Planned("kn95", "gloves", 1),
        Planned("kn95", "unverified", 1),
        Planned("nowhere", "medical", 1),
        Planned("hubei-only", "medical", -1),
    ]
    with pytest.raises(PlanRefused) as refused:
        plan_of(edits, lines, needs, today=TODAY)
    said = {p.index: p.message for p in refused.value.problems}
    assert said == {
        0: "demand line medical accepts GB19083-2010, not GB2626-2006",
        1: "the donor of supply line hubei-only gives only to 42",
        2: "the donor of supply line hospitals-only gives only to hospital, "
        "not to a community_committee",
        3: "supply line fruit would spoil before it reaches demand line fruit-far",
        4: "supply line kn95 is mask, demand line gloves asks for gloves",
        5: "demand line unverified is not verified and open",
        6: "supply line nowhere is not in the plan's supply",
        7: "the quantity must be a whole number, 0 or more",
    }


def test_an_edited_plan_may_not_give_or_take_more_than_there_is() -> None:
    from services.dispatch.matching import Planned, PlanRefused, plan_of

    with pytest.raises(PlanRefused) as refused:
        plan_of(
            [Planned("s1", "a", 6), Planned("s1", "b", 6), Planned("s2", "a", 3)],
            [supply("s1", 10), supply("s2", 5)],
            [need("a", 8), need("b", 6)],
            today=TODAY,
        )
    assert [(p.message, p.involved) for p in refused.value.problems] == [
        ("supply line s1 would give 12 of its 10", (0, 1)),
        ("demand line a would get 9 of the 8 it asks", (0, 2)),
    ]
