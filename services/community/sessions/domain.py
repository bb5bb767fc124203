"""What the scheduler takes and gives, and the hard rules every schedule keeps.

A *helper* (a counsellor, a social worker, a doctor giving medical advice) states the
topics they are qualified for, the languages they speak, the most sessions they take
a day (a day in their own time zone) and their free slots, each a UTC interval of
one session (e.g. 50 minutes on the hour). A *request* for help states its topic, its
urgency (``crisis``, ``urgent``, ``soon``, ``routine``), whether the person belongs to
the priority group the coordinators' rule names (medical staff, patients and their
families), the languages they accept, optionally the times they can talk, when they
asked, and for a follow-up the helper they saw before.

Hard rules: the helper is qualified for the request's topic and speaks one of its
languages; the slot is one of the helper's free slots, not before the run, and inside
one of the request's times when it states any; no slot is used twice; no helper takes
more sessions on one of their days than their limit (less what is already booked that
day); a request gets at most one session. ``broken_rules`` checks a schedule against
them all; ``scheduling.schedule`` finds the best schedule that keeps them.

All datetimes are timezone-aware; plain values only, nothing here touches a
database, a queue or the web.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

Urgency = Literal["crisis", "urgent", "soon", "routine"]

# Most urgent first; the position is the urgency's rank.
URGENCIES: tuple[Urgency, ...] = ("crisis", "urgent", "soon", "routine")
_RANK = {u: n for n, u in enumerate(URGENCIES)}

# The topics the intake form offers; helpers and requests may name others.
TOPICS = ("anxiety", "grief", "patient_family", "medical_worker", "child_care", "other")

# Tiers: each urgency, the priority group before the rest: (crisis, priority) is 0,
# (routine, not priority) is 7.
TIERS = 2 * len(URGENCIES)


def tier_of(urgency: Urgency, priority: bool) -> int:
    return 2 * _RANK[urgency] + (0 if priority else 1)


def _aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Slot:
    """One session's time: ``start`` to ``end``, timezone-aware."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _aware(self.start, "a slot's start")
        _aware(self.end, "a slot's end")
        if self.end <= self.start:
            raise ValueError("a slot must end after it starts")

    def within(self, windows: Sequence[Slot]) -> bool:
        """Whether the slot lies inside one of ``windows`` (no windows: anywhere)."""
        return not windows or any(w.start <= self.start and self.end <= w.end for w in windows)


# Beijing time: the days of the public ledger's weeks and of the hotlines' figures.
BEIJING = ZoneInfo("Asia/Shanghai")


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Helper:
    """A helper and their free time.

    ``timezone`` (an IANA name) decides which of the helper's days a slot falls on,
    for ``daily_limit``; ``booked`` gives, per such day, the sessions already booked
    outside this run, which count against the limit.
    """

    id: str
    organisation: str
    topics: tuple[str, ...]
    languages: tuple[str, ...]
    daily_limit: int
    slots: tuple[Slot, ...]
    timezone: str = "UTC"
    booked: tuple[tuple[date, int], ...] = ()

    def __post_init__(self) -> None:
        if self.daily_limit < 0:
            raise ValueError(f"helper {self.id}: the daily limit must not be negative")
        _zone(self.timezone)  # an unknown zone fails here
        ordered = sorted(self.slots, key=lambda s: s.start)
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end:
                raise ValueError(f"helper {self.id}: slots at {a.start} and {b.start} overlap")

    def day_of(self, slot: Slot) -> date:
        """The helper's own day the slot starts on."""
        return slot.start.astimezone(_zone(self.timezone)).date()

    def room_on(self, day: date) -> int:
        """Sessions the helper may still take on ``day``."""
        taken = sum(n for d, n in self.booked if d == day)
        return max(0, self.daily_limit - taken)


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """A request for a session.

    ``windows``: the times the person can talk (none: any time). ``previous_helper``:
    for a follow-up, the helper seen before. ``created_at`` starts the wait.
    """

    id: str
    topic: str
    urgency: Urgency
    languages: tuple[str, ...]
    created_at: datetime
    priority: bool = False
    windows: tuple[Slot, ...] = ()
    previous_helper: str | None = None

    def __post_init__(self) -> None:
        if self.urgency not in _RANK:
            raise ValueError(f"request {self.id}: unknown urgency {self.urgency!r}")
        if not self.languages:
            raise ValueError(f"request {self.id}: at least one language is needed")
        _aware(self.created_at, f"request {self.id}'s created_at")

    @property
    def tier(self) -> int:
        return tier_of(self.urgency, self.priority)


