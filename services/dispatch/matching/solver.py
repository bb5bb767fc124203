"""The exact matcher: min-cost flows per item, solved with OR-Tools.

Groups
    Supply lines that agree on (location, standard, best_before, region
    restrictions, recipient-kind restrictions) form a supply group; demand lines
    that agree on (location, accepted standards among those the item's supply
    offers, which kind restrictions their recipient kind satisfies) form a demand
    group. Lines in a group are interchangeable for every rule.

Network (per item)
    * supply group nodes, with the group's quantity as supply; one sink, with the
      item's total supply as demand; a 0-cost arc from each supply group to the
      sink takes what stays unallocated;
    * a demand group node per demand group, with arcs to the sink, one per
      (urgency, needed-by rank, fairness tier) among its lines: capacity = the sum
      of those lines' tier sizes, cost = minus the reward of a unit delivered
      there. Tier ``k`` of a line of quantity ``q`` holds its units
      ``q*k//T + 1 .. q*(k+1)//T`` (``T = MatchOptions.fairness_tiers``); the reward
      falls from tier to tier, so a line's reward is concave in what it gets and
      flow reaches the first tier of every line before the second of any;
    * transport between places rather than between groups, which keeps the
      network near place-to-place size however the attributes vary:
      - an arrival node per (demand place, standard family, kind class), feeding
        the demand groups there that accept the family (family "any": groups that
        accept any standard; family ``X``: groups whose list names ``X``) and, for
        a kind class other than "unrestricted", whose kind the class allows;
      - for unrestricted supply, an outlet chain per (supply place, family): one
        node per distinct reach (how far its perishables may go; unlimited for
        the rest), largest first, linked downwards at cost 0. A group enters the
        chain of each family it belongs to ("any", and its standard's) at its
        reach; the outlet of reach ``r`` has the transport arcs to the arrival
        nodes (kind class unrestricted) farther than the next smaller reach but
        within ``r``, so flow entering at reach ``r`` can use exactly the arcs
        within ``r``;
      - a group with donor restrictions has its own transport arcs, to the
        arrival nodes of its families and kind class in the allowed regions and
        within its reach.
      An outlet chain of one node entered by one group is that group, and an
      arrival node feeding one demand group is that group. A transport arc costs
      its distance; all other arcs but the tier arcs cost 0. Every path from a
      supply group to a demand group is a compatible pair at the cost of its
      distance, and every compatible pair is such a path, so the network is the
      full group-to-group model, exactly.

Objective and solving
    Lexicographic -- urgency-weighted quantity, then fairness, then needed-by,
    then distance. The priority part is one integer reward per tier arc,

        reward(u, r, k) = (3 - u) * Qu + (T - 1 - k) * Qf + (R - 1 - r) * Qn

    with ``u`` the urgency rank (0 critical .. 2 normal), ``r`` the rank of the
    line's needed-by day among the item's distinct ones (earliest 0, none last,
    ``R`` of them), ``Qf = R * Qn``, ``Qu = T * Qf``. A simple cycle of the
    residual graph passes the sink at most once, so it changes at most two sink
    arcs, and any change of a higher level outweighs all the lower ones can
    change: urgency is strict, then fairness, then needed-by. Needed-by ranks
    below fairness: scarce supply still goes to every need's first tier first;
    among needs in the same tier the earlier one wins.

    An item without perishables is solved in two phases. Phase 1 maximises the
    rewards (``Qn = 1``) on the network aggregated to classes -- supply by
    (standard, restrictions), demand by (accepted standards, kind class, which
    region restrictions admit it) -- where distance plays no part, so it is
    tiny. Node potentials from its residual graph (Bellman-Ford) are an optimal
    dual for the full network too; by complementary slackness every optimal
    flow leaves arcs of positive reduced cost empty and fills those of negative
    reduced cost. Phase 2 fixes those and minimises the distance (whole km) over
    what is left: the exact lexicographic optimum, with small costs.

    An item with perishables, whose compatibility depends on distance, is solved
    in one phase with the distance folded in below the rewards: ``Qn = L * Dmax
    + 1``, where ``Dmax`` is the largest transport cost and ``L`` bounds the
    number of transport arcs on a simple cycle (twice the number of arrival
    nodes or of transport tails, whichever is smaller, plus 2), so that no
    change of distance can outweigh a change of priority. The costs stay far
    inside int64; should an instance ever be large enough for them not to,
    distances are costed in coarser units.

Back to lines
    The flow is decomposed deterministically: outlet chains and arrival nodes
    hand on their inflows in order (supply groups by index, transport arcs
    nearest first), giving (supply group, demand group, quantity). The flow on a
    demand group's tier arc is split over its lines in proportion to their tier
    sizes (largest remainder, ties by id). A demand group's lines (most urgent,
    earliest needed, then by id) take its inflows nearest first, and each supply
    group's outflows are taken from its lines in (donor, id) order, so a donor's
    lines are used up one after the other and pairs of lines rarely split. Which
    line of a group serves which does not change the objective. The number of
    shipments, the last objective, is served only by this aggregation, not
    optimised.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import numpy.typing as npt
from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

from services.dispatch.matching.model import (
    DEFAULT_OPTIONS,
    URGENCIES,
    Allocation,
    DemandLine,
    MatchOptions,
    Plan,
    PlanStats,
    Reason,
    SupplyLine,
)
from services.dispatch.matching.rules import (
    Instance,
    prepare,
    reach_km,
    region_allowed,
    supply_terms,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

# The largest cost times the node count must stay below this (OR-Tools scales
# costs by the number of nodes); a margin of 16 under int64.
_COST_LIMIT = 2**59

_URGENCY_RANK = {u: n for n, u in enumerate(URGENCIES)}


def match(
    supply: Iterable[SupplyLine],
    demand: Iterable[DemandLine],
    *,
    today: date,
    options: MatchOptions = DEFAULT_OPTIONS,
) -> Plan:
    """The optimal plan for the given supply and demand (see the package docs)."""
    started = time.perf_counter()
    inst = prepare(supply, demand, options)
    pairs: list[tuple[int, int, int]] = []
    counts = _Counts()
    for _item, s_idx, d_idx in inst.items():
        net = _build(inst, s_idx, d_idx, today, options)
        counts.supply_groups += net.S
        counts.demand_groups += net.D
        if not net.n_transport:
            continue
        flows = _solve_one_phase(net, counts) if net.perishable else _solve_two_phase(net, counts)
        pairs.extend(_decompose(inst, net, flows))
    return build_plan(inst, pairs, options, counts, started)


@dataclass(slots=True)
class _Counts:
    supply_groups: int = 0
    demand_groups: int = 0
    arcs: int = 0
    solves: int = 0


@dataclass(slots=True)
class _Arcs:
    """Arcs collected in blocks."""

    tails: list[I64] = field(default_factory=list)
    heads: list[I64] = field(default_factory=list)
    caps: list[I64] = field(default_factory=list)
    km: list[F64] = field(default_factory=list)
    size: int = 0

    def add(self, tails: I64, heads: I64, caps: I64, km: F64 | None = None) -> slice:
        n = len(tails)
        self.tails.append(np.asarray(tails, dtype=np.int64))
        self.heads.append(np.asarray(heads, dtype=np.int64))
        self.caps.append(np.asarray(caps, dtype=np.int64))
        self.km.append(np.zeros(n) if km is None else np.asarray(km, dtype=np.float64))
        self.size += n
        return slice(self.size - n, self.size)


SupplyGroup = tuple[int, str | None, date | None, tuple[str, ...], tuple[str, ...]]
DemandGroup = tuple[int, tuple[str, ...] | None, tuple[bool, ...]]


@dataclass(slots=True)
class _Network:
    """One item's network (see the module docs) and what is needed to read its flow.

    Node ids: supply groups ``0..S-1``, demand groups ``S..S+D-1``, the sink
    ``S+D``, then arrival slots from ``a0`` and outlets from ``o0``.
    """

    s_idx: list[int]
    d_idx: list[int]
    T: int
    groups: list[SupplyGroup]
    s_group: list[int]  # supply line (position in s_idx) -> group
    s_qty_line: I64
    g_qty: I64
    dgroups: list[DemandGroup]
    dg_regions: list[str]
    d_group: I64  # demand line (position in d_idx) -> demand group
    d_u: I64
    d_r: I64
    R: int
    kind_sets: list[tuple[str, ...]]
    perishable: bool
    S: int
    D: int
    sink: int
    a0: int
    n_raw: int
    tails: I64
    heads: I64
    caps: I64
    km: F64
    sl_entry: slice
    sl_trans_u: slice
    sl_trans_r: slice
    sl_feed: slice
    sl_tier: slice
    sl_bypass: slice
    e_chain: I64
    e_level: I64
    e_group: I64
    t_chain: I64
    t_level: I64
    t_slot_u: I64
    chain_alone: I64
    r_group: I64
    f_slot: I64
    f_group: I64
    tier_cap: I64
    tier_inv: I64
    caps_flat: I64
    nonzero: Bools
    t_u: I64
    t_r: I64
    t_k: I64
    t_g: I64

    @property
    def n_transport(self) -> int:
        return (self.sl_trans_u.stop - self.sl_trans_u.start) + (
            self.sl_trans_r.stop - self.sl_trans_r.start
        )

    def rewards(self, q_n: int) -> I64:
        """The tier arcs' rewards for a needed-by quantum ``q_n``."""
        q_f = self.R * q_n
        q_u = self.T * q_f
        return (3 - self.t_u) * q_u + (self.T - 1 - self.t_k) * q_f + (self.R - 1 - self.t_r) * q_n


