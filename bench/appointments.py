"""How fast and how good is the session scheduler, next to first-come-first-served?

A random but reproducible instance (``--seed``): ``--helpers`` helpers (default
1,000) in 40 organisations, most in Asia/Shanghai, each qualified for one to three
topics, speaking Mandarin and perhaps Cantonese, English or Shanghainese, taking 2 to
6 sessions a day, free on 3 to 6 days of the week for 2 to 6 hours a day between 8:00
and 21:00 local time, in 50-minute slots on the hour; and ``--requests`` requests
(default 20,000) that arrived over the three days before the run: 2% crisis, 13%
urgent, 35% soon, 50% routine, 30% in the priority group, half of them stating times
(mornings, evenings, weekdays in the day, or the weekend), one in five a follow-up
naming the helper seen before. The week's slots can hold about three quarters of the
requests, so priorities matter.

``schedule`` and ``first_come_first_served`` solve the same instance; the benchmark
prints, for each:

* time: wall time of the call (best and median of ``--repeat`` runs), and the
  scheduler's best next to the 2 s target; beside it the process's CPU time for the
  best run, which a loaded machine inflates less;
* served: the share of requests given a session, in all and by urgency;
* waits by urgency: median and 90th percentile of the hours from request to slot
  (served requests; they include up to three days of waiting before the run), and
  of the hours from the run to the slot;
* continuity: the share of follow-ups that keep their helper;
* load: sessions per helper (min / median / max over all helpers) and the share of
  helpers given any.

It prints figures only and never fails on them; the machine's load average is
printed beside them.

    .venv/bin/python -m bench.appointments
    .venv/bin/python -m bench.appointments --helpers 1000 --requests 20000 --seed 24 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from services.community.sessions.domain import (
    TOPICS,
    URGENCIES,
    Helper,
    Schedule,
    SessionRequest,
    Slot,
)
from services.community.sessions.scheduling import first_come_first_served, schedule

TARGET_SECONDS = 2.0
NOW = datetime(2026, 12, 7, tzinfo=UTC)  # a Monday, 08:00 in Shanghai
SESSION = timedelta(minutes=50)
ZONES = (("Asia/Shanghai", 0.85), ("Asia/Hong_Kong", 0.1), ("Europe/London", 0.05))
TOPIC_WEIGHTS = dict(zip(TOPICS, (0.3, 0.15, 0.15, 0.15, 0.1, 0.15), strict=True))
REQUEST_LANGUAGES = (
    (("zh",), 0.80),
    (("yue",), 0.05),
    (("yue", "zh"), 0.07),
    (("en",), 0.03),
    (("en", "zh"), 0.03),
    (("wuu", "zh"), 0.02),
)
URGENCY_MIX = (0.02, 0.13, 0.35, 0.50)
Solver = Callable[..., Schedule]


def _local(day: int, hour: int, zone: ZoneInfo) -> datetime:
    local = NOW.astimezone(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=day)
    return datetime(local.year, local.month, local.day, hour, tzinfo=zone).astimezone(UTC)


def make_instance(
    n_helpers: int, n_requests: int, seed: int
) -> tuple[list[Helper], list[SessionRequest]]:
    rng = random.Random(seed)
    topics, topic_w = list(TOPIC_WEIGHTS), list(TOPIC_WEIGHTS.values())
    helpers: list[Helper] = []
    for k in range(n_helpers):
        zone_name = rng.choices([z for z, _ in ZONES], [w for _, w in ZONES])[0]
        zone = ZoneInfo(zone_name)
        chosen: set[str] = set()
        while len(chosen) < rng.choice((1, 2, 2, 3)):
            chosen.add(rng.choices(topics, topic_w)[0])
        if zone_name == "Asia/Hong_Kong":
            langs = ["yue", "zh"] if rng.random() < 0.7 else ["yue"]
        elif zone_name == "Europe/London":
            langs = ["en", "zh"]
        else:
            langs = ["zh"]
            if rng.random() < 0.08:
                langs.append("yue")
            if rng.random() < 0.08:
                langs.append("en")
            if rng.random() < 0.05:
                langs.append("wuu")
        slots: list[Slot] = []
        for day in sorted(rng.sample(range(7), rng.randint(3, 6))):
            length = rng.randint(2, 6)
            first = rng.randint(8, 21 - length)
            for hour in range(first, first + length):
                start = _local(day, hour, zone)
                if start >= NOW:
                    slots.append(Slot(start, start + SESSION))
        helpers.append(
            Helper(
                id=f"h{k:05d}",
                organisation=f"org-{rng.randrange(40):02d}",
                topics=tuple(sorted(chosen)),
                languages=tuple(langs),
                daily_limit=rng.choice((2, 3, 3, 4, 4, 5, 6)),
                slots=tuple(slots),
                timezone=zone_name,
            )
        )
    by_topic = {t: [h.id for h in helpers if t in h.topics] for t in topics}
    shanghai = ZoneInfo("Asia/Shanghai")
    patterns = {
        "mornings": tuple(Slot(_local(d, 8, shanghai), _local(d, 12, shanghai)) for d in range(7)),
        "evenings": tuple(Slot(_local(d, 18, shanghai), _local(d, 22, shanghai)) for d in range(7)),
        "weekdays": tuple(Slot(_local(d, 9, shanghai), _local(d, 17, shanghai)) for d in range(5)),
        "weekend": (Slot(_local(5, 0, shanghai), _local(7, 0, shanghai)),),
    }
    requests: list[SessionRequest] = []
    for k in range(n_requests):
        topic = rng.choices(topics, topic_w)[0]
        windows: tuple[Slot, ...] = ()
        if rng.random() < 0.5:
            windows = patterns[rng.choice(list(patterns))]
        previous = None
        if rng.random() < 0.2 and by_topic[topic]:
            previous = rng.choice(by_topic[topic])
        requests.append(
            SessionRequest(
                id=f"r{k:06d}",
                topic=topic,
                urgency=rng.choices(URGENCIES, URGENCY_MIX)[0],
                languages=rng.choices(
                    [lang for lang, _ in REQUEST_LANGUAGES], [w for _, w in REQUEST_LANGUAGES]
                )[0],
                created_at=NOW - timedelta(minutes=rng.randrange(3 * 24 * 60)),
                priority=rng.random() < 0.3,
                windows=windows,
                previous_helper=previous,
            )
        )
    return helpers, requests


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass(frozen=True, slots=True)
class Figures:
    times: list[float]
    cpu: list[float]
    result: Schedule
    served: float
    served_by: dict[str, float]
    waits: dict[str, tuple[float, float]]
    ahead: dict[str, tuple[float, float]]
    continuity: float
    load: tuple[int, float, int]
    helpers_used: float

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(
    solve: Solver, helpers: list[Helper], requests: list[SessionRequest], repeat: int
) -> Figures:
    times: list[float] = []
    cpu: list[float] = []
    result: Schedule | None = None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = solve(helpers, requests, now=NOW)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    assert result is not None
    by_id = {r.id: r for r in requests}
    waits: dict[str, list[float]] = {u: [] for u in URGENCIES}
    ahead: dict[str, list[float]] = {u: [] for u in URGENCIES}
    for a in result.assignments:
        waits[a.reason.urgency].append(a.reason.wait_hours)
        ahead[a.reason.urgency].append((a.slot.start - NOW).total_seconds() / 3600)
    asked = result.stats.asked
    per_helper = {h.id: 0 for h in helpers}
    for a in result.assignments:
        per_helper[a.helper_id] += 1
    counts = sorted(per_helper.values())
    follow = [a for a in result.assignments if by_id[a.request_id].previous_helper]
    n_follow = sum(1 for r in requests if r.previous_helper)
    return Figures(
        times=times,
        cpu=cpu,
        result=result,
        served=len(result.assignments) / len(requests),
        served_by={u: result.stats.served[u] / max(1, asked[u]) for u in URGENCIES},
        waits={u: (_pct(w, 0.5), _pct(w, 0.9)) for u, w in waits.items()},
        ahead={u: (_pct(w, 0.5), _pct(w, 0.9)) for u, w in ahead.items()},
        continuity=sum(a.reason.continuity for a in follow) / max(1, n_follow),
        load=(counts[0], statistics.median(counts), counts[-1]) if counts else (0, 0, 0),
        helpers_used=sum(1 for c in counts if c) / max(1, len(counts)),
    )


def report(opt: Figures, base: Figures) -> None:
    s = opt.result.stats
    print(
        f"  model: {s.slots} usable slots, {s.nodes} nodes, {s.arcs} arcs, {s.solves} solves; "
        f"{s.follow_ups} follow-ups"
    )
    head = "  ".join(f"{u:>7}" for u in URGENCIES)
    print(f"  {'':8} {'best s':>7} {'median s':>8} {'cpu s':>6}   {'served':>6}  {head}")
    for name, f in (("schedule", opt), ("fcfs", base)):
        cells = "  ".join(f"{f.served_by[u]:7.1%}" for u in URGENCIES)
        cpu = f.cpu[f.times.index(f.best)]
        print(f"  {name:8} {f.best:7.3f} {f.median:8.3f} {cpu:6.3f}   {f.served:6.1%}  {cells}")
    print("  waits, hours from request to slot (median / p90):")
    for name, f in (("schedule", opt), ("fcfs", base)):
        cells = "  ".join(f"{u} {f.waits[u][0]:5.1f} / {f.waits[u][1]:5.1f}" for u in URGENCIES)
        print(f"  {name:8} {cells}")
    print("  hours from the run to the slot (median / p90):")
    for name, f in (("schedule", opt), ("fcfs", base)):
        cells = "  ".join(f"{u} {f.ahead[u][0]:5.1f} / {f.ahead[u][1]:5.1f}" for u in URGENCIES)
        print(f"  {name:8} {cells}")
    print("  continuity and load:")
    for name, f in (("schedule", opt), ("fcfs", base)):
        lo, mid, hi = f.load
        print(
            f"  {name:8} follow-ups with the same helper {f.continuity:6.1%}; sessions per "
            f"helper min {lo} / median {mid:g} / max {hi}; helpers used {f.helpers_used:6.1%}"
        )
    print(
        f"  schedule time / {TARGET_SECONDS} s target: {opt.best / TARGET_SECONDS:.2f} (best), "
        f"{opt.median / TARGET_SECONDS:.2f} (median)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.appointments",
        description="Speed and quality of the session scheduler next to first come, first served.",
    )
    parser.add_argument("--helpers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=24, help="instance seed (default 24)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (default 3)")
    args = parser.parse_args(argv)
    if args.helpers < 1 or args.requests < 1 or args.repeat < 1:
        parser.error("--helpers, --requests and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("aidlink session scheduling benchmark")
    print(
        f"  seed {args.seed}, {args.helpers} helpers, {args.requests} requests, the week from "
        f"{NOW:%Y-%m-%d %H:%M} UTC, repeat {args.repeat}; target {TARGET_SECONDS} s"
    )
    helpers, requests = make_instance(args.helpers, args.requests, args.seed)
    load_before = os.getloadavg()
    opt = measure(schedule, helpers, requests, args.repeat)
    base = measure(first_come_first_served, helpers, requests, args.repeat)
    load_after = os.getloadavg()
    report(opt, base)
    print(
        f"  load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"{os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
