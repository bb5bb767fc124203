"""The scheduler: requests for help matched to helpers' free slots, exactly.

Objective, lexicographic (the hard rules of ``domain`` always hold):

1. urgency and priority: as many crisis requests of the priority group as can be
   served, then the other crisis requests, then urgent ones (priority group first),
   then soon, then routine (the eight tiers of ``domain.tier_of``);
2. the wait: every session as early as it can be, and within a tier the requests
   waiting longest served first: the sum over served requests of the slot's start
   less the request's age, each hour weighted by urgency, twice the next
   urgency's. So of any two requests that could swap their slots the more urgent
   one has the earlier slot (a crisis request that arrived last gets the earliest
   slot that fits), and of two of one urgency the older one, or within a class of
   requests (same topic, languages and times) the one in the priority group;
3. continuity: as many follow-ups as can be go to the helper they saw before;
4. the load: sessions spread over helpers, the sum over helpers of n(n-1)/2 for n
   sessions (each helper's k-th session costs k-1), so the next session goes to the
   helper with fewest when all else is equal.

Level 2 weighs urgencies' hours rather than ranking them strictly: a strict order
of the tiers' waits would need costs beyond 64-bit integers or a solve per tier,
and the weights already give the earlier slot to the more urgent request wherever
two requests could exchange theirs. Times are counted in ticks of ten minutes,
ages in whole hours (up to four weeks); within a tick or an hour the hand-out below
decides, earliest slot to the oldest request.

Why a min-cost flow. Matching requests to slots under daily limits is a
transportation problem (each request one unit, each slot one, each helper's day its
limit), so a min-cost flow is exact and integral; OR-Tools' solver takes the
benchmark's 20,000 requests and 18,000 slots in well under a second of CPU, where a
CP-SAT model with a variable per compatible pair (some 50 million) would not even
be built in the 2 s target, and a linear sum assignment cannot carry the daily
limits. To keep the network near the input's size, requests and slots meet through
aggregate nodes rather than an arc per compatible pair:

    requests ── class node G (topic, languages, times, urgency)
             ── time node X (topic, languages, slot shape: start and end)
             ── Y (topic, language, shape)
             ── H (the helpers' topics and languages, shape)
             ── slot ── helper's day (capacity: the daily limit) ── helper ── sink

A class's requests are pooled in a source per tier, with one arc into G per hour of
age; a follow-up whose previous helper may take it is a node of its own, with arcs
straight to that helper's slots in its times (continuity). Each request (pool) also
has an arc to the sink: left without a session. Every path from a request to a slot
is a pair that keeps the hard rules, and every such pair is a path. Costs: the
tier's reward and the request's age on its arc into G (or on a continuity arc), the
shape's start weighted by urgency on G -> X (or on the continuity arc); helper ->
sink is one arc of capacity one per session the helper may give, the k-th costing
k-1 (level 4); a continuity arc is worth one level-3 unit.

Solving. Phase 1 solves levels 1 and 2 in one flow, on the network without what
only phase 2 needs (slot and helper nodes, load and continuity arcs): a tier's
reward is ``Q`` times its rank, ``Q`` larger than any change of level 2 along a
simple cycle of the residual graph (such a cycle passes the sink once, so changes
at most two requests' service, and the time and age costs it changes are bounded
by the class, pool and request nodes it can visit), so no change of wait outweighs
one request of a higher tier. The flow is carried over to the whole network (a
continuity arc costs what the path through its class node to the same slot costs,
so it stays optimal), and node potentials of its residual graph (Bellman-Ford) are
an optimal dual: by complementary slackness every optimal flow fills the arcs of
negative reduced cost and leaves empty those of positive reduced cost. Phase 2
fixes those and solves levels 3 and 4 over the rest, continuity worth more than any
load change along a cycle (which changes at most two helper arcs). The result is
the exact lexicographic optimum; the unit tests compare it with a brute force.

Back to requests. A class's served requests (most urgent, priority group, oldest,
then by id) take its flows to time nodes earliest first; each node hands its
requests on in the same order to its flows, by head; the helpers' class nodes give
slots in helper id order. Any such hand-out keeps the rules and the objective; it is
deterministic, and the same input in any order gives the same schedule.

``first_come_first_served`` is the baseline: requests in the order they arrived,
each taking the earliest slot that fits (ties by helper id) under the same rules.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import numpy as np
import numpy.typing as npt
from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

from services.community.sessions.domain import (
    NO_LANGUAGE,
    NO_SLOT,
    NO_TOPIC,
    TAKEN,
    TIERS,
    URGENCIES,
    Assignment,
    Helper,
    Reason,
    Schedule,
    ScheduleStats,
    SessionRequest,
    Slot,
    Unassigned,
    Urgency,
    hours,
)

I64 = npt.NDArray[np.int64]

# The largest cost times the node count stays below this (OR-Tools scales costs by
# the number of nodes); a margin of 16 under int64.
_COST_LIMIT = 2**59
# A request's age counts up to this, so the costs stay bounded.
AGE_CAP = timedelta(days=28)
# Times are counted in ticks of this many minutes (more, should the costs not fit).
_TICK = 10

# (topic, languages, times): times numbered by ``_Instance.windows``
ClassKey = tuple[str, tuple[str, ...], int]


@dataclass(slots=True)
class _Instance:
    """Helpers and requests by id, the usable slots in (start, end, helper id)
    order, their shapes (distinct start and end) and helpers' days."""

    now: datetime
    helpers: list[Helper]
    requests: list[SessionRequest]
    h_index: dict[str, int]
    s_helper: list[int]
    s_slot: list[Slot]
    s_shape: list[int]
    s_day: list[int]
    shapes: list[Slot]
    d_helper: list[int]
    d_date: list[date]
    d_room: list[int]
    # (topic, language, shape) -> slot indexes, in slot order
    y_slots: dict[tuple[str, str, int], list[int]]
    # helper -> its usable slot indexes
    h_slots: list[list[int]]
    # The distinct times of requests, numbered, and the shapes inside each.
    windows: dict[tuple[Slot, ...], int] = field(default_factory=dict)
    window_shapes: list[list[int]] = field(default_factory=list)
    class_shapes: dict[ClassKey, list[int]] = field(default_factory=dict)
    class_fitting: dict[ClassKey, int] = field(default_factory=dict)
    topic_languages: dict[str, set[str]] = field(default_factory=dict)

    def class_of(self, r: SessionRequest) -> ClassKey:
        w = self.windows.get(r.windows)
        if w is None:
            w = self.windows[r.windows] = len(self.window_shapes)
            self.window_shapes.append(
                [t for t, shape in enumerate(self.shapes) if shape.within(r.windows)]
            )
        return (r.topic, tuple(sorted(set(r.languages))), w)

    def shapes_of(self, key: ClassKey) -> list[int]:
        """The slot shapes a class of requests may take, in time order."""
        found = self.class_shapes.get(key)
        if found is None:
            topic, langs, w = key
            inside = self.window_shapes[w]
            found = self.class_shapes[key] = [
                t for t in inside if any((topic, lang, t) in self.y_slots for lang in langs)
            ]
        return found

    def fitting_slots(self, key: ClassKey) -> int:
        found = self.class_fitting.get(key)
        if found is None:
            topic, langs, _ = key
            slots: set[int] = set()
            for t in self.shapes_of(key):
                for lang in langs:
                    slots.update(self.y_slots.get((topic, lang, t), ()))
            found = self.class_fitting[key] = len(slots)
        return found

    def continuity_slots(self, r: SessionRequest, key: ClassKey) -> list[int]:
        """The previous helper's usable slots in the request's times, if that helper
        may take it."""
        hi = self.h_index.get(r.previous_helper or "")
        if hi is None:
            return []
        h = self.helpers[hi]
        if r.topic not in h.topics or set(r.languages).isdisjoint(h.languages):
            return []
        inside = set(self.shapes_of(key))
        return [s for s in self.h_slots[hi] if self.s_shape[s] in inside]