def _ints(values: Iterable[int]) -> I64:
    return np.fromiter(values, dtype=np.int64)


def _stack(blocks: list[tuple[I64, I64, I64, F64]]) -> tuple[I64, I64, I64, F64]:
    if not blocks:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0)
    return (
        np.concatenate([b[0] for b in blocks]).astype(np.int64),
        np.concatenate([b[1] for b in blocks]).astype(np.int64),
        np.concatenate([b[2] for b in blocks]).astype(np.int64),
        np.concatenate([b[3] for b in blocks]).astype(np.float64),
    )


def _build(
    inst: Instance, s_idx: list[int], d_idx: list[int], today: date, options: MatchOptions
) -> _Network:
    T = options.fairness_tiers

    # Supply groups: (location, standard, best_before, regions, kinds).
    g_of: dict[tuple[object, ...], int] = {}
    s_group = [
        g_of.setdefault((inst.s_loc[i], *supply_terms(inst.supply[i])), len(g_of)) for i in s_idx
    ]
    groups: list[SupplyGroup] = list(g_of)  # type: ignore[arg-type]
    S = len(groups)
    s_qty_line = _ints(inst.supply[i].quantity for i in s_idx)
    g_qty = np.zeros(S, dtype=np.int64)
    np.add.at(g_qty, np.array(s_group, dtype=np.int64), s_qty_line)
    g_reach = [reach_km(g[2], today, options) for g in groups]

    standards = sorted({g[1] for g in groups if g[1] is not None})
    family_of = {x: n + 1 for n, x in enumerate(standards)}  # family 0: any standard
    F = len(standards) + 1
    kind_sets = sorted({g[4] for g in groups if g[4]})
    K = len(kind_sets) + 1  # kind class 0: no kind restriction

    # Demand groups: (location, accepted standards or None for any, kind signature).
    dg_of: dict[tuple[object, ...], int] = {}
    d_group_l = []
    for j in d_idx:
        d = inst.demand[j]
        accepted = (
            tuple(sorted({x for x in d.standards if x in family_of})) if d.standards else None
        )
        signature = tuple(d.recipient_kind in ks for ks in kind_sets)
        d_group_l.append(dg_of.setdefault((inst.d_loc[j], accepted, signature), len(dg_of)))
    d_group = np.array(d_group_l, dtype=np.int64)
    dgroups: list[DemandGroup] = list(dg_of)  # type: ignore[arg-type]
    D = len(dgroups)

    # Arrival slots (demand place, family, kind class) and the groups they feed.
    places = sorted({g[0] for g in dgroups})
    Q = len(places)
    q_of = {loc: n for n, loc in enumerate(places)}
    feeds: dict[int, list[int]] = {}
    for n, (loc, accepted, signature) in enumerate(dgroups):
        fams = [0] if accepted is None else [family_of[x] for x in accepted]
        kcs = [0, *(k + 1 for k, allowed in enumerate(signature) if allowed)]
        for f in fams:
            for k in kcs:
                feeds.setdefault((q_of[loc] * F + f) * K + k, []).append(n)
    wanted = np.zeros(Q * F * K, dtype=bool)
    wanted[list(feeds)] = True
    wanted3 = wanted.reshape(Q, F, K)

    s_places = sorted({g[0] for g in groups})
    p_of = {loc: n for n, loc in enumerate(s_places)}
    dist = inst.dist_km[np.ix_(np.array(s_places, dtype=np.intp), np.array(places, dtype=np.intp))]

    sink = S + D
    a0 = sink + 1
    o0 = a0 + Q * F * K
    total = int(g_qty.sum())
    arcs = _Arcs()

    def families(std: str | None) -> list[int]:
        return [0] if std is None else [0, family_of[std]]

    # Outlet chains of unrestricted supply.
    chain_reaches: dict[tuple[int, int], set[float]] = {}
    chain_groups: dict[tuple[int, int], list[int]] = {}
    family_wanted = [bool(wanted3[:, f, 0].any()) for f in range(F)]
    for g, (loc, std, _bb, regs, kinds) in enumerate(groups):
        if regs or kinds:
            continue
        p = p_of[loc]
        for f in families(std):
            if family_wanted[f]:
                chain_reaches.setdefault((p, f), set()).add(g_reach[g])
                chain_groups.setdefault((p, f), []).append(g)
    chain_keys = sorted(chain_reaches)
    chain_levels = [sorted(chain_reaches[key], reverse=True) for key in chain_keys]
    chain_base = np.zeros(len(chain_keys) + 1, dtype=np.int64)
    chain_base[1:] = np.cumsum([len(levels) for levels in chain_levels])
    chain_alone = _ints(
        chain_groups[key][0] if len(chain_groups[key]) == 1 else -1 for key in chain_keys
    )
    e_chain_l: list[int] = []
    e_level_l: list[int] = []
    e_group_l: list[int] = []
    for c, key in enumerate(chain_keys):
        if chain_alone[c] < 0:
            levels = chain_levels[c]
            for g in chain_groups[key]:
                e_chain_l.append(c)
                e_level_l.append(levels.index(g_reach[g]))
                e_group_l.append(g)
    e_chain = np.array(e_chain_l, dtype=np.int64)
    e_level = np.array(e_level_l, dtype=np.int64)
    e_group = np.array(e_group_l, dtype=np.int64)
    sl_entry = arcs.add(e_group, o0 + chain_base[e_chain] + e_level, np.full(len(e_group), total))
    lower = _ints(
        n
        for c, levels in enumerate(chain_levels)
        for n in range(int(chain_base[c]), int(chain_base[c]) + len(levels) - 1)
    )
    arcs.add(o0 + lower, o0 + lower + 1, np.full(len(lower), total))

    # Transport arcs of the outlet chains, vectorised per family.
    blocks: list[tuple[I64, I64, I64, F64]] = []
    for f in range(F):
        members = [c for c, (_p, fam) in enumerate(chain_keys) if fam == f]
        qs = np.flatnonzero(wanted3[:, f, 0])
        if not members or not len(qs):
            continue
        cs = np.array(members, dtype=np.int64)
        block = dist[np.array([chain_keys[c][0] for c in members], dtype=np.intp)][:, qs]
        depth = max(len(chain_levels[c]) for c in members)
        if depth == 1 and all(chain_levels[c][0] == math.inf for c in members):
            within = np.ones(block.shape, dtype=np.int64)
        else:
            levels_m = np.full((len(members), depth), -np.inf)
            for row, c in enumerate(members):
                levels_m[row, : len(chain_levels[c])] = chain_levels[c]
            within = (levels_m[:, :, None] >= block[:, None, :]).sum(axis=1)
        rr, cc = np.nonzero(within)
        blocks.append((cs[rr], within[rr, cc] - 1, (qs[cc] * F + f) * K, block[rr, cc]))
    t_chain, t_level, t_slot_u, t_km_u = _stack(blocks)
    t_tail = np.where(
        chain_alone[t_chain] >= 0, chain_alone[t_chain], o0 + chain_base[t_chain] + t_level
    )

    # Transport arcs of groups with donor restrictions.
    places_arr = np.array(places, dtype=np.intp)
    r_blocks: list[tuple[I64, I64, I64, F64]] = []
    for g, (loc, std, _bb, regs, kinds) in enumerate(groups):
        if not (regs or kinds):
            continue
        p = p_of[loc]
        ok = dist[p] <= g_reach[g]
        if regs:
            ok &= inst.regions_allowed(regs)[places_arr]
        k = kind_sets.index(kinds) + 1 if kinds else 0
        for f in families(std):
            qs = np.flatnonzero(ok & wanted3[:, f, k])
            r_blocks.append(
                (
                    np.full(len(qs), g, dtype=np.int64),
                    np.zeros(len(qs), dtype=np.int64),
                    ((qs * F + f) * K + k).astype(np.int64),
                    dist[p, qs],
                )
            )
    r_group, _unused, r_slot, r_km = _stack(r_blocks)

    # An arrival slot feeding one demand group is that group.
    slot_head = a0 + np.arange(Q * F * K, dtype=np.int64)
    shared_slot = np.ones(Q * F * K, dtype=bool)
    for slot, fed in feeds.items():
        if len(fed) == 1:
            slot_head[slot] = S + fed[0]
            shared_slot[slot] = False
    sl_trans_u = arcs.add(t_tail, slot_head[t_slot_u], np.full(len(t_tail), total), t_km_u)
    sl_trans_r = arcs.add(r_group, slot_head[r_slot], np.full(len(r_group), total), r_km)
    used_slot = np.zeros(Q * F * K, dtype=bool)
    used_slot[t_slot_u] = True
    used_slot[r_slot] = True
    shared = np.flatnonzero(used_slot & shared_slot).tolist()
    f_slot = _ints(s for s in shared for _n in feeds[s])
    f_group = _ints(n for s in shared for n in feeds[s])
    sl_feed = arcs.add(a0 + f_slot, S + f_group, np.full(len(f_slot), total))

    # Demand lines: urgency, needed-by rank, quantity; tier arcs.
    d_lines = [inst.demand[j] for j in d_idx]
    days = sorted({d.needed_by for d in d_lines if d.needed_by is not None})
    day_rank = {day: n for n, day in enumerate(days)}
    R = len(days) + (1 if any(d.needed_by is None for d in d_lines) else 0)
    d_u = _ints(_URGENCY_RANK[d.urgency] for d in d_lines)
    d_r = _ints(day_rank[d.needed_by] if d.needed_by is not None else len(days) for d in d_lines)
    d_qty_line = _ints(d.quantity for d in d_lines)
    tiers = np.arange(T, dtype=np.int64)
    caps_lt = (d_qty_line[:, None] * (tiers + 1)) // T - (d_qty_line[:, None] * tiers) // T
    key_lt = ((d_group[:, None] * 3 + d_u[:, None]) * R + d_r[:, None]) * T + tiers[None, :]
    caps_flat = caps_lt.ravel()
    nonzero = caps_flat > 0
    tier_keys, tier_inv = np.unique(key_lt.ravel()[nonzero], return_inverse=True)
    tier_inv = tier_inv.ravel()
    tier_cap = np.zeros(len(tier_keys), dtype=np.int64)
    np.add.at(tier_cap, tier_inv, caps_flat[nonzero])
    t_k = tier_keys % T
    rest = tier_keys // T
    t_r = rest % R
    rest //= R
    t_u = rest % 3
    t_g = rest // 3
    sl_tier = arcs.add(S + t_g, np.full(len(t_g), sink), tier_cap)
    sl_bypass = arcs.add(np.arange(S, dtype=np.int64), np.full(S, sink), g_qty)

    return _Network(
        s_idx=s_idx,
        d_idx=d_idx,
        T=T,
        groups=groups,
        s_group=s_group,
        s_qty_line=s_qty_line,
        g_qty=g_qty,
        dgroups=dgroups,
        dg_regions=[inst.d_loc_regions[g[0]] for g in dgroups],
        d_group=d_group,
        d_u=d_u,
        d_r=d_r,
        R=R,
        kind_sets=kind_sets,
        perishable=any(g[2] is not None for g in groups),
        S=S,
        D=D,
        sink=sink,
        a0=a0,
        n_raw=int(o0 + chain_base[-1]),
        tails=np.concatenate(arcs.tails),
        heads=np.concatenate(arcs.heads),
        caps=np.concatenate(arcs.caps),
        km=np.concatenate(arcs.km),
        sl_entry=sl_entry,
        sl_trans_u=sl_trans_u,
        sl_trans_r=sl_trans_r,
        sl_feed=sl_feed,
        sl_tier=sl_tier,
        sl_bypass=sl_bypass,
        e_chain=e_chain,
        e_level=e_level,
        e_group=e_group,
        t_chain=t_chain,
        t_level=t_level,
        t_slot_u=t_slot_u,
        chain_alone=chain_alone,
        r_group=r_group,
        f_slot=f_slot,
        f_group=f_group,
        tier_cap=tier_cap,
        tier_inv=tier_inv,
        caps_flat=caps_flat,
        nonzero=nonzero,
        t_u=t_u,
        t_r=t_r,
        t_k=t_k,
        t_g=t_g,
    )


