"""The exact matcher: one min-cost flow per item, solved with OR-Tools.

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
      A transport arc costs its distance in whole km; all other arcs but the tier
      arcs cost 0. Every path from a supply group to a demand group is a
      compatible pair at the cost of its distance, and every compatible pair is
      such a path, so the network is the full group-to-group model, exactly.

Costs
    The objective is lexicographic -- urgency-weighted quantity, then fairness,
    then needed-by, then distance -- and is folded into one integer cost:

        reward(u, r, k) = (3 - u) * Qu + (T - 1 - k) * Qf + (R - 1 - r) * Qn

    with ``u`` the urgency rank (0 critical .. 2 normal), ``r`` the rank of the
    line's needed-by day among the item's distinct ones (earliest 0, none last,
    ``R`` of them), ``Qn = L * Dmax + 1``, ``Qf = R * Qn``, ``Qu = T * Qf``; ``Dmax``
    is the largest transport cost and ``L`` bounds the number of transport arcs on
    a simple cycle (twice the number of arrival nodes or of transport tails,
    whichever is smaller, plus 2). A simple cycle of the residual graph passes
    the sink at most once, so it changes at most two sink arcs, and any change of
    a higher level outweighs everything the lower ones can change together: the
    min-cost flow is the lexicographic optimum, exactly, and urgency is strict
    (a unit for a critical need is never traded for any number of units
    elsewhere along one cycle). Needed-by ranks below fairness: scarce supply
    still goes to every need's first tier first; among needs in the same tier the
    earlier one wins. The costs stay far inside int64; should an instance ever be
    large enough for them not to, distances are costed in coarser units.

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

# The largest cost times the node count must stay below this (OR-Tools scales
# costs by the number of nodes); a margin of 16 under int64.
_COST_LIMIT = 2**59


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
        pairs.extend(_solve_item(inst, s_idx, d_idx, today, options, counts))
    return build_plan(inst, pairs, options, counts, started)


@dataclass(slots=True)
class _Counts:
    supply_groups: int = 0
    demand_groups: int = 0
    arcs: int = 0
    solves: int = 0


@dataclass(slots=True)
class _Arcs:
    """Arcs collected in blocks before they go to the solver."""

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


def _ints(values: Iterable[int]) -> I64:
    return np.fromiter(values, dtype=np.int64)


def _solve_item(
    inst: Instance,
    s_idx: list[int],
    d_idx: list[int],
    today: date,
    options: MatchOptions,
    counts: _Counts,
) -> list[tuple[int, int, int]]:
    """(supply index, demand index, quantity) of one item's optimal plan."""
    T = options.fairness_tiers

    # Supply groups: (location, standard, best_before, regions, kinds).
    g_of: dict[tuple[object, ...], int] = {}
    s_group_l = []
    for i in s_idx:
        key = (inst.s_loc[i], *supply_terms(inst.supply[i]))
        s_group_l.append(g_of.setdefault(key, len(g_of)))
    s_group = np.array(s_group_l, dtype=np.int64)
    groups: list[tuple[int, str | None, date | None, tuple[str, ...], tuple[str, ...]]]
    groups = list(g_of)  # type: ignore[arg-type]
    S = len(groups)
    s_qty_line = _ints(inst.supply[i].quantity for i in s_idx)
    g_qty = np.zeros(S, dtype=np.int64)
    np.add.at(g_qty, s_group, s_qty_line)
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
    dgroups: list[tuple[int, tuple[str, ...] | None, tuple[bool, ...]]]
    dgroups = list(dg_of)  # type: ignore[arg-type]
    D = len(dgroups)
    counts.supply_groups += S
    counts.demand_groups += D

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
    wanted3 = np.zeros(Q * F * K, dtype=bool)
    wanted3[list(feeds)] = True
    wanted3 = wanted3.reshape(Q, F, K)

    s_places = sorted({g[0] for g in groups})
    p_of = {loc: n for n, loc in enumerate(s_places)}
    dist = inst.dist_km[np.ix_(np.array(s_places, dtype=np.intp), np.array(places, dtype=np.intp))]

    # Node numbering before compaction: supply groups, demand groups, sink,
    # arrival slots, outlets. Pass-through nodes are skipped: an outlet chain of
    # one level with one group is that group, an arrival slot feeding one demand
    # group is that group.
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
    for g, (loc, std, _bb, regs, kinds) in enumerate(groups):
        if regs or kinds:
            continue
        p = p_of[loc]
        for f in families(std):
            if wanted3[:, f, 0].any():
                chain_reaches.setdefault((p, f), set()).add(g_reach[g])
                chain_groups.setdefault((p, f), []).append(g)
    chain_keys = sorted(chain_reaches)
    chain_levels = [sorted(chain_reaches[key], reverse=True) for key in chain_keys]
    chain_base = np.zeros(len(chain_keys) + 1, dtype=np.int64)
    chain_base[1:] = np.cumsum([len(levels) for levels in chain_levels])
    # A chain's only group, or -1 if the chain has nodes of its own.
    chain_alone = _ints(
        chain_groups[key][0] if len(chain_groups[key]) == 1 else -1 for key in chain_keys
    )
    e_chain_l: list[int] = []
    e_level_l: list[int] = []
    e_group_l: list[int] = []
    for c, key in enumerate(chain_keys):
        if chain_alone[c] >= 0:
            continue
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
            levels = np.full((len(members), depth), -np.inf)
            for row, c in enumerate(members):
                levels[row, : len(chain_levels[c])] = chain_levels[c]
            within = (levels[:, :, None] >= block[:, None, :]).sum(axis=1)
        rr, cc = np.nonzero(within)
        blocks.append((cs[rr], within[rr, cc] - 1, (qs[cc] * F + f) * K, block[rr, cc]))
    t_chain, t_level, t_slot_u, t_km_u = _stack(blocks)
    t_tail = np.where(
        chain_alone[t_chain] >= 0, chain_alone[t_chain], o0 + chain_base[t_chain] + t_level
    )

    # Transport arcs of groups with donor restrictions.
    regions_q = [inst.d_loc_regions[loc] for loc in places]
    region_ok: dict[tuple[str, ...], npt.NDArray[np.bool_]] = {}
    r_blocks: list[tuple[I64, I64, I64, F64]] = []
    for g, (loc, std, _bb, regs, kinds) in enumerate(groups):
        if not (regs or kinds):
            continue
        p = p_of[loc]
        ok = dist[p] <= g_reach[g]
        if regs:
            if regs not in region_ok:
                region_ok[regs] = np.array([region_allowed(regs, r) for r in regions_q])
            ok &= region_ok[regs]
        k = kind_sets.index(kinds) + 1 if kinds else 0
        for f in families(std):
            qs = np.flatnonzero(ok & wanted3[:, f, k])
            r_blocks.append(
                (np.full(len(qs), g), np.zeros(len(qs)), (qs * F + f) * K + k, dist[p, qs])
            )
    r_group, _unused, r_slot, r_km = _stack(r_blocks)
    if len(t_tail) + len(r_group) == 0:
        return []

    # Where each arrival slot's flow goes: its only demand group, or its own node.
    slot_head = a0 + np.arange(Q * F * K, dtype=np.int64)
    slot_alone = np.full(Q * F * K, -1, dtype=np.int64)
    for slot, fed in feeds.items():
        if len(fed) == 1:
            slot_head[slot] = S + fed[0]
            slot_alone[slot] = fed[0]
    sl_trans_u = arcs.add(t_tail, slot_head[t_slot_u], np.full(len(t_tail), total), t_km_u)
    sl_trans_r = arcs.add(r_group, slot_head[r_slot], np.full(len(r_group), total), r_km)
    used_slots = np.unique(np.concatenate([t_slot_u, r_slot]))
    shared = [s for s in used_slots.tolist() if slot_alone[s] < 0]
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
    tier_keys, tier_inv_nz = np.unique(key_lt.ravel()[nonzero], return_inverse=True)
    tier_inv_nz = tier_inv_nz.ravel()
    tier_cap = np.zeros(len(tier_keys), dtype=np.int64)
    np.add.at(tier_cap, tier_inv_nz, caps_flat[nonzero])
    t_k = tier_keys % T
    rest = tier_keys // T
    t_r = rest % R
    rest //= R
    t_u = rest % 3
    t_g = rest // 3
    sl_tier = arcs.add(S + t_g, np.full(len(t_g), sink), tier_cap)
    arcs.add(np.arange(S, dtype=np.int64), np.full(S, sink), g_qty)

    # Costs (see the module docs).
    tails = np.concatenate(arcs.tails)
    heads = np.concatenate(arcs.heads)
    caps = np.concatenate(arcs.caps)
    km = np.concatenate(arcs.km)
    nodes = np.unique(np.concatenate([tails, heads, np.arange(S + 1, dtype=np.int64)]))
    transport = np.r_[sl_trans_u.start : sl_trans_r.stop]
    L = 2 * min(len(np.unique(tails[transport])), len(np.unique(heads[transport]))) + 2
    km_per_unit = 1.0
    while True:
        unit_cost = np.rint(km / km_per_unit).astype(np.int64)
        d_max = int(unit_cost.max())
        q_n = L * d_max + 1
        q_f = R * q_n
        q_u = T * q_f
        if 4 * q_u * (len(nodes) + 1) < _COST_LIMIT:
            break
        if d_max <= 1:
            raise ValueError("instance too large to cost exactly in int64")
        km_per_unit *= 2.0
    unit_cost[sl_tier] = -((3 - t_u) * q_u + (T - 1 - t_k) * q_f + (R - 1 - t_r) * q_n)

    flow = SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(
        np.searchsorted(nodes, tails).astype(np.int32),
        np.searchsorted(nodes, heads).astype(np.int32),
        caps,
        unit_cost,
    )
    supply_nodes = np.searchsorted(nodes, np.append(np.arange(S, dtype=np.int64), sink))
    flow.set_nodes_supplies(supply_nodes.astype(np.int32), np.append(g_qty, -total))
    status = flow.solve()
    counts.solves += 1
    counts.arcs += len(tails)
    if status != SimpleMinCostFlow.OPTIMAL:
        raise RuntimeError(f"min-cost flow failed: {status.name}")
    flows = np.asarray(flow.flows(np.arange(len(tails), dtype=np.int32)), dtype=np.int64)

    line_qty = _line_quantities(
        flows[sl_tier], tier_cap, tier_inv_nz, caps_flat, nonzero, len(d_lines), T
    )

    # Who sent what over each transport arc. Outlet chains pass their inflows on in
    # order of group, from the largest reach down.
    sources: dict[int, list[tuple[int, int]]] = {}
    u_flow = flows[sl_trans_u]
    u_pos = np.flatnonzero(u_flow > 0)
    alone = chain_alone[t_chain[u_pos]]
    for n, g in zip(u_pos[alone >= 0].tolist(), alone[alone >= 0].tolist(), strict=True):
        sources[sl_trans_u.start + n] = [(g, int(u_flow[n]))]
    u_pos = u_pos[alone < 0]
    u_pos = u_pos[np.lexsort((t_slot_u[u_pos], t_level[u_pos], t_chain[u_pos]))]
    e_flow = flows[sl_entry]
    e_pos = np.flatnonzero(e_flow > 0)
    e_pos = e_pos[np.lexsort((e_group[e_pos], e_level[e_pos], e_chain[e_pos]))]
    e_list = list(
        zip(
            e_chain[e_pos].tolist(),
            e_level[e_pos].tolist(),
            e_group[e_pos].tolist(),
            e_flow[e_pos].tolist(),
            strict=True,
        )
    )
    ei = 0
    queue: deque[list[int]] = deque()
    current = -1
    for chain, level, n, qty in zip(
        t_chain[u_pos].tolist(),
        t_level[u_pos].tolist(),
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
        sources[sl_trans_u.start + n] = got
    r_flow = flows[sl_trans_r]
    for n in np.flatnonzero(r_flow > 0).tolist():
        sources[sl_trans_r.start + n] = [(int(r_group[n]), int(r_flow[n]))]

    # What each demand group receives, as (km, supply group, quantity). Arrival
    # nodes of their own pass their inflows on nearest first, to groups by index.
    inflows: dict[int, list[tuple[float, int, int]]] = {}
    at_node: dict[int, list[tuple[float, int, int]]] = {}
    for a in sorted(sources):
        head = int(heads[a])
        target = inflows if head < sink else at_node
        key = head - S if head < sink else head
        d_km = float(km[a])
        target.setdefault(key, []).extend((d_km, g, q) for g, q in sources[a])
    f_flow = flows[sl_feed]
    outs: dict[int, list[tuple[int, int]]] = {}
    for n in np.flatnonzero(f_flow > 0).tolist():
        outs.setdefault(int(a0 + f_slot[n]), []).append((int(f_group[n]), int(f_flow[n])))
    for node, wanted in outs.items():
        _pass_on(sorted(at_node[node]), sorted(wanted), inflows)

    # Demand groups' lines (most urgent, earliest needed, by id) take their inflows
    # nearest first.
    served = np.flatnonzero(line_qty > 0)
    line_order = served[np.lexsort((served, d_r[served], d_u[served], d_group[served]))]
    lines_of: dict[int, list[tuple[int, int]]] = {}
    qty_of = line_qty.tolist()
    for line in line_order.tolist():
        lines_of.setdefault(int(d_group[line]), []).append((line, qty_of[line]))
    pieces: dict[int, list[tuple[float, int, int]]] = {}  # supply group -> [(km, line, qty)]
    for dg, received in inflows.items():
        given: dict[int, list[tuple[float, int, int]]] = {}
        _pass_on(
            [(d_km, g, q) for d_km, g, q in sorted(received)],
            lines_of[dg],
            given,
            keep_key=True,
        )
        for g, got_pieces in given.items():
            pieces.setdefault(g, []).extend(got_pieces)

    # Supply groups give from their lines in (donor, id) order.
    s_lines: list[list[int]] = [[] for _ in range(S)]
    for n, g in enumerate(s_group_l):
        s_lines[g].append(n)
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


_URGENCY_RANK = {u: n for n, u in enumerate(URGENCIES)}


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


def _pass_on(
    supplies: list[tuple[float, int, int]],
    takers: list[tuple[int, int]],
    out: dict[int, list[tuple[float, int, int]]],
    keep_key: bool = False,
) -> None:
    """Hand ``supplies`` (km, source, quantity) to ``takers`` (taker, quantity) in
    order, each taker filled before the next. Appends (km, source, quantity) to
    ``out[taker]``, or with ``keep_key`` (km, taker, quantity) to ``out[source]``."""
    i = 0
    left = supplies[0][2] if supplies else 0
    for taker, need in takers:
        while need > 0:
            if left == 0:
                raise AssertionError("flow decomposition ran out of supply")
            d_km, source, _q = supplies[i]
            take = min(need, left)
            if keep_key:
                out.setdefault(source, []).append((d_km, taker, take))
            else:
                out.setdefault(taker, []).append((d_km, source, take))
            need -= take
            left -= take
            if left == 0 and i + 1 < len(supplies):
                i += 1
                left = supplies[i][2]


def _line_quantities(
    tier_flow: I64,
    tier_cap: I64,
    tier_inv_nz: I64,
    caps_flat: I64,
    nonzero: npt.NDArray[np.bool_],
    n_lines: int,
    T: int,
) -> I64:
    """Each demand line's quantity from the flows on the aggregated tier arcs: full
    arcs give every line its tier; a partly used arc is split by ``_split``."""
    line_qty = np.zeros(n_lines, dtype=np.int64)
    line_of_entry = np.repeat(np.arange(n_lines, dtype=np.int64), T)
    full = np.zeros(len(caps_flat), dtype=bool)
    full[nonzero] = tier_flow[tier_inv_nz] == tier_cap[tier_inv_nz]
    np.add.at(line_qty, line_of_entry[full], caps_flat[full])
    partial = np.flatnonzero((tier_flow > 0) & (tier_flow < tier_cap))
    if len(partial):
        entry_arc = np.full(len(caps_flat), -1, dtype=np.int64)
        entry_arc[nonzero] = tier_inv_nz
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
    by_demand: dict[int, list[tuple[float, str, int, int]]] = {}
    for (s, d), q in merged.items():
        km = float(inst.dist_km[inst.s_loc[s], inst.d_loc[d]])
        by_demand.setdefault(d, []).append((km, inst.supply[s].id, s, q))
    T = options.fairness_tiers
    allocations: list[Allocation] = []
    delivered = dict.fromkeys(URGENCIES, 0)
    got = [0] * len(inst.demand)
    for d, rows in by_demand.items():
        line = inst.demand[d]
        cum = 0
        for km, _sid, s, q in sorted(rows):
            cum += q
            # The tier of the line's unit number ``cum``: first k with cum <= q*k//T.
            tier = next(k for k in range(1, T + 1) if cum <= line.quantity * k // T)
            allocations.append(
                Allocation(
                    supply_id=inst.supply[s].id,
                    demand_id=line.id,
                    item=line.item,
                    quantity=q,
                    reason=Reason(line.urgency, tier, round(km, 1)),
                )
            )
        got[d] = cum
        delivered[line.urgency] += cum
    allocations.sort(key=lambda a: (a.item, a.demand_id, a.supply_id))
    unmet = {d.id: d.quantity - got[j] for j, d in enumerate(inst.demand) if d.quantity > got[j]}
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