def _prepare(
    helpers: Iterable[Helper], requests: Iterable[SessionRequest], now: datetime
) -> _Instance:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    hs = sorted(helpers, key=lambda h: h.id)
    rs = sorted(requests, key=lambda r: r.id)
    for what, ids in (("helper", [h.id for h in hs]), ("request", [r.id for r in rs])):
        dup = {i for i in ids if ids.count(i) > 1} if len(set(ids)) < len(ids) else set()
        if dup:
            raise ValueError(f"{what} ids repeat: {sorted(dup)}")
    raw: list[tuple[datetime, datetime, int, Slot]] = []
    for hi, h in enumerate(hs):
        for slot in set(h.slots):
            if slot.start >= now and h.room_on(h.day_of(slot)) > 0:
                raw.append((slot.start, slot.end, hi, slot))
    raw.sort(key=lambda x: (x[0], x[1], x[2]))
    shape_of: dict[tuple[datetime, datetime], int] = {}
    day_of: dict[tuple[int, date], int] = {}
    inst = _Instance(
        now=now,
        helpers=hs,
        requests=rs,
        h_index={h.id: n for n, h in enumerate(hs)},
        s_helper=[],
        s_slot=[],
        s_shape=[],
        s_day=[],
        shapes=[],
        d_helper=[],
        d_date=[],
        d_room=[],
        y_slots=defaultdict(list),
        h_slots=[[] for _ in hs],
    )
    for start, end, hi, slot in raw:
        si = len(inst.s_slot)
        t = shape_of.setdefault((start, end), len(shape_of))
        if t == len(inst.shapes):
            inst.shapes.append(Slot(start, end))
        h = hs[hi]
        day = h.day_of(slot)
        d = day_of.setdefault((hi, day), len(day_of))
        if d == len(inst.d_helper):
            inst.d_helper.append(hi)
            inst.d_date.append(day)
            inst.d_room.append(h.room_on(day))
        inst.s_helper.append(hi)
        inst.s_slot.append(slot)
        inst.s_shape.append(t)
        inst.s_day.append(d)
        inst.h_slots[hi].append(si)
        for topic in set(h.topics):
            for lang in set(h.languages):
                inst.y_slots[(topic, lang, t)].append(si)
    inst.y_slots = dict(inst.y_slots)
    return inst


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def schedule(
    helpers: Iterable[Helper], requests: Iterable[SessionRequest], *, now: datetime
) -> Schedule:
    """The optimal schedule (see the module docs) of sessions from ``now`` on."""
    started = time.perf_counter()
    inst = _prepare(helpers, requests, now)
    net = _Network.build(inst)
    flows, solves = net.solve()
    slot_of = net.decompose(flows)
    return _result(
        inst, sorted(slot_of.items()), started, nodes=net.n, arcs=len(net.tails), solves=solves
    )