def _min_cost_flow(
    n_raw: int,
    tails: I64,
    heads: I64,
    caps: I64,
    costs: I64,
    supply: I64,
    counts: _Counts,
) -> I64:
    """Solve on the nodes the arcs and supplies use; ``supply`` is indexed by raw
    node id. Returns the flow per arc."""
    used = np.zeros(n_raw, dtype=bool)
    used[tails] = True
    used[heads] = True
    used[supply != 0] = True
    index = np.cumsum(used) - 1
    flow = SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(
        index[tails].astype(np.int32), index[heads].astype(np.int32), caps, costs
    )
    nodes = np.flatnonzero(supply)
    flow.set_nodes_supplies(index[nodes].astype(np.int32), supply[nodes])
    status = flow.solve()
    counts.solves += 1
    counts.arcs += len(tails)
    if status != SimpleMinCostFlow.OPTIMAL:
        raise RuntimeError(f"min-cost flow failed: {status.name}")
    return np.asarray(flow.flows(np.arange(len(tails), dtype=np.int32)), dtype=np.int64)


def _supplies(net: _Network) -> I64:
    supply = np.zeros(net.n_raw, dtype=np.int64)
    supply[: net.S] = net.g_qty
    supply[net.sink] = -int(net.g_qty.sum())
    return supply


