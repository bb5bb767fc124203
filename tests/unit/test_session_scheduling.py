"""The session scheduler: hand-made schedules with known optima, the hard rules of any
schedule, and the exact optimum against a brute force on small instances and against a
model with an arc per request and slot on larger ones."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.community.sessions.domain import (
    NO_LANGUAGE,
    NO_SLOT,
    NO_TOPIC,
    TAKEN,
    URGENCIES,
    Helper,
    Schedule,
    SessionRequest,
    Slot,
    Urgency,
    broken_rules,
)
from services.community.sessions.scheduling import first_come_first_served, schedule
from services.community.sessions.service import free_time, week_slots

NOW = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)


def at(hour: int, day: int = 0, minute: int = 0) -> Slot:
    start = NOW + day * DAY + timedelta(hours=hour, minutes=minute)
    return Slot(start, start + timedelta(minutes=50))


def helper(
    id: str,
    slots: list[Slot],
    *,
    topics: tuple[str, ...] = ("anxiety",),
    languages: tuple[str, ...] = ("zh",),
    limit: int = 8,
    timezone: str = "UTC",
) -> Helper:
    return Helper(id, "org-1", topics, languages, limit, tuple(slots), timezone)


def request(
    id: str,
    *,
    hours_ago: float = 1,
    urgency: Urgency = "routine",
    topic: str = "anxiety",
    languages: tuple[str, ...] = ("zh",),
    priority: bool = False,
    windows: tuple[Slot, ...] = (),
    previous: str | None = None,
) -> SessionRequest:
    return SessionRequest(
        id=id,
        topic=topic,
        urgency=urgency,
        languages=languages,
        created_at=NOW - timedelta(hours=hours_ago),
        priority=priority,
        windows=windows,
        previous_helper=previous,
    )


def booked(result: Schedule) -> dict[str, tuple[str, datetime]]:
    return {a.request_id: (a.helper_id, a.slot.start) for a in result.assignments}


def run(helpers: list[Helper], requests: list[SessionRequest]) -> Schedule:
    result = schedule(helpers, requests, now=NOW)
    assert broken_rules(result, helpers, requests, now=NOW) == []
    return result


# Hand-made cases -----------------------------------------------------------------------


def test_a_follow_up_keeps_its_helper_even_against_the_load() -> None:
    helpers = [helper("a", [at(9), at(10)]), helper("b", [at(9), at(10)])]
    requests = [
        request("first", hours_ago=5, previous="b"),
        request("again", hours_ago=4, previous="b"),
        request("new", hours_ago=3),
    ]
    got = booked(run(helpers, requests))
    # Both follow-ups see b; the wait puts two sessions at 9:00, so one of them is b's
    # 10:00 and the new request takes a's 9:00.
    assert {got["first"][0], got["again"][0]} == {"b"}
    assert got["new"] == ("a", at(9).start)
    assert sorted(t for _, t in got.values()) == [at(9).start, at(9).start, at(10).start]


def test_the_wait_comes_before_continuity() -> None:
    helpers = [helper("a", [at(9)]), helper("b", [at(15)])]
    result = run(helpers, [request("r", previous="b")])
    a = result.assignments[0]
    assert (a.helper_id, a.reason.follow_up, a.reason.continuity) == ("a", True, False)
    assert "another helper" in a.reason.describe()


def test_a_crisis_request_that_arrived_last_gets_the_earliest_slot() -> None:
    helpers = [helper("a", [at(9), at(10), at(11)])]
    requests = [
        request("old", hours_ago=72),
        request("older", hours_ago=96),
        request("oldest", hours_ago=120),
        request("crisis", hours_ago=0.1, urgency="crisis"),
    ]
    result = run(helpers, requests)
    got = booked(result)
    assert got["crisis"] == ("a", at(9).start)
    # The routine requests that waited longest have the other two, oldest first.
    assert got["oldest"][1] == at(10).start
    assert got["older"][1] == at(11).start
    [left] = result.unassigned
    assert (left.request_id, left.reason, left.fitting_slots) == ("old", TAKEN, 3)
    reason = next(a.reason for a in result.assignments if a.request_id == "crisis")
    assert reason.urgency == "crisis"
    assert reason.describe().startswith("crisis; 9.1 h after the request")


def test_urgency_beats_the_wait_for_service_and_for_the_earlier_slot() -> None:
    helpers = [helper("a", [at(9), at(10)])]
    requests = [
        request("routine", hours_ago=200),
        request("soon", hours_ago=100, urgency="soon"),
        request("urgent", hours_ago=1, urgency="urgent"),
    ]
    result = run(helpers, requests)
    got = booked(result)
    assert got["urgent"][1] == at(9).start
    assert got["soon"][1] == at(10).start
    assert [u.request_id for u in result.unassigned] == ["routine"]


def test_the_priority_group_goes_first_within_an_urgency() -> None:
    helpers = [helper("a", [at(9)])]
    requests = [request("early", hours_ago=50), request("nurse", hours_ago=1, priority=True)]
    got = booked(run(helpers, requests))
    assert list(got) == ["nurse"]


def test_within_a_tier_the_longest_waiting_is_served_first() -> None:
    helpers = [helper("a", [at(9)]), helper("b", [at(10)], languages=("zh", "en"))]
    requests = [
        request("new", hours_ago=1),
        request("old", hours_ago=30),
        request("english", hours_ago=2, languages=("en",)),
    ]
    got = booked(run(helpers, requests))
    # English can only go to b; of the other two the older is served.
    assert got == {"english": ("b", at(10).start), "old": ("a", at(9).start)}


def test_a_helpers_daily_limit_holds_in_their_own_time_zone() -> None:
    # Shanghai is UTC+8: 16:00 and 17:00 UTC fall on the helper's next day.
    slots = [at(9), at(10), at(11), at(16), at(17)]
    helpers = [helper("a", slots, limit=2, timezone="Asia/Shanghai")]
    requests = [request(f"r{n}", hours_ago=10 - n) for n in range(5)]
    result = run(helpers, requests)
    starts = sorted(a.slot.start for a in result.assignments)
    assert starts == [at(9).start, at(10).start, at(16).start, at(17).start]
    day = next(a for a in result.assignments if a.slot.start == at(10).start)
    assert (day.reason.helper_day_sessions, day.reason.daily_limit) == (2, 2)
    assert day.reason.helper_sessions == 4


def test_sessions_booked_before_count_against_the_limit() -> None:
    h = helper("a", [at(9), at(10), at(11)], limit=2)
    h = free_time(h, [at(11)])
    assert h.slots == (at(9), at(10))
    result = run([h], [request("x", hours_ago=2), request("y", hours_ago=1)])
    assert [a.request_id for a in result.assignments] == ["x"]
    assert result.assignments[0].reason.helper_day_sessions == 2


def test_no_slot_is_booked_twice_under_fifty_requests() -> None:
    helpers = [helper(f"h{n}", [at(9), at(10)], limit=2) for n in range(5)]
    requests = [request(f"r{n:02d}", hours_ago=n + 1) for n in range(50)]
    result = run(helpers, requests)
    slots = Counter((a.helper_id, a.slot.start) for a in result.assignments)
    assert len(slots) == 10 and set(slots.values()) == {1}
    assert {a.request_id for a in result.assignments} == {f"r{n:02d}" for n in range(40, 50)}
    assert {u.reason for u in result.unassigned} == {TAKEN}


def test_language_topic_and_times_are_hard_rules_with_their_reasons() -> None:
    helpers = [
        helper("zh", [at(9)], topics=("anxiety",), languages=("zh",)),
        helper("yue", [at(10)], topics=("grief",), languages=("yue", "zh")),
    ]
    requests = [
        request("cantonese", languages=("yue",)),
        request("child", topic="child_care"),
        request("evening", windows=(Slot(at(18).start, at(22).start),)),
        request("either", languages=("en", "zh"), topic="grief"),
    ]
    result = run(helpers, requests)
    assert booked(result) == {"either": ("yue", at(10).start)}
    reasons = {u.request_id: u.reason for u in result.unassigned}
    assert reasons == {"cantonese": NO_LANGUAGE, "child": NO_TOPIC, "evening": NO_SLOT}
    assert all(u.describe() for u in result.unassigned)


def test_a_slot_must_lie_inside_the_requests_times_and_not_in_the_past() -> None:
    helpers = [helper("a", [at(9, day=-1), at(9), at(20)])]
    window = (Slot(at(19).start, at(21).start),)
    result = run(helpers, [request("x", windows=window), request("y")])
    assert booked(result) == {"x": ("a", at(20).start), "y": ("a", at(9).start)}


def test_the_load_spreads_when_all_else_is_equal() -> None:
    monday, tuesday = (Slot(at(0).start, at(0, day=1).start),), (
        Slot(at(0, day=1).start, at(0, day=2).start),
    )
    helpers = [helper("a", [at(9), at(9, day=1)]), helper("b", [at(9, day=1)])]
    requests = [request("mon", windows=monday), request("tue", windows=tuesday)]
    got = booked(run(helpers, requests))
    assert got == {"mon": ("a", at(9).start), "tue": ("b", at(9, day=1).start)}


def test_the_same_input_in_any_order_gives_the_same_schedule() -> None:
    rng = random.Random(3)
    helpers, requests = random_instance(rng, n_helpers=6, n_requests=30)
    first = schedule(helpers, requests, now=NOW)
    rng.shuffle(helpers)
    rng.shuffle(requests)
    again = schedule(helpers, requests, now=NOW)
    assert first.assignments == again.assignments
    assert first.unassigned == again.unassigned


def test_first_come_first_served_takes_the_earliest_slot_in_order_of_arrival() -> None:
    helpers = [helper("a", [at(9), at(10)])]
    requests = [
        request("crisis", hours_ago=1, urgency="crisis"),
        request("routine", hours_ago=2),
        request("late", hours_ago=0.5),
    ]
    result = first_come_first_served(helpers, requests, now=NOW)
    assert broken_rules(result, helpers, requests, now=NOW) == []
    assert booked(result) == {"routine": ("a", at(9).start), "crisis": ("a", at(10).start)}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        helper("a", [at(9), at(9, minute=30)])
    with pytest.raises(ValueError, match="timezone-aware"):
        Slot(datetime(2026, 12, 7, 9), datetime(2026, 12, 7, 10))
    with pytest.raises(ValueError, match="urgency"):
        request("x", urgency="whenever")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeat"):
        schedule([helper("a", []), helper("a", [])], [], now=NOW)


def test_a_week_of_availability_becomes_utc_slots() -> None:
    slots = week_slots(
        date(2026, 12, 7), [(0, time(9), time(12)), (6, time(20), time(21))], "Asia/Shanghai"
    )
    assert [s.start.hour for s in slots] == [1, 2, 3, 12]
    assert all(s.end - s.start == timedelta(minutes=50) for s in slots)
    assert slots[-1].start.date() == date(2026, 12, 13)


# Any schedule keeps every hard rule, and is the exact optimum ------------------------

TOPIC_POOL = ("anxiety", "grief")
LANGUAGE_POOL = ("zh", "yue")


def random_instance(
    rng: random.Random, *, n_helpers: int, n_requests: int, hours: int = 6, days: int = 2
) -> tuple[list[Helper], list[SessionRequest]]:
    grid = [(d, h) for d in range(days) for h in range(8, 8 + hours)]
    helpers = []
    for k in range(n_helpers):
        chosen = sorted(rng.sample(grid, rng.randint(0, min(4, len(grid)))))
        helpers.append(
            Helper(
                id=f"h{k}",
                organisation="org",
                topics=tuple(rng.sample(TOPIC_POOL, rng.randint(1, 2))),
                languages=tuple(rng.sample(LANGUAGE_POOL, rng.randint(1, 2))),
                daily_limit=rng.randint(0, 3),
                slots=tuple(at(h, day=d) for d, h in chosen),
                timezone=rng.choice(("UTC", "Asia/Shanghai")),
            )
        )
    requests = []
    for k in range(n_requests):
        windows: tuple[Slot, ...] = ()
        if rng.random() < 0.3:
            d, h = rng.choice(grid)
            windows = (Slot(at(h, day=d).start, at(h + rng.randint(1, 4), day=d).start),)
        requests.append(
            request(
                f"r{k}",
                hours_ago=rng.choice((1, 2, 5, 30)),
                urgency=rng.choice(URGENCIES),
                topic=rng.choice(TOPIC_POOL),
                languages=tuple(rng.sample(LANGUAGE_POOL, rng.randint(1, 2))),
                priority=rng.random() < 0.3,
                windows=windows,
                previous=f"h{rng.randrange(n_helpers)}" if rng.random() < 0.4 else None,
            )
        )
    return helpers, requests


def objective(
    pairs: dict[str, tuple[Helper, Slot]], requests: list[SessionRequest]
) -> tuple[object, ...]:
    """The module's objective as a tuple to minimise: served per tier (most urgent
    first), the weighted wait in ten-minute ticks (ages in whole hours), follow-ups
    with the helper seen before, then the load."""
    by_id = {r.id: r for r in requests}
    tiers = Counter(by_id[rid].tier for rid in pairs)
    wait = 0
    for rid, (_h, slot) in pairs.items():
        r = by_id[rid]
        weight = 2 ** (3 - URGENCIES.index(r.urgency))
        age = int((NOW - r.created_at).total_seconds() // 3600) * 60
        start = int((slot.start - NOW).total_seconds() // 60)
        wait += weight * (start // 10 - age // 10)
    kept = sum(1 for rid, (h, _s) in pairs.items() if by_id[rid].previous_helper == h.id)
    load = Counter(h.id for h, _s in pairs.values())
    spread = sum(n * (n - 1) // 2 for n in load.values())
    return (*(-tiers[t] for t in range(8)), wait, -kept, spread)


def brute_force(helpers: list[Helper], requests: list[SessionRequest]) -> tuple[object, ...]:
    options = []
    for r in requests:
        fit = [
            (h, s)
            for h in helpers
            for s in h.slots
            if r.topic in h.topics
            and set(r.languages) & set(h.languages)
            and s.start >= NOW
            and s.within(r.windows)
        ]
        options.append([None, *fit])
    best: tuple[object, ...] | None = None
    for choice in itertools.product(*options):
        used = [c for c in choice if c is not None]
        if len({(h.id, s.start) for h, s in used}) < len(used):
            continue
        per_day = Counter((h.id, h.day_of(s)) for h, s in used)
        by_id = {h.id: h for h in helpers}
        if any(n > by_id[hid].room_on(day) for (hid, day), n in per_day.items()):
            continue
        pairs = {r.id: c for r, c in zip(requests, choice, strict=True) if c is not None}
        value = objective(pairs, requests)
        if best is None or value < best:
            best = value
    assert best is not None
    return best


@settings(database=None, max_examples=80, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 4), st.integers(0, 12))
def test_any_schedule_keeps_every_hard_rule(rng: random.Random, n_helpers: int, n: int) -> None:
    helpers, requests = random_instance(rng, n_helpers=n_helpers, n_requests=n)
    for solve in (schedule, first_come_first_served):
        result = solve(helpers, requests, now=NOW)
        assert broken_rules(result, helpers, requests, now=NOW) == []
        assert len(result.assignments) + len(result.unassigned) == len(requests)


@settings(database=None, max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 3), st.integers(1, 4))
def test_the_schedule_is_the_exact_optimum(rng: random.Random, n_helpers: int, n: int) -> None:
    helpers, requests = random_instance(rng, n_helpers=n_helpers, n_requests=n, hours=3)
    result = schedule(helpers, requests, now=NOW)
    by_helper = {h.id: h for h in helpers}
    pairs = {a.request_id: (by_helper[a.helper_id], a.slot) for a in result.assignments}
    assert objective(pairs, requests) == brute_force(helpers, requests)


def test_the_checker_names_what_a_schedule_breaks() -> None:
    helpers = [helper("a", [at(9)], limit=1)]
    requests = [request("x"), request("y", languages=("en",))]
    good = run(helpers, requests)
    bad = Schedule(
        good.assignments + tuple(
            type(good.assignments[0])("y", "a", at(9), good.assignments[0].reason)
            for _ in range(1)
        ),
        (),
        good.stats,
    )
    broken = broken_rules(bad, helpers, requests, now=NOW)
    assert any("speaks none" in b for b in broken)
    assert any("used 2 times" in b for b in broken)
    assert any("more than the 1 left" in b for b in broken)


def pairwise_optimum(helpers: list[Helper], requests: list[SessionRequest]) -> tuple[object, ...]:
    """The objective's optimum from a model with an arc per compatible request and
    slot and every level weighted into one cost (small instances only)."""
    from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

    slots = [(h, s) for h in helpers for s in h.slots if s.start >= NOW]
    days = sorted({(h.id, h.day_of(s)) for h, s in slots})
    by_helper = {h.id: h for h in helpers}
    R, S, D, H = len(requests), len(slots), len(days), len(helpers)
    sink = R + S + D + H
    lowest = R * R + 1  # the load: at most R(R-1)/2
    per_follow_up = lowest  # continuity, above the load
    waits = R * per_follow_up + lowest  # the wait, above both
    pairs_of: list[tuple[int, int, int]] = []  # (request, slot, cost below the tiers)
    for i, r in enumerate(requests):
        weight = 2 ** (3 - URGENCIES.index(r.urgency))
        age = int((NOW - r.created_at).total_seconds() // 3600) * 60
        for k, (h, s) in enumerate(slots):
            if r.topic in h.topics and set(r.languages) & set(h.languages) and s.within(r.windows):
                start = int((s.start - NOW).total_seconds() // 60)
                kept = per_follow_up if r.previous_helper == h.id else 0
                pairs_of.append((i, k, weight * (start // 10 - age // 10) * waits - kept))
    # A tier's reward outweighs all the lower levels can change.
    q = 2 * sum(abs(c) for _i, _k, c in pairs_of) + R * per_follow_up + lowest
    arcs = [(i, sink, 1, 0) for i in range(R)]
    arcs += [(i, R + k, 1, c - (8 - requests[i].tier) * q) for i, k, c in pairs_of]
    for k, (h, s) in enumerate(slots):
        arcs.append((R + k, R + S + days.index((h.id, h.day_of(s))), 1, 0))
    for d, (hid, day) in enumerate(days):
        hi = [h.id for h in helpers].index(hid)
        arcs.append((R + S + d, R + S + D + hi, by_helper[hid].room_on(day), 0))
    for hi in range(H):
        for k in range(R):
            arcs.append((R + S + D + hi, sink, 1, k))
    flow = SimpleMinCostFlow()
    for t, hd, c, cost in arcs:
        flow.add_arc_with_capacity_and_unit_cost(t, hd, c, cost)
    for i in range(R):
        flow.set_node_supply(i, 1)
    flow.set_node_supply(sink, -R)
    assert flow.solve() == SimpleMinCostFlow.OPTIMAL
    pairs = {}
    for a in range(flow.num_arcs()):
        if flow.flow(a) and flow.tail(a) < R and flow.head(a) != sink:
            pairs[requests[flow.tail(a)].id] = slots[flow.head(a) - R]
    return objective(pairs, requests)


@settings(database=None, max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(2, 6), st.integers(5, 25))
def test_the_aggregated_network_reaches_the_pairwise_optimum(
    rng: random.Random, n_helpers: int, n: int
) -> None:
    helpers, requests = random_instance(rng, n_helpers=n_helpers, n_requests=n)
    result = schedule(helpers, requests, now=NOW)
    by_helper = {h.id: h for h in helpers}
    pairs = {a.request_id: (by_helper[a.helper_id], a.slot) for a in result.assignments}
    assert objective(pairs, requests) == pairwise_optimum(helpers, requests)