def _weight(urgency: Urgency) -> int:
    """An hour of an urgency's wait weighs twice the next urgency's."""
    return 2 ** (len(URGENCIES) - 1 - _RANK[urgency])


_RANK = {u: n for n, u in enumerate(URGENCIES)}


@dataclass(slots=True)
class _Network:
    """The network (see the module docs) and what reading its flow needs.

    Phase 1's network leaves out what only phase 2 needs: a helper's class node at a
    shape feeds the helpers' days directly (a helper has one slot per shape), days
    feed the sink, and there are no continuity arcs. ``extend`` adds the slot and
    helper nodes, the load arcs and the continuity arcs, and carries phase 1's flow
    over to them.

    Requests with a continuity option are nodes of their own (``own``); the others
    of a class node are pooled in one source node per tier, whose arcs into the
    class node are one per hour of age (``pools``).
    """

    inst: _Instance
    n: int
    sink: int
    tails: I64
    heads: I64
    caps: I64
    cost1: I64
    supply: I64
    own_node: dict[int, int]  # request -> its node
    own_arc: dict[int, int]  # request -> its arc into its class node
    pools: list[tuple[int, list[int]]]  # (arc into the class node, requests by age)
    x_shape: dict[int, int]  # time node -> its shape
    slot_arc: I64  # slot -> its arc from its helpers' class node
    day_arc: I64  # helper's day -> its arc to the sink
    # (request node, slot, phase-1 cost, request)
    cont: list[tuple[int, int, int, int]]
    d0: int
    s0: int = 0

    @classmethod
    def build(cls, inst: _Instance) -> _Network:
        reqs, now = inst.requests, inst.now
        tier = [r.tier for r in reqs]
        r_class = [inst.class_of(r) for r in reqs]
        cont = [
            inst.continuity_slots(r, k) if r.previous_helper else []
            for r, k in zip(reqs, r_class, strict=True)
        ]
        groups: dict[tuple[ClassKey, int], list[int]] = {}
        for i in range(len(reqs)):
            if inst.shapes_of(r_class[i]):
                groups.setdefault((r_class[i], tier[i] // 2), []).append(i)
        g_keys = sorted(groups, key=lambda g: (g[1], g[0]))
        own = [i for i in range(len(reqs)) if cont[i]]

        # Units: minutes, coarsened should the costs ever not fit.
        span = max((_minutes(s.start - now) for s in inst.shapes), default=0)
        age_cap = _minutes(AGE_CAP)
        age = [min(max(0, _minutes(now - r.created_at)), age_cap) // 60 * 60 for r in reqs]
        w_max = _weight(URGENCIES[0])
        unit = _TICK
        n_est = len(own) + 3 * len(inst.s_slot) + 2 * len(g_keys) + len(inst.helpers) + 10
        while True:
            q = w_max * (2 * (2 * len(g_keys) + len(own) + 1) * ((age_cap + span) // unit)) + 1
            if (TIERS + 2) * q * n_est < _COST_LIMIT:
                break
            unit *= 2
        shape_cost = [_minutes(s.start - now) // unit for s in inst.shapes]

        heads_cost = [
            -(TIERS - tier[i]) * q + _weight(r.urgency) * ((age_cap - age[i]) // unit)
            for i, r in enumerate(reqs)
        ]
        head_cost = heads_cost.__getitem__

        tails: list[int] = []
        heads: list[int] = []
        caps: list[int] = []
        costs: list[int] = []

        def arc(tail: int, head: int, cap: int, cost: int = 0) -> int:
            tails.append(tail)
            heads.append(head)
            caps.append(cap)
            costs.append(cost)
            return len(tails) - 1

        own_node = {i: k for k, i in enumerate(own)}
        sink = len(own)
        n = sink + 1
        supply: list[tuple[int, int]] = [(k, 1) for k in range(len(own))]
        own_arc: dict[int, int] = {}
        pools: list[tuple[int, list[int]]] = []
        g_node: dict[tuple[ClassKey, int], int] = {}
        for i in own:
            arc(own_node[i], sink, 1)
        for g in g_keys:
            g_node[g] = n
            n += 1
            pools_of: dict[int, list[int]] = defaultdict(list)
            for i in groups[g]:
                if i in own_node:
                    own_arc[i] = arc(own_node[i], g_node[g], 1, head_cost(i))
                else:
                    pools_of[tier[i]].append(i)
            for _tier, pooled in sorted(pools_of.items()):
                src = n
                n += 1
                supply.append((src, len(pooled)))
                arc(src, sink, len(pooled))
                by_age: dict[int, list[int]] = defaultdict(list)
                for i in pooled:
                    by_age[age[i]].append(i)
                for a in sorted(by_age, reverse=True):
                    bucket = sorted(by_age[a], key=lambda i: (reqs[i].created_at, reqs[i].id))
                    pools.append((arc(src, g_node[g], len(bucket), head_cost(bucket[0])), bucket))

        # Helpers' classes at each shape, and the slots in them.
        hc_slots: dict[tuple[tuple[str, ...], tuple[str, ...], int], list[int]] = defaultdict(list)
        h_class = [
            (tuple(sorted(set(h.topics))), tuple(sorted(set(h.languages)))) for h in inst.helpers
        ]
        for si, hi in enumerate(inst.s_helper):
            hc_slots[(*h_class[hi], inst.s_shape[si])].append(si)
        y_hcs: dict[tuple[str, str, int], list[tuple[tuple[str, ...], tuple[str, ...], int]]]
        y_hcs = defaultdict(list)
        for hc in sorted(hc_slots):
            for topic in hc[0]:
                for lang in hc[1]:
                    y_hcs[(topic, lang, hc[2])].append(hc)

        R = len(reqs)
        x_node: dict[tuple[str, tuple[str, ...], int], int] = {}
        y_node: dict[tuple[str, str, int], int] = {}
        hc_node: dict[tuple[tuple[str, ...], tuple[str, ...], int], int] = {}
        for g in g_keys:
            (topic, langs, _windows), g_u = g
            for t in inst.shapes_of(g[0]):
                xk = (topic, langs, t)
                x = x_node.get(xk)
                if x is None:
                    x = x_node[xk] = n
                    n += 1
                    for lang in langs:
                        yk = (topic, lang, t)
                        if yk not in y_hcs:
                            continue
                        y = y_node.get(yk)
                        if y is None:
                            y = y_node[yk] = n
                            n += 1
                            for hc in y_hcs[yk]:
                                if hc not in hc_node:
                                    hc_node[hc] = n
                                    n += 1
                                arc(y, hc_node[hc], R)
                        arc(x, y, R)
                arc(g_node[g], x, len(groups[g]), _weight(URGENCIES[g_u]) * shape_cost[t])
        d0 = n
        n += len(inst.d_helper)
        slot_arc = np.full(len(inst.s_slot), -1, dtype=np.int64)
        for hc, node in hc_node.items():
            for si in hc_slots[hc]:
                slot_arc[si] = arc(node, d0 + inst.s_day[si], 1)
        d_slots = np.bincount(np.array(inst.s_day, dtype=np.int64), minlength=len(inst.d_room))
        day_arc = np.array(
            [arc(d0 + d, sink, min(inst.d_room[d], int(d_slots[d]))) for d in range(len(d_slots))],
            dtype=np.int64,
        )
        continuity = [
            (
                own_node[i],
                si,
                head_cost(i) + _weight(reqs[i].urgency) * shape_cost[inst.s_shape[si]],
                i,
            )
            for i in own
            for si in cont[i]
        ]
        sup = np.zeros(n, dtype=np.int64)
        for node, amount in supply:
            sup[node] = amount
        sup[sink] = -int(sup.sum())
        return cls(
            inst=inst,
            n=n,
            sink=sink,
            tails=np.array(tails, dtype=np.int64),
            heads=np.array(heads, dtype=np.int64),
            caps=np.array(caps, dtype=np.int64),
            cost1=np.array(costs, dtype=np.int64),
            supply=sup,
            own_node=own_node,
            own_arc=own_arc,
            pools=pools,
            x_shape={node: key[2] for key, node in x_node.items()},
            slot_arc=slot_arc,
            day_arc=day_arc,
            cont=continuity,
            d0=d0,
        )

    def solve(self) -> tuple[I64, int]:
        """Phase 1, then phase 2 over phase 1's optimal flows: the flow per arc of the
        extended network, and the number of solves."""
        flows = _min_cost_flow(self.tails, self.heads, self.caps, self.cost1, self.supply)
        cost2, flows, load_max = self.extend(flows)
        if not self.cont and load_max <= 1:
            return flows, 1
        pot = _potentials(self.n, self.tails, self.heads, self.caps, self.cost1, flows)
        reduced = self.cost1 + pot[self.tails] - pot[self.heads]
        full = reduced < 0
        free = reduced == 0
        supply = self.supply.copy()
        np.add.at(supply, self.tails[full], -self.caps[full])
        np.add.at(supply, self.heads[full], self.caps[full])
        flows = np.zeros(len(self.tails), dtype=np.int64)
        flows[full] = self.caps[full]
        if free.any():
            flows[free] = _min_cost_flow(
                self.tails[free], self.heads[free], self.caps[free], cost2[free], supply
            )
        return flows, 2

    def extend(self, flows: I64) -> tuple[I64, I64, int]:
        """Add slot and helper nodes, the load arcs and the continuity arcs, carrying
        phase 1's ``flows`` over: (phase 2's costs, the flows, the most sessions a
        helper may give)."""
        inst = self.inst
        n_slots, n_helpers = len(inst.s_slot), len(inst.helpers)
        s0 = self.n
        h0 = s0 + n_slots
        self.s0 = s0
        self.n = h0 + n_helpers
        self.supply = np.concatenate([self.supply, np.zeros(n_slots + n_helpers, dtype=np.int64)])
        s_day = np.array(inst.s_day, dtype=np.int64)
        d_helper = np.array(inst.d_helper, dtype=np.int64)
        # Class node -> slot -> day, instead of class node -> day.
        self.heads[self.slot_arc] = s0 + np.arange(n_slots)
        slot_flow = flows[self.slot_arc]
        # Day -> helper -> sink (one arc per session, the k-th costing k - 1).
        self.heads[self.day_arc] = h0 + d_helper
        room = self.caps[self.day_arc]
        h_room = np.bincount(d_helper, weights=room, minlength=n_helpers).astype(np.int64)
        h_flow = np.bincount(d_helper, weights=flows[self.day_arc], minlength=n_helpers).astype(
            np.int64
        )
        load_helper = np.repeat(np.arange(n_helpers), h_room)
        starts = np.cumsum(h_room) - h_room
        load_k = np.arange(len(load_helper)) - np.repeat(starts, h_room)
        c_tail = np.array([c[0] for c in self.cont], dtype=np.int64)
        c_head = s0 + np.array([c[1] for c in self.cont], dtype=np.int64)
        c_cost = np.array([c[2] for c in self.cont], dtype=np.int64)
        n_old, n_cont = len(self.tails), len(c_tail)
        self.tails = np.concatenate([self.tails, s0 + np.arange(n_slots), h0 + load_helper, c_tail])
        self.heads = np.concatenate(
            [
                self.heads,
                self.d0 + s_day,
                np.full(len(load_helper), self.sink),
                c_head,
            ]
        )
        ones = np.ones(n_slots + len(load_helper) + n_cont, dtype=np.int64)
        self.caps = np.concatenate([self.caps, ones])
        self.cost1 = np.concatenate(
            [self.cost1, np.zeros(n_slots + len(load_helper), dtype=np.int64), c_cost]
        )
        load_max = int(h_room.max(initial=0))
        cost2 = np.concatenate(
            [
                np.zeros(n_old + n_slots, dtype=np.int64),
                load_k.astype(np.int64),
                np.full(n_cont, -(load_max + 1), dtype=np.int64),
            ]
        )
        flows = np.concatenate(
            [
                flows,
                slot_flow,
                (load_k < h_flow[load_helper]).astype(np.int64),
                np.zeros(n_cont, dtype=np.int64),
            ]
        )
        return cost2, flows, load_max

    def decompose(self, flows: I64) -> dict[int, int]:
        """Request index -> slot index (see the module docs)."""
        reqs = self.inst.requests
        slot_of: dict[int, int] = {}
        base = len(flows) - len(self.cont)
        for k, (_node, si, _cost, i) in enumerate(self.cont):
            if flows[base + k]:
                slot_of[i] = si
        members: dict[int, list[int]] = defaultdict(list)
        for i, a in self.own_arc.items():
            if flows[a]:
                members[int(self.heads[a])].append(i)
        for a, bucket in self.pools:
            members[int(self.heads[a])] += bucket[: int(flows[a])]
        out: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for a in np.flatnonzero(flows > 0).tolist():
            out[int(self.tails[a])].append((int(self.heads[a]), int(flows[a])))

        ranked = sorted(range(len(reqs)), key=lambda i: (reqs[i].tier, reqs[i].created_at, i))
        rank = [0] * len(reqs)
        for n, i in enumerate(ranked):
            rank[i] = n
        order = rank.__getitem__

        # Class -> time node -> language node -> helpers' class -> slot: at each step
        # a node's requests (most urgent, oldest, by id) take its outflows in order of
        # the head (time nodes by shape: earliest first).
        shape = self.x_shape
        for _step in range(4):
            nxt: dict[int, list[int]] = defaultdict(list)
            for node in sorted(members):
                who = sorted(members[node], key=order)
                heads = sorted(out[node], key=lambda hf: (shape.get(hf[0], 0), hf[0]))
                units = [h for h, f in heads for _ in range(f)]
                if len(units) != len(who):
                    raise AssertionError("flow decomposition is unbalanced")
                for i, h in zip(who, units, strict=True):
                    nxt[h].append(i)
            members = nxt
        for node, who in members.items():
            if len(who) != 1:
                raise AssertionError("a slot is given twice")
            slot_of[who[0]] = node - self.s0
        return slot_of


def _result(
    inst: _Instance,
    pairs: list[tuple[int, int]],
    started: float,
    *,
    nodes: int = 0,
    arcs: int = 0,
    solves: int = 0,
) -> Schedule:
    """The ``Schedule`` of (request index, slot index) pairs, with the reasons."""
    reqs, helpers = inst.requests, inst.helpers
    h_count = [0] * len(helpers)
    d_count = [0] * len(inst.d_helper)
    for _i, si in pairs:
        h_count[inst.s_helper[si]] += 1
        d_count[inst.s_day[si]] += 1
    served: dict[str, int] = dict.fromkeys(URGENCIES, 0)
    asked: dict[str, int] = dict.fromkeys(URGENCIES, 0)
    for r in reqs:
        asked[r.urgency] += 1
    kept = 0
    assignments: list[Assignment] = []
    for i, si in pairs:
        r = reqs[i]
        hi = inst.s_helper[si]
        h = helpers[hi]
        slot = inst.s_slot[si]
        d = inst.s_day[si]
        continuity = r.previous_helper == h.id
        kept += continuity
        served[r.urgency] += 1
        reason = Reason(
            urgency=r.urgency,
            priority=r.priority,
            wait_hours=round(max(0.0, hours(slot.start - r.created_at)), 2),
            follow_up=r.previous_helper is not None,
            continuity=continuity,
            helper_day_sessions=d_count[d] + h.daily_limit - inst.d_room[d],
            daily_limit=h.daily_limit,
            helper_sessions=h_count[hi],
        )
        assignments.append(Assignment(r.id, h.id, slot, reason))
    assignments.sort(key=lambda a: (a.slot.start, a.helper_id))
    done = {i for i, _ in pairs}
    unassigned = [_why(inst, i) for i in range(len(reqs)) if i not in done]
    stats = ScheduleStats(
        requests=len(reqs),
        helpers=len(helpers),
        slots=len(inst.s_slot),
        served=served,
        asked=asked,
        continuity_kept=kept,
        follow_ups=sum(1 for r in reqs if r.previous_helper is not None),
        nodes=nodes,
        arcs=arcs,
        solves=solves,
        seconds=time.perf_counter() - started,
    )
    return Schedule(tuple(assignments), tuple(unassigned), stats)


def _why(inst: _Instance, i: int) -> Unassigned:
    r = inst.requests[i]
    if not inst.topic_languages:
        for h in inst.helpers:
            for topic in h.topics:
                inst.topic_languages.setdefault(topic, set()).update(h.languages)
    languages = inst.topic_languages.get(r.topic)
    if languages is None:
        return Unassigned(r.id, NO_TOPIC)
    if languages.isdisjoint(r.languages):
        return Unassigned(r.id, NO_LANGUAGE)
    n = inst.fitting_slots(inst.class_of(r))
    return Unassigned(r.id, TAKEN, n) if n else Unassigned(r.id, NO_SLOT)


def _min_cost_flow(tails: I64, heads: I64, caps: I64, costs: I64, supply: I64) -> I64:
    flow = SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(
        tails.astype(np.int32), heads.astype(np.int32), caps, costs
    )
    nodes = np.flatnonzero(supply)
    if len(nodes):
        flow.set_nodes_supplies(nodes.astype(np.int32), supply[nodes])
    status = flow.solve()
    if status != SimpleMinCostFlow.OPTIMAL:
        raise RuntimeError(f"min-cost flow failed: {status.name}")
    return np.asarray(flow.flows(np.arange(len(tails), dtype=np.int32)), dtype=np.int64)


def _potentials(n: int, tails: I64, heads: I64, caps: I64, costs: I64, flows: I64) -> I64:
    """Node potentials proving a flow optimal: shortest-path distances in its
    residual graph from a virtual root joined to every node at cost 0
    (Bellman-Ford, relaxing only the arcs out of nodes that changed)."""
    fwd = flows < caps
    bwd = flows > 0
    rt = np.concatenate([tails[fwd], heads[bwd]])
    rh = np.concatenate([heads[fwd], tails[bwd]])
    rc = np.concatenate([costs[fwd], -costs[bwd]])
    dist = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    for _ in range(n + 1):
        sel = active[rt]
        if not sel.any():
            return dist
        t, h, c = rt[sel], rh[sel], rc[sel]
        cand = dist[t] + c
        better = cand < dist[h]
        if not better.any():
            return dist
        new = dist.copy()
        np.minimum.at(new, h[better], cand[better])
        active = new < dist
        dist = new
    raise RuntimeError("residual graph has a negative cycle; the flow is not optimal")


# The baseline ---------------------------------------------------------------------------


class _NextFree:
    """Positions of a sorted list of slots, skipping those no longer usable."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n + 1))

    def find(self, p: int) -> int:
        root = p
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[p] != root:
            self.parent[p], p = root, self.parent[p]
        return root

    def close(self, p: int) -> None:
        self.parent[p] = p + 1


def first_come_first_served(
    helpers: Iterable[Helper], requests: Iterable[SessionRequest], *, now: datetime
) -> Schedule:
    """Requests in the order they arrived (then by id), each taking the earliest
    slot that fits (ties by helper id), under the same hard rules."""
    started = time.perf_counter()
    inst = _prepare(helpers, requests, now)
    lists = {k: v for k, v in inst.y_slots.items()}
    by_pair: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (topic, lang, _t), slots in lists.items():
        by_pair[(topic, lang)].extend(slots)
    starts: dict[tuple[str, str], list[datetime]] = {}
    skip: dict[tuple[str, str], _NextFree] = {}
    where: dict[int, list[tuple[tuple[str, str], int]]] = defaultdict(list)
    for key, slots in by_pair.items():
        slots.sort()
        starts[key] = [inst.s_slot[s].start for s in slots]
        skip[key] = _NextFree(len(slots))
        for p, s in enumerate(slots):
            where[s].append((key, p))
    d_left = [
        min(room, n)
        for room, n in zip(
            inst.d_room, np.bincount(inst.s_day, minlength=len(inst.d_room)).tolist(), strict=True
        )
    ]
    d_slots: dict[int, list[int]] = defaultdict(list)
    for si, d in enumerate(inst.s_day):
        d_slots[d].append(si)

    def close(si: int) -> None:
        for key, p in where[si]:
            skip[key].close(p)

    pairs: list[tuple[int, int]] = []
    order = sorted(range(len(inst.requests)), key=lambda i: (inst.requests[i].created_at, i))
    for i in order:
        r = inst.requests[i]
        best: int | None = None
        windows = r.windows or (Slot(now, datetime.max.replace(tzinfo=now.tzinfo)),)
        for lang in sorted(set(r.languages)):
            key = (r.topic, lang)
            if key not in by_pair:
                continue
            slots, st, nf = by_pair[key], starts[key], skip[key]
            for w in windows:
                p = nf.find(bisect.bisect_left(st, w.start))
                while p < len(slots) and st[p] < w.end:
                    s = slots[p]
                    if inst.s_slot[s].end <= w.end:
                        if best is None or s < best:
                            best = s
                        break
                    p = nf.find(p + 1)
        if best is None:
            continue
        pairs.append((i, best))
        close(best)
        d = inst.s_day[best]
        d_left[d] -= 1
        if d_left[d] == 0:
            for s in d_slots[d]:
                close(s)
    pairs.sort()
    return _result(inst, pairs, started)