def qualified(helper: Helper, request: SessionRequest) -> bool:
    """Topic and language: whether the helper may take the request at all."""
    return request.topic in helper.topics and not set(request.languages).isdisjoint(
        helper.languages
    )


def fits(helper: Helper, request: SessionRequest, slot: Slot, now: datetime) -> bool:
    """Every rule of one assignment on its own (the schedule's rules aside)."""
    return (
        qualified(helper, request)
        and slot in helper.slots
        and slot.start >= now
        and slot.within(request.windows)
    )


def hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an assignment is in the schedule, in figures a person can read.

    ``wait_hours``: from the request to the session's start. ``follow_up``: the
    request names a previous helper; ``continuity``: and it has that helper again.
    ``helper_day_sessions`` / ``daily_limit``: the helper's sessions that day in this
    schedule (with those booked before) against their limit; ``helper_sessions``:
    theirs in the whole schedule.
    """

    urgency: Urgency
    priority: bool
    wait_hours: float
    follow_up: bool
    continuity: bool
    helper_day_sessions: int
    daily_limit: int
    helper_sessions: int

    def describe(self) -> str:
        """E.g. "crisis, priority group; 2.5 h after the request; a follow-up with
        the same helper; the helper's 2 of 4 that day, 5 in this schedule"."""
        who = f"{self.urgency}, priority group" if self.priority else self.urgency
        parts = [who, f"{self.wait_hours:.1f} h after the request"]
        if self.follow_up:
            parts.append(
                "a follow-up with the same helper"
                if self.continuity
                else "a follow-up with another helper (the one seen before had no slot as "
                "early, or may not take it)"
            )
        parts.append(
            f"the helper's {self.helper_day_sessions} of {self.daily_limit} that day, "
            f"{self.helper_sessions} in this schedule"
        )
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Assignment:
    request_id: str
    helper_id: str
    slot: Slot
    reason: Reason


# Why a request is left without a session.
NO_TOPIC = "no-helper-for-topic"
NO_LANGUAGE = "no-helper-in-language"
NO_SLOT = "no-free-slot-in-times"
TAKEN = "slots-taken"

_UNASSIGNED_TEXT = {
    NO_TOPIC: "no helper is qualified for the topic",
    NO_LANGUAGE: "no helper qualified for the topic speaks one of its languages",
    NO_SLOT: "no qualified helper speaking its language has a free slot in its times",
    TAKEN: (
        "every slot that fits went to a more urgent request or one waiting longer, "
        "or its helper reached the daily limit"
    ),
}


@dataclass(frozen=True, slots=True)
class Unassigned:
    """A request without a session; ``fitting_slots``: the free slots of qualified
    helpers in its languages and times (all taken, for ``slots-taken``)."""

    request_id: str
    reason: str
    fitting_slots: int = 0

    def describe(self) -> str:
        text = _UNASSIGNED_TEXT[self.reason]
        if self.reason == TAKEN:
            text += f" ({self.fitting_slots} slots fit)"
        return text


@dataclass(frozen=True, slots=True)
class ScheduleStats:
    """Figures about a schedule and how it was found (``seconds`` is wall time and
    takes no part in comparing schedules)."""

    requests: int
    helpers: int
    slots: int
    served: dict[str, int]
    asked: dict[str, int]
    continuity_kept: int
    follow_ups: int
    nodes: int = 0
    arcs: int = 0
    solves: int = 0
    seconds: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Schedule:
    """``assignments`` sorted by (slot start, helper id); ``unassigned`` by request
    id. Every request is in exactly one of them."""

    assignments: tuple[Assignment, ...]
    unassigned: tuple[Unassigned, ...]
    stats: ScheduleStats

    def by_request(self) -> dict[str, Assignment]:
        return {a.request_id: a for a in self.assignments}