def _solve_one_phase(net: _Network, counts: _Counts) -> I64:
    """Priority and distance in one cost (see the module docs)."""
    transport = np.r_[net.sl_trans_u.start : net.sl_trans_r.stop]
    used = np.zeros(net.n_raw, dtype=bool)
    used[net.tails[transport]] = True
    n_tails = int(used.sum())
    used[:] = False
    used[net.heads[transport]] = True
    L = 2 * min(n_tails, int(used.sum())) + 2
    n_nodes = net.n_raw
    km_per_unit = 1.0
    while True:
        costs = np.rint(net.km / km_per_unit).astype(np.int64)
        q_n = L * int(costs.max()) + 1
        if 4 * net.T * net.R * q_n * (n_nodes + 1) < _COST_LIMIT:
            break
        if costs.max() <= 1:
            raise ValueError("instance too large to cost exactly in int64")
        km_per_unit *= 2.0
    costs[net.sl_tier] = -net.rewards(q_n)
    return _min_cost_flow(net.n_raw, net.tails, net.heads, net.caps, costs, _supplies(net), counts)


def _solve_two_phase(net: _Network, counts: _Counts) -> I64:
    """Priority on the class network, then distance on the optimal face."""
    # Classes: supply by (standard, regions, kinds), demand by (accepted, kind
    # signature, region signature).
    region_sets = sorted({g[3] for g in net.groups if g[3]})
    cs_of: dict[tuple[str | None, tuple[str, ...], tuple[str, ...]], int] = {}
    g_class = _ints(cs_of.setdefault((g[1], g[3], g[4]), len(cs_of)) for g in net.groups)
    cd_of: dict[tuple[tuple[str, ...] | None, tuple[bool, ...], tuple[bool, ...]], int] = {}
    region_sig: dict[int, tuple[bool, ...]] = {}
    dg_class_l = []
    for (loc, accepted, signature), region in zip(net.dgroups, net.dg_regions, strict=True):
        if loc not in region_sig:
            region_sig[loc] = tuple(region_allowed(p, region) for p in region_sets)
        dg_class_l.append(cd_of.setdefault((accepted, signature, region_sig[loc]), len(cd_of)))
    dg_class = np.array(dg_class_l, dtype=np.int64)
    Cs, Cd = len(cs_of), len(cd_of)
    sink1 = Cs + Cd
    cs_keys = list(cs_of)
    cd_keys = list(cd_of)
    c_tails: list[int] = []
    c_heads: list[int] = []
    for a, (std, regs, kinds) in enumerate(cs_keys):
        for b, (accepted, signature, rsig) in enumerate(cd_keys):
            if accepted is not None and std not in accepted:
                continue
            if kinds and not signature[net.kind_sets.index(kinds)]:
                continue
            if regs and not rsig[region_sets.index(regs)]:
                continue
            c_tails.append(a)
            c_heads.append(Cs + b)
    total = int(net.g_qty.sum())
    # Class tier arcs: the item's tier arcs summed per (class, urgency, rank, tier).
    rewards = net.rewards(1)
    ct_key = dg_class[net.t_g] * (4 * net.T * net.R) + (
        (net.t_u * net.R + net.t_r) * net.T + net.t_k
    )
    ct_keys, ct_inv = np.unique(ct_key, return_inverse=True)
    ct_inv = ct_inv.ravel()
    ct_cap = np.zeros(len(ct_keys), dtype=np.int64)
    np.add.at(ct_cap, ct_inv, net.tier_cap)
    ct_reward = np.zeros(len(ct_keys), dtype=np.int64)
    ct_reward[ct_inv] = rewards
    cs_qty = np.zeros(Cs, dtype=np.int64)
    np.add.at(cs_qty, g_class, net.g_qty)
    tails1 = np.concatenate(
        [np.array(c_tails, dtype=np.int64), Cs + ct_keys // (4 * net.T * net.R), np.arange(Cs)]
    )
    heads1 = np.concatenate([np.array(c_heads, dtype=np.int64), np.full(len(ct_keys) + Cs, sink1)])
    caps1 = np.concatenate([np.full(len(c_tails), total), ct_cap, cs_qty])
    costs1 = np.concatenate(
        [np.zeros(len(c_tails), dtype=np.int64), -ct_reward, np.zeros(Cs, dtype=np.int64)]
    )
    supply1 = np.zeros(sink1 + 1, dtype=np.int64)
    supply1[:Cs] = cs_qty
    supply1[sink1] = -total
    flows1 = _min_cost_flow(sink1 + 1, tails1, heads1, caps1, costs1, supply1, counts)
    pot1 = _potentials(sink1 + 1, tails1, heads1, caps1, costs1, flows1)

    # The class potentials as an optimal dual of the item's network: outlets take
    # the least of their groups', arrival nodes the greatest of their groups'.
    pot = np.zeros(net.n_raw, dtype=np.int64)
    pot[: net.S] = pot1[g_class]
    pot[net.S : net.sink] = pot1[Cs + dg_class]
    pot[net.sink] = pot1[sink1]
    entry = net.sl_entry
    if entry.stop > entry.start:
        outlets = np.unique(net.heads[entry])
        pot[outlets] = np.iinfo(np.int64).max
        np.minimum.at(pot, net.heads[entry], pot[net.tails[entry]])
    feed = net.sl_feed
    if feed.stop > feed.start:
        arrivals = np.unique(net.tails[feed])
        pot[arrivals] = np.iinfo(np.int64).min
        np.maximum.at(pot, net.tails[feed], pot[net.heads[feed]])
    cost1 = np.zeros(len(net.tails), dtype=np.int64)
    cost1[net.sl_tier] = -rewards
    reduced = cost1 + pot[net.tails] - pot[net.heads]
    bounded = np.zeros(len(net.tails), dtype=bool)
    bounded[net.sl_tier] = True
    bounded[net.sl_bypass] = True
    if (reduced[~bounded] < 0).any():
        raise AssertionError("class potentials are not a feasible dual")

    # Phase 2: arcs of negative reduced cost full, of positive reduced cost empty,
    # distance over the rest.
    full = reduced < 0
    free = reduced == 0
    supply = _supplies(net)
    np.add.at(supply, net.tails[full], -net.caps[full])
    np.add.at(supply, net.heads[full], net.caps[full])
    costs2 = np.rint(net.km[free]).astype(np.int64)
    flows = np.zeros(len(net.tails), dtype=np.int64)
    flows[full] = net.caps[full]
    if free.any():
        flows[free] = _min_cost_flow(
            net.n_raw, net.tails[free], net.heads[free], net.caps[free], costs2, supply, counts
        )
    elif supply.any():
        raise AssertionError("phase 2 has supply but no arcs")
    return flows


def _potentials(n: int, tails: I64, heads: I64, caps: I64, costs: I64, flows: I64) -> I64:
    """Node potentials proving a flow optimal: shortest-path distances in its
    residual graph from a virtual root joined to every node at cost 0
    (Bellman-Ford, vectorised by head node)."""
    fwd = flows < caps
    bwd = flows > 0
    rt = np.concatenate([tails[fwd], heads[bwd]])
    rh = np.concatenate([heads[fwd], tails[bwd]])
    rc = np.concatenate([costs[fwd], -costs[bwd]])
    order = np.argsort(rh, kind="stable")
    rt, rh, rc = rt[order], rh[order], rc[order]
    dist = np.zeros(n, dtype=np.int64)
    if len(rh) == 0:
        return dist
    heads_u, starts = np.unique(rh, return_index=True)
    for _ in range(n + 1):
        best = np.minimum.reduceat(dist[rt] + rc, starts)
        improved = best < dist[heads_u]
        if not improved.any():
            return dist
        dist[heads_u[improved]] = best[improved]
    raise RuntimeError("residual graph has a negative cycle; the flow is not optimal")


def _decompose(inst: Instance, net: _Network, flows: I64) -> list[tuple[int, int, int]]:
    """(supply index, demand index, quantity) triples carrying an item's flow."""
    S, sink = net.S, net.sink
    line_qty = _line_quantities(net, flows[net.sl_tier])

    # Who sent what over each transport arc. Outlet chains pass their inflows on in
    # order of group, from the largest reach down.
    sources: dict[int, list[tuple[int, int]]] = {}
    u_flow = flows[net.sl_trans_u]
    u_pos = np.flatnonzero(u_flow > 0)
    alone = net.chain_alone[net.t_chain[u_pos]]
    for n, g in zip(u_pos[alone >= 0].tolist(), alone[alone >= 0].tolist(), strict=True):
        sources[net.sl_trans_u.start + n] = [(g, int(u_flow[n]))]
    u_pos = u_pos[alone < 0]
    u_pos = u_pos[np.lexsort((net.t_slot_u[u_pos], net.t_level[u_pos], net.t_chain[u_pos]))]
    e_flow = flows[net.sl_entry]
    e_pos = np.flatnonzero(e_flow > 0)
    e_pos = e_pos[np.lexsort((net.e_group[e_pos], net.e_level[e_pos], net.e_chain[e_pos]))]
    e_list = list(
        zip(
            net.e_chain[e_pos].tolist(),
            net.e_level[e_pos].tolist(),
            net.e_group[e_pos].tolist(),
            e_flow[e_pos].tolist(),
            strict=True,
        )
    )
    ei = 0
    queue: deque[list[int]] = deque()
    current = -1
    for chain, level, n, qty in zip(
        net.t_chain[u_pos].tolist(),
        net.t_level[u_pos].tolist(),
        u_pos.tolist(),
        u_flow[u_pos].tolist(),
        strict=True,
    ):
        if chain != current:
            current = chain
            queue.clear()
            while ei < len(e_list) and e_list[ei][0] < chain:
                ei += 1
        while ei < len(e_list) and e_list[ei][0] == chain and e_list[ei][1] <= level:
            queue.append([e_list[ei][2], e_list[ei][3]])
            ei += 1
        got: list[tuple[int, int]] = []
        while qty > 0:
            first = queue[0]
            take = min(qty, first[1])
            got.append((first[0], take))
            first[1] -= take
            qty -= take
            if first[1] == 0:
                queue.popleft()
        sources[net.sl_trans_u.start + n] = got
    r_flow = flows[net.sl_trans_r]
    for n in np.flatnonzero(r_flow > 0).tolist():
        sources[net.sl_trans_r.start + n] = [(int(net.r_group[n]), int(r_flow[n]))]

    # What each demand group receives, as (km, supply group, quantity). Arrival
    # nodes of their own pass their inflows on nearest first, to groups by index.
    inflows: dict[int, list[tuple[float, int, int]]] = {}
    at_node: dict[int, list[tuple[float, int, int]]] = {}
    for a in sorted(sources):
        head = int(net.heads[a])
        d_km = float(net.km[a])
        if head < sink:
            inflows.setdefault(head - S, []).extend((d_km, g, q) for g, q in sources[a])
        else:
            at_node.setdefault(head, []).extend((d_km, g, q) for g, q in sources[a])
    f_flow = flows[net.sl_feed]
    outs: dict[int, list[tuple[int, int]]] = {}
    for n in np.flatnonzero(f_flow > 0).tolist():
        outs.setdefault(int(net.a0 + net.f_slot[n]), []).append(
            (int(net.f_group[n]), int(f_flow[n]))
        )
    for node, takers in outs.items():
        _pass_on(sorted(at_node[node]), sorted(takers), inflows)

    # Demand groups' lines (most urgent, earliest needed, by id) take their inflows
    # nearest first.
    served = np.flatnonzero(line_qty > 0)
    d_group, d_u, d_r = net.d_group, net.d_u, net.d_r
    line_order = served[np.lexsort((served, d_r[served], d_u[served], d_group[served]))]
    lines_of: dict[int, list[tuple[int, int]]] = {}
    qty_of = line_qty.tolist()
    for line in line_order.tolist():
        lines_of.setdefault(int(d_group[line]), []).append((line, qty_of[line]))
    pieces: dict[int, list[tuple[float, int, int]]] = {}  # supply group -> [(km, line, qty)]
    for dg in sorted(inflows):
        _pass_on(sorted(inflows[dg]), lines_of[dg], pieces, by_source=True)

    # Supply groups give from their lines in (donor, id) order.
    s_lines: list[list[int]] = [[] for _ in range(S)]
    for n, g in enumerate(net.s_group):
        s_lines[g].append(n)
    s_idx, d_idx, s_qty_line = net.s_idx, net.d_idx, net.s_qty_line
    result: list[tuple[int, int, int]] = []
    for g in sorted(pieces):
        members = sorted(
            s_lines[g], key=lambda n: (inst.supply[s_idx[n]].donor_id, inst.supply[s_idx[n]].id)
        )
        k = 0
        avail = int(s_qty_line[members[0]])
        for _km, line, qty in pieces[g]:
            while qty > 0:
                while avail == 0:
                    k += 1
                    avail = int(s_qty_line[members[k]])
                take = min(qty, avail)
                result.append((s_idx[members[k]], d_idx[line], take))
                qty -= take
                avail -= take
    return result


def _pass_on(
    supplies: list[tuple[float, int, int]],
    takers: list[tuple[int, int]],
    out: dict[int, list[tuple[float, int, int]]],
    by_source: bool = False,
) -> None:
    """Hand ``supplies`` (km, source, quantity) to ``takers`` (taker, quantity) in
    order, each taker filled before the next. Appends (km, source, quantity) to
    ``out[taker]``, or with ``by_source`` (km, taker, quantity) to ``out[source]``."""
    i = 0
    left = supplies[0][2] if supplies else 0
    for taker, need in takers:
        while need > 0:
            if left == 0:
                raise AssertionError("flow decomposition ran out of supply")
            d_km, source, _q = supplies[i]
            take = min(need, left)
            if by_source:
                out.setdefault(source, []).append((d_km, taker, take))
            else:
                out.setdefault(taker, []).append((d_km, source, take))
            need -= take
            left -= take
            if left == 0 and i + 1 < len(supplies):
                i += 1
                left = supplies[i][2]


def _line_quantities(net: _Network, tier_flow: I64) -> I64:
    """Each demand line's quantity from the flows on the aggregated tier arcs: full
    arcs give every line its tier; a partly used arc is split by ``_split``."""
    T, caps_flat, nonzero, tier_inv = net.T, net.caps_flat, net.nonzero, net.tier_inv
    n_lines = len(net.d_idx)
    line_qty = np.zeros(n_lines, dtype=np.int64)
    line_of_entry = np.repeat(np.arange(n_lines, dtype=np.int64), T)
    full = np.zeros(len(caps_flat), dtype=bool)
    full[nonzero] = tier_flow[tier_inv] == net.tier_cap[tier_inv]
    np.add.at(line_qty, line_of_entry[full], caps_flat[full])
    partial = np.flatnonzero((tier_flow > 0) & (tier_flow < net.tier_cap))
    if len(partial):
        entry_arc = np.full(len(caps_flat), -1, dtype=np.int64)
        entry_arc[nonzero] = tier_inv
        members_of: dict[int, list[int]] = {int(a): [] for a in partial}
        for e in np.flatnonzero(np.isin(entry_arc, partial)).tolist():
            members_of[int(entry_arc[e])].append(e)
        for a, es in members_of.items():
            lines = [e // T for e in es]
            shares = _split(int(tier_flow[a]), [int(caps_flat[e]) for e in es], lines)
            for line, share in zip(lines, shares, strict=True):
                line_qty[line] += share
    return line_qty


def _split(total: int, weights: list[int], order_keys: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (each share at most its weight),
    largest remainder first, ties by ``order_keys``."""
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    rest = total - sum(shares)
    by_remainder = sorted(
        range(len(weights)), key=lambda n: (-(total * weights[n] % whole), order_keys[n])
    )
    for n in by_remainder[:rest]:
        shares[n] += 1
    return shares


def build_plan(
    inst: Instance,
    pairs: list[tuple[int, int, int]],
    options: MatchOptions,
    counts: _Counts | None,
    started: float,
) -> Plan:
    """A ``Plan`` from (supply index, demand index, quantity) triples."""
    merged: dict[tuple[int, int], int] = {}
    for s, d, q in pairs:
        if q > 0:
            merged[(s, d)] = merged.get((s, d), 0) + q
    n = len(merged)
    s_arr = np.fromiter((k[0] for k in merged), dtype=np.int64, count=n)
    d_arr = np.fromiter((k[1] for k in merged), dtype=np.int64, count=n)
    q_arr = np.fromiter(merged.values(), dtype=np.int64, count=n)
    s_loc = np.array(inst.s_loc, dtype=np.intp)
    d_loc = np.array(inst.d_loc, dtype=np.intp)
    km = np.round(inst.dist_km[s_loc[s_arr], d_loc[d_arr]], 1) if n else np.zeros(0)
    d_qty = _ints(d.quantity for d in inst.demand)

    # A line's allocations counted nearest first (supply indexes follow ids): the
    # running total gives each one's tier, the first k with total <= qty*k//T.
    T = options.fairness_tiers
    order = np.lexsort((s_arr, km, d_arr))
    d_o = d_arr[order]
    running = np.cumsum(q_arr[order])
    first = np.r_[True, d_o[1:] != d_o[:-1]] if n else np.zeros(0, dtype=bool)
    before = (running - q_arr[order])[first]
    running -= np.repeat(before, np.diff(np.r_[np.flatnonzero(first), n]))
    tier = np.empty(n, dtype=np.int64)
    tier[order] = np.clip(-(-running * T // np.maximum(d_qty[d_o], 1)), 1, T)

    rank_of = {item: r for r, item in enumerate(sorted({d.item for d in inst.demand}))}
    item_rank = _ints(rank_of[d.item] for d in inst.demand)
    final = np.lexsort((s_arr, d_arr, item_rank[d_arr])) if n else np.zeros(0, dtype=np.int64)
    supply, demand = inst.supply, inst.demand
    allocations = [
        Allocation(
            supply[s].id,
            demand[d].id,
            demand[d].item,
            q,
            Reason(demand[d].urgency, k, dist),
        )
        for s, d, q, k, dist in zip(
            s_arr[final].tolist(),
            d_arr[final].tolist(),
            q_arr[final].tolist(),
            tier[final].tolist(),
            km[final].tolist(),
            strict=True,
        )
    ]
    got_arr = np.zeros(len(demand), dtype=np.int64)
    np.add.at(got_arr, d_arr, q_arr)
    got = got_arr.tolist()
    delivered: dict[str, int] = dict.fromkeys(URGENCIES, 0)
    for j, line in enumerate(demand):
        delivered[line.urgency] += got[j]
    unmet = {d.id: d.quantity - got[j] for j, d in enumerate(demand) if d.quantity > got[j]}
    c = counts or _Counts()
    stats = PlanStats(
        supply_lines=len(inst.supply),
        demand_lines=len(inst.demand),
        ignored_demand_lines=inst.ignored_demand,
        items=len({s.item for s in inst.supply} | {d.item for d in inst.demand}),
        supply_groups=c.supply_groups,
        demand_groups=c.demand_groups,
        arcs=c.arcs,
        solves=c.solves,
        delivered=sum(delivered.values()),
        delivered_by_urgency=delivered,
        seconds=time.perf_counter() - started,
    )
    return Plan(allocations=tuple(allocations), unmet=unmet, stats=stats)