def broken_rules(
    schedule: Schedule,
    helpers: Iterable[Helper],
    requests: Iterable[SessionRequest],
    *,
    now: datetime,
) -> list[str]:
    """Every hard rule the schedule breaks, in words (none: an empty list)."""
    by_helper = {h.id: h for h in helpers}
    by_request = {r.id: r for r in requests}
    broken: list[str] = []
    seen: Counter[str] = Counter(a.request_id for a in schedule.assignments)
    seen.update(u.request_id for u in schedule.unassigned)
    for rid, n in sorted(seen.items()):
        if n > 1:
            broken.append(f"request {rid} appears {n} times")
        if rid not in by_request:
            broken.append(f"request {rid} is unknown")
    broken += [f"request {rid} is missing" for rid in sorted(set(by_request) - set(seen))]
    used: Counter[tuple[str, datetime]] = Counter()
    per_day: Counter[tuple[str, date]] = Counter()
    for a in schedule.assignments:
        helper, request = by_helper.get(a.helper_id), by_request.get(a.request_id)
        if helper is None or request is None:
            broken.append(f"{a.request_id} -> {a.helper_id}: unknown helper or request")
            continue
        if request.topic not in helper.topics:
            broken.append(f"{a.request_id}: {a.helper_id} is not qualified for {request.topic}")
        if set(request.languages).isdisjoint(helper.languages):
            broken.append(f"{a.request_id}: {a.helper_id} speaks none of its languages")
        if a.slot not in helper.slots:
            broken.append(f"{a.request_id}: {a.slot.start} is not a free slot of {a.helper_id}")
        if a.slot.start < now:
            broken.append(f"{a.request_id}: {a.slot.start} is in the past")
        if not a.slot.within(request.windows):
            broken.append(f"{a.request_id}: {a.slot.start} is outside its times")
        used[(a.helper_id, a.slot.start)] += 1
        per_day[(a.helper_id, helper.day_of(a.slot))] += 1
    broken += [f"{h}'s slot at {t} is used {n} times" for (h, t), n in used.items() if n > 1]
    for (hid, day), n in sorted(per_day.items()):
        room = by_helper[hid].room_on(day)
        if n > room:
            broken.append(f"{hid} has {n} sessions on {day}, more than the {room} left")
    return broken


# Helpers, requests and sessions as stored --------------------------------------------

# What a helper is: the kinds of help they give (a doctor gives medical advice).
HELPER_KINDS = ("counsellor", "social_worker", "doctor")
# A helper is registered ``pending``, then ``verified`` or ``rejected`` by a coordinator;
# ``withdrawn`` once they left their organisation or were erased.
HELPER_STATUSES = ("pending", "verified", "rejected", "withdrawn")
# Who may be served first within an urgency, by the coordinators' rule (a setting).
PRIORITY_GROUPS = ("medical_staff", "patient", "patient_family")
REQUEST_STATUSES = ("open", "scheduled", "closed")
SESSION_STATUSES = ("booked", "confirmed", "declined", "held", "missed", "cancelled")
# The helper sees the seeker's contact from this long before the session's start to
# this long after its end, and at no other time.
CONTACT_MARGIN = timedelta(minutes=15)

# Words that speak of self-harm, in Chinese and English, matched in a request's text
# (lower-cased, spaces kept). A match flags the request ``crisis``: its urgency becomes
# crisis and the answer carries the crisis line at once. A short list on purpose: it
# catches the plain words people write in a hurry; anything subtler is the helpers'
# and coordinators' reading, not a filter's.
SELF_HARM_WORDS = (
    # Chinese
    "自杀",
    "轻生",
    "不想活",
    "活不下去",
    "想死",
    "寻死",
    "自残",
    "自伤",
    "割腕",
    "跳楼",
    "结束生命",
    "结束自己",
    # English
    "suicide",
    "suicidal",
    "kill myself",
    "end my life",
    "self-harm",
    "self harm",
    "hurt myself",
    "want to die",
    "don't want to live",
    "do not want to live",
)


def speaks_of_self_harm(text: str | None) -> bool:
    """Whether ``text`` holds one of ``SELF_HARM_WORDS``."""
    if not text:
        return False
    folded = " ".join(text.lower().replace("\u2019", "'").split())
    return any(word in folded for word in SELF_HARM_WORDS)


def contact_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """When the assigned helper may see the seeker's contact for a session."""
    return start - CONTACT_MARGIN, end + CONTACT_MARGIN


def in_priority_group(group: str | None, rule: Iterable[str]) -> bool:
    """Whether a request of ``group`` is served first, by the coordinators' rule."""
    return group is not None and group in set(rule)
