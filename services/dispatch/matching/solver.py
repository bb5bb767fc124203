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
    * a demand group node per demand group, with arcs to the sink ("tier arcs"),
      one per (urgency, needed-by rank, value) among its lines' pieces: each line
      is cut into pieces of equal value per unit (``fairness``: the share of its
      need filled, or its days of supply), capacity = the sum of those pieces;
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
    Lexicographic -- urgency-weighted quantity, then needed-by, both strict; then
    one weighed sum, distance times quantity less the fairness value of what is
    delivered, both in tenths of a kilometre (``fairness.COST_PER_KM``). The
    priority part is one integer reward per tier arc,

        reward(u, r) = (3 - u) * R * Qn + (R - 1 - r) * Qn

    with ``u`` the urgency rank (0 critical .. 2 normal), ``r`` the rank of the
    line's needed-by day among the item's distinct ones (earliest 0, none last,
    ``R`` of them). A simple cycle of the residual graph passes the sink at most
    once, so it changes at most two sink arcs, and any change of priority
    outweighs all that distance and value can change.

    An item without perishables is solved in two phases. Phase 1 maximises the
    rewards (``Qn = 1``) on the network aggregated to classes -- supply by
    (standard, restrictions), demand by (accepted standards, kind class, which
    region restrictions admit it) -- where distance and value play no part, so it
    is tiny. Node potentials from its residual graph (Bellman-Ford) are an optimal
    dual for the full network too; by complementary slackness every optimal
    flow leaves arcs of positive reduced cost empty and fills those of negative
    reduced cost. Phase 2 fixes those and minimises distance less value over what
    is left: the exact lexicographic optimum.

    An item with perishables, whose compatibility depends on distance, is solved
    in one phase with distance and value folded in below the rewards: ``Qn = L *
    Dmax + 2 * Vmax + 1``, where ``Dmax`` is the largest transport cost, ``Vmax``
    the largest value and ``L`` bounds the number of transport arcs on a simple
    cycle (twice the number of arrival nodes or of transport tails, whichever is
    smaller, plus 2), so that no change of distance or value can outweigh a
    change of priority. The costs stay far inside int64; should an instance ever
    be large enough for them not to, costs are counted in coarser units.

Back to lines
    The flow is decomposed deterministically: outlet chains and arrival nodes
    hand on their inflows in order (supply groups by index, transport arcs
    nearest first), giving (supply group, demand group, quantity). The flow on a
    demand group's tier arc is split over its pieces in proportion to their sizes
    (largest remainder, ties by line); the pieces of one arc are worth the same.
    A demand group's lines (most urgent, earliest needed, then by id) take its
    inflows nearest first, and each supply
    group's outflows are taken from its lines in (donor, id) order, so a donor's
    lines are used up one after the other and pairs of lines rarely split. Which
    line of a group serves which does not change the objective. The number of
    shipments, the last objective, is served only by this aggregation, not
    optimised.
    Each hand-over pairs the running totals of two ordered lists (``_merge``),
    for all nodes of a kind at once, so no step loops over lines in Python; the
    lines' attributes are read once per call into arrays (``_Lines``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

from services.dispatch.matching.fairness import COST_PER_KM, Needs, pieces
from services.dispatch.matching.geo import DistanceProvider
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
    supply_terms_of,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

# The largest cost times the node count must stay below this (OR-Tools scales
# costs by the number of nodes); a margin of 16 under int64.
_COST_LIMIT = 2**59

_URGENCY_RANK = {u: n for n, u in enumerate(URGENCIES)}

_EMPTY = np.zeros(0, dtype=np.int64)

H = TypeVar("H", bound=Hashable)


def match(
    supply: Iterable[SupplyLine],
    demand: Iterable[DemandLine],
    *,
    today: date,
    options: MatchOptions = DEFAULT_OPTIONS,
    distances: DistanceProvider | None = None,
) -> Plan:
    """The optimal plan for the given supply and demand (see the package docs).

    ``distances`` gives the kilometres (or any cost per unit counted in km: travel
    time, a coordinator's table) between supply and demand locations; great-circle
    from coordinates, or region reference points, by default (``geo``)."""
    started = time.perf_counter()
    inst = prepare(supply, demand, options, distances)
    pairs: list[tuple[I64, I64, I64]] = [(_EMPTY, _EMPTY, _EMPTY)]
    counts = _Counts()
    lines = _Lines.of(inst)
    needs = Needs.of(inst.demand)
    for s_idx, d_idx in lines.items():
        net = _build(inst, lines, needs, s_idx, d_idx, today, options)
        counts.supply_groups += net.S
        counts.demand_groups += net.D
        if not net.n_transport:
            continue
        flows = _solve_one_phase(net, counts) if net.perishable else _solve_two_phase(net, counts)
        pairs.append(_decompose(net, flows, lines.donor_rank))
    s_arr, d_arr, q_arr = (np.concatenate(p) for p in zip(*pairs, strict=True))
    return build_plan(inst, s_arr, d_arr, q_arr, options, counts, started, needs)


def _codes(values: Iterable[H]) -> tuple[I64, list[H]]:
    """Each value's code (its distinct values numbered in order of appearance)
    and the distinct values."""
    seen: dict[H, int] = {}
    codes = np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int64)
    return codes, list(seen)


def _first_seen(keys: I64) -> tuple[I64, I64]:
    """Number equal keys by first appearance: (number per key, position of each
    number's first key)."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq), dtype=np.int64)
    return rank[inverse.ravel()], first[order]


@dataclass(slots=True)
class _Lines:
    """What the model needs of each line, read once into arrays and codes; the
    ``s_`` arrays follow ``Instance.supply``, the ``d_`` ones ``Instance.demand``.

    ``s_key`` numbers the distinct (location, terms) of supply lines, whose
    values are ``s_terms``; ``d_std`` the accepted-standard lists (``d_stds``),
    ``d_kind`` the recipient kinds (``d_kinds``); ``d_day`` is the needed-by day's
    ordinal, or a day after all of them for lines without one.
    """

    s_key: I64
    s_terms: list[SupplyGroup]
    s_qty: I64
    donor_rank: I64
    s_item: I64
    d_loc: I64
    d_std: I64
    d_stds: list[tuple[str, ...]]
    d_kind: I64
    d_kinds: list[str]
    d_u: I64
    d_day: I64
    d_qty: I64
    d_item: I64

    @classmethod
    def of(cls, inst: Instance) -> _Lines:
        supply, demand = inst.supply, inst.demand
        raw, raw_values = _codes(
            (loc, s.standard, s.best_before, s.restrict_regions, s.restrict_recipient_kinds)
            for s, loc in zip(supply, inst.s_loc, strict=True)
        )
        # Restrictions given in another order or with repeats are the same terms.
        canon, terms = _codes((v[0], *supply_terms_of(v[1], v[2], v[3], v[4])) for v in raw_values)
        donor, donors = _codes(s.donor_id for s in supply)
        by_name = np.argsort(np.array(donors, dtype=object), kind="stable")
        donor_rank = np.empty(len(donors), dtype=np.int64)
        donor_rank[by_name] = np.arange(len(donors), dtype=np.int64)
        items = sorted({s.item for s in supply} | {d.item for d in demand})
        item_of = {item: n for n, item in enumerate(items)}
        d_std, d_stds = _codes(tuple(d.standards) for d in demand)
        d_kind, d_kinds = _codes(d.recipient_kind for d in demand)
        none = date.max.toordinal() + 1
        return cls(
            s_key=canon[raw] if len(raw) else raw,
            s_terms=terms,
            s_qty=np.fromiter((s.quantity for s in supply), dtype=np.int64, count=len(supply)),
            donor_rank=donor_rank[donor] if len(donor) else donor,
            s_item=_ints(item_of[s.item] for s in supply),
            d_loc=np.array(inst.d_loc, dtype=np.int64),
            d_std=d_std,
            d_stds=d_stds,
            d_kind=d_kind,
            d_kinds=d_kinds,
            d_u=_ints(_URGENCY_RANK[d.urgency] for d in demand),
            d_day=np.fromiter(
                (none if d.needed_by is None else d.needed_by.toordinal() for d in demand),
                dtype=np.int64,
                count=len(demand),
            ),
            d_qty=np.fromiter((d.quantity for d in demand), dtype=np.int64, count=len(demand)),
            d_item=_ints(item_of[d.item] for d in demand),
        )

    def items(self) -> list[tuple[I64, I64]]:
        """(supply indexes, demand indexes), in item order, of every item with
        lines on both sides."""
        s_order = np.argsort(self.s_item, kind="stable")
        d_order = np.argsort(self.d_item, kind="stable")
        n = int(max(self.s_item.max(initial=-1), self.d_item.max(initial=-1))) + 1
        s_split = np.split(s_order, np.cumsum(np.bincount(self.s_item, minlength=n))[:-1])
        d_split = np.split(d_order, np.cumsum(np.bincount(self.d_item, minlength=n))[:-1])
        return [(a, b) for a, b in zip(s_split, d_split, strict=True) if len(a) and len(b)]


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

    s_idx: I64
    d_idx: I64
    groups: list[SupplyGroup]
    s_group: I64  # supply line (position in s_idx) -> group
    s_qty_line: I64
    g_qty: I64
    dgroups: list[DemandGroup]
    regions_allowed: Callable[[tuple[str, ...]], Bools]
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
    p_cap: I64
    t_u: I64
    t_r: I64
    t_k: I64
    t_g: I64
    p_line: I64
    values: I64

    @property
    def n_transport(self) -> int:
        return (self.sl_trans_u.stop - self.sl_trans_u.start) + (
            self.sl_trans_r.stop - self.sl_trans_r.start
        )

    def rewards(self, q_n: int) -> I64:
        """The tier arcs' priority rewards for a needed-by quantum ``q_n``:
        urgency, then needed-by, strictly."""
        q_u = self.R * q_n
        return (3 - self.t_u) * q_u + (self.R - 1 - self.t_r) * q_n


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
    inst: Instance,
    lines: _Lines,
    needs: Needs,
    s_idx: I64,
    d_idx: I64,
    today: date,
    options: MatchOptions,
) -> _Network:

    # Supply groups: (location, standard, best_before, regions, kinds).
    s_group, first = _first_seen(lines.s_key[s_idx])
    groups: list[SupplyGroup] = [lines.s_terms[k] for k in lines.s_key[s_idx[first]].tolist()]
    S = len(groups)
    s_qty_line = lines.s_qty[s_idx]
    g_qty = np.zeros(S, dtype=np.int64)
    np.add.at(g_qty, s_group, s_qty_line)
    g_reach = [reach_km(g[2], today, options) for g in groups]

    standards = sorted({g[1] for g in groups if g[1] is not None})
    family_of = {x: n + 1 for n, x in enumerate(standards)}  # family 0: any standard
    F = len(standards) + 1
    kind_sets = sorted({g[4] for g in groups if g[4]})
    K = len(kind_sets) + 1  # kind class 0: no kind restriction

    # Demand groups: (location, accepted standards or None for any, kind signature).
    accepted_of, accepted_values = _codes(
        tuple(sorted({x for x in stds if x in family_of})) if stds else None
        for stds in lines.d_stds
    )
    signature_of, signature_values = _codes(
        tuple(kind in ks for ks in kind_sets) for kind in lines.d_kinds
    )
    d_loc = lines.d_loc[d_idx]
    d_acc = accepted_of[lines.d_std[d_idx]]
    d_sig = signature_of[lines.d_kind[d_idx]]
    d_group, first = _first_seen(
        (d_loc * len(accepted_values) + d_acc) * len(signature_values) + d_sig
    )
    dgroups: list[DemandGroup] = [
        (loc, accepted_values[a], signature_values[k])
        for loc, a, k in zip(
            d_loc[first].tolist(), d_acc[first].tolist(), d_sig[first].tolist(), strict=True
        )
    ]
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

    # Transport arcs of groups with donor restrictions: to the arrival slots of
    # their kind class and families ("any", then their standard's), in order of
    # group, family and place.
    places_arr = np.array(places, dtype=np.intp)
    r_group = _ints(g for g, grp in enumerate(groups) if grp[3] or grp[4])
    r_terms = [groups[g] for g in r_group.tolist()]
    r_p = _ints(p_of[t[0]] for t in r_terms)
    r_k = _ints(kind_sets.index(t[4]) + 1 if t[4] else 0 for t in r_terms)
    r_fam = _ints(family_of[t[1]] if t[1] is not None else -1 for t in r_terms)
    reg_code, reg_sets = _codes(t[3] for t in r_terms)
    reg_table = np.ones((len(reg_sets), Q), dtype=bool)
    for n, regs in enumerate(reg_sets):
        if regs:
            reg_table[n] = inst.regions_allowed(regs)[places_arr]
    r_reach = np.array([g_reach[g] for g in r_group.tolist()], dtype=np.float64)
    ok: Bools = (dist[r_p] <= r_reach[:, None]) & reg_table[reg_code]
    to = np.zeros((len(r_group), 2, Q), dtype=bool)
    to[:, 0, :] = ok & wanted3[:, 0, :].T[r_k]
    has_std = r_fam >= 0
    to[has_std, 1, :] = ok[has_std] & wanted3[:, r_fam[has_std], r_k[has_std]].T
    rr, ff, qq = np.nonzero(to)
    r_slot = (qq * F + np.where(ff == 0, 0, r_fam[rr])) * K + r_k[rr]
    r_km = dist[r_p[rr], qq]
    r_group = r_group[rr]

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

    # Demand lines: urgency, needed-by rank (lines without a day last), and their
    # pieces of equal value per unit (``fairness``); one tier arc per demand group,
    # urgency, rank and value, the values numbered from the highest (class 0).
    days, d_r = np.unique(lines.d_day[d_idx], return_inverse=True)
    d_r = d_r.ravel().astype(np.int64)
    R = len(days)
    d_u = lines.d_u[d_idx]
    p_line, p_cap, p_value = pieces(lines.d_qty[d_idx], needs.of_line[d_idx], needs, options)
    neg_values, p_class = np.unique(-p_value, return_inverse=True)
    p_class = p_class.ravel().astype(np.int64)
    T = max(1, len(neg_values))
    key_p = ((d_group[p_line] * 3 + d_u[p_line]) * R + d_r[p_line]) * T + p_class
    tier_keys, tier_inv = np.unique(key_p, return_inverse=True)
    tier_inv = tier_inv.ravel()
    tier_cap = np.zeros(len(tier_keys), dtype=np.int64)
    np.add.at(tier_cap, tier_inv, p_cap)
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
        groups=groups,
        s_group=s_group,
        s_qty_line=s_qty_line,
        g_qty=g_qty,
        dgroups=dgroups,
        regions_allowed=inst.regions_allowed,
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
        p_cap=p_cap,
        t_u=t_u,
        t_r=t_r,
        t_k=t_k,
        t_g=t_g,
        p_line=p_line,
        values=-neg_values[t_k] if len(t_k) else _EMPTY,
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
    scale = 1.0  # costs in units of COST_PER_KM, made coarser should int64 not do
    while True:
        costs = np.rint(net.km * COST_PER_KM / scale).astype(np.int64)
        values = np.rint(net.values / scale).astype(np.int64)
        # A simple cycle of the residual graph changes at most two tier arcs.
        q_n = L * int(costs.max(initial=0)) + 2 * int(values.max(initial=0)) + 1
        if 4 * net.R * q_n * (n_nodes + 1) < _COST_LIMIT:
            break
        if costs.max(initial=0) <= 1 and values.max(initial=0) <= 1:
            raise ValueError("instance too large to cost exactly in int64")
        scale *= 2.0
    costs[net.sl_tier] = -net.rewards(q_n) - values
    return _min_cost_flow(net.n_raw, net.tails, net.heads, net.caps, costs, _supplies(net), counts)


def _solve_two_phase(net: _Network, counts: _Counts) -> I64:
    """Priority on the class network, then distance on the optimal face."""
    return _closest_optimal(net, _class_potentials(net, counts), counts)


def _class_potentials(net: _Network, counts: _Counts) -> I64:
    """An optimal dual of the priority problem, from solving it on the network
    aggregated to classes, where distance plays no part."""
    # Classes: supply by (standard, regions, kinds), demand by (accepted, kind
    # signature, region signature).
    region_sets = sorted({g[3] for g in net.groups if g[3]})
    g_class, cs_values = _codes((g[1], g[3], g[4]) for g in net.groups)
    cs_keys: list[tuple[str | None, tuple[str, ...], tuple[str, ...]]] = cs_values
    terms, terms_values = _codes((g[1], g[2]) for g in net.dgroups)
    dg_locs = _ints(g[0] for g in net.dgroups)
    allowed = np.ones((len(region_sets), net.D), dtype=bool)
    for n, prefixes in enumerate(region_sets):
        allowed[n] = net.regions_allowed(prefixes)[dg_locs]
    region_code = np.zeros(net.D, dtype=np.int64)
    if region_sets:
        region_code = np.unique(allowed.T, axis=0, return_inverse=True)[1].ravel()
    dg_class, firsts = _first_seen(terms * net.D + region_code)
    cd_keys: list[tuple[tuple[str, ...] | None, tuple[bool, ...], tuple[bool, ...]]] = [
        (*terms_values[t], tuple(allowed[:, i].tolist()))
        for t, i in zip(terms[firsts].tolist(), firsts.tolist(), strict=True)
    ]
    Cs, Cd = len(cs_keys), len(cd_keys)
    sink1 = Cs + Cd
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
    # (Tier arcs of one urgency and rank differ only in value, which phase 1
    # leaves to phase 2.)
    ct_key = dg_class[net.t_g] * (4 * net.R) + (net.t_u * net.R + net.t_r)
    ct_keys, ct_inv = np.unique(ct_key, return_inverse=True)
    ct_inv = ct_inv.ravel()
    ct_cap = np.zeros(len(ct_keys), dtype=np.int64)
    np.add.at(ct_cap, ct_inv, net.tier_cap)
    ct_reward = np.zeros(len(ct_keys), dtype=np.int64)
    ct_reward[ct_inv] = rewards
    cs_qty = np.zeros(Cs, dtype=np.int64)
    np.add.at(cs_qty, g_class, net.g_qty)
    tails1 = np.concatenate(
        [np.array(c_tails, dtype=np.int64), Cs + ct_keys // (4 * net.R), np.arange(Cs)]
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
    return pot


def _closest_optimal(net: _Network, pot: I64, counts: _Counts) -> I64:
    """The least distance among the flows that are optimal for priority, given
    an optimal dual ``pot`` of the priority problem."""
    cost1 = np.zeros(len(net.tails), dtype=np.int64)
    cost1[net.sl_tier] = -net.rewards(1)
    reduced = cost1 + pot[net.tails] - pot[net.heads]
    bounded = np.zeros(len(net.tails), dtype=bool)
    bounded[net.sl_tier] = True
    bounded[net.sl_bypass] = True
    if (reduced[~bounded] < 0).any():
        raise AssertionError("potentials are not a feasible dual")

    # Phase 2: arcs of negative reduced cost full, of positive reduced cost empty,
    # distance over the rest.
    full = reduced < 0
    free = reduced == 0
    supply = _supplies(net)
    np.add.at(supply, net.tails[full], -net.caps[full])
    np.add.at(supply, net.heads[full], net.caps[full])
    cost2 = np.rint(net.km * COST_PER_KM).astype(np.int64)
    cost2[net.sl_tier] = -net.values
    costs2 = cost2[free]
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


def _decompose(net: _Network, flows: I64, donor_rank: I64) -> tuple[I64, I64, I64]:
    """(supply indexes, demand indexes, quantities) carrying an item's flow.

    Every step hands a node's inflows on to its outflows in a fixed order, first
    come first served, which is ``_merge`` of the two lists' running totals; all
    nodes of a kind are merged at once by concatenating their lists in node order.
    """
    S, sink = net.S, net.sink
    line_qty = _line_quantities(net, flows[net.sl_tier])

    # Who sent what over each transport arc: outlet chains pass their entries on
    # in order of (level, group) to their arcs in order of (level, arrival slot).
    u0 = net.sl_trans_u.start
    u_flow = flows[net.sl_trans_u]
    u_pos = np.flatnonzero(u_flow > 0)
    alone = net.chain_alone[net.t_chain[u_pos]]
    direct = u_pos[alone >= 0]
    chained = u_pos[alone < 0]
    chained = chained[
        np.lexsort((net.t_slot_u[chained], net.t_level[chained], net.t_chain[chained]))
    ]
    e_flow = flows[net.sl_entry]
    e_pos = np.flatnonzero(e_flow > 0)
    e_pos = e_pos[np.lexsort((net.e_group[e_pos], net.e_level[e_pos], net.e_chain[e_pos]))]
    ei, ui, q_chain = _merge(e_flow[e_pos], u_flow[chained])
    r_flow = flows[net.sl_trans_r]
    r_pos = np.flatnonzero(r_flow > 0)
    src_arc = np.concatenate([u0 + direct, u0 + chained[ui], net.sl_trans_r.start + r_pos])
    src_g = np.concatenate(
        [net.chain_alone[net.t_chain[direct]], net.e_group[e_pos[ei]], net.r_group[r_pos]]
    )
    src_q = np.concatenate([u_flow[direct], q_chain, r_flow[r_pos]])
    src_head = net.heads[src_arc]
    src_km = net.km[src_arc]

    # Arrival nodes of their own pass their inflows on nearest first (then by
    # group) to the demand groups they feed, in group order.
    at = src_head > sink
    a_rows = np.flatnonzero(at)
    a_rows = a_rows[np.lexsort((src_q[a_rows], src_g[a_rows], src_km[a_rows], src_head[a_rows]))]
    f_flow = flows[net.sl_feed]
    f_pos = np.flatnonzero(f_flow > 0)
    f_pos = f_pos[np.lexsort((f_flow[f_pos], net.f_group[f_pos], net.f_slot[f_pos]))]
    ai, fi, q_feed = _merge(src_q[a_rows], f_flow[f_pos])
    d_rows = np.flatnonzero(~at)
    in_dg = np.concatenate([src_head[d_rows] - S, net.f_group[f_pos[fi]]])
    in_g = np.concatenate([src_g[d_rows], src_g[a_rows[ai]]])
    in_km = np.concatenate([src_km[d_rows], src_km[a_rows[ai]]])
    in_q = np.concatenate([src_q[d_rows], q_feed])

    # A demand group's lines (most urgent, earliest needed, by id) take its inflows
    # nearest first.
    order = np.lexsort((in_q, in_g, in_km, in_dg))
    served = np.flatnonzero(line_qty > 0)
    served = served[np.lexsort((served, net.d_r[served], net.d_u[served], net.d_group[served]))]
    ii, li, q_line = _merge(in_q[order], line_qty[served])
    p_g = in_g[order][ii]
    p_line = served[li]

    # Each supply group gives from its lines in (donor, id) order; what it keeps
    # (its flow to the sink) comes last.
    kept = net.g_qty.copy()
    np.subtract.at(kept, p_g, q_line)
    o_g = np.concatenate([p_g, np.arange(S, dtype=np.int64)])
    o_q = np.concatenate([q_line, kept])
    o_line = np.concatenate([p_line, np.full(S, -1, dtype=np.int64)])
    o_order = np.argsort(o_g, kind="stable")
    members = np.arange(len(net.s_group), dtype=np.int64)
    m_order = np.lexsort((members, donor_rank[net.s_idx], net.s_group))
    mi, oi, q_out = _merge(net.s_qty_line[m_order], o_q[o_order])
    line = o_line[o_order][oi]
    given = line >= 0
    return (
        net.s_idx[m_order[mi[given]]],
        net.d_idx[line[given]],
        q_out[given],
    )


def _merge(in_qty: I64, out_qty: I64) -> tuple[I64, I64, I64]:
    """Pair two lists of quantities with equal totals in order, first come first
    served: (index into ``in_qty``, index into ``out_qty``, quantity) for every
    overlap of their running totals."""
    a = np.cumsum(in_qty)
    b = np.cumsum(out_qty)
    if len(a) == 0 or len(b) == 0:
        if a[-1:].any() or b[-1:].any():
            raise AssertionError("flow decomposition is unbalanced")
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if a[-1] != b[-1]:
        raise AssertionError("flow decomposition is unbalanced")
    ends = np.union1d(a, b)
    starts = np.r_[0, ends[:-1]]
    ends, starts = ends[ends > starts], starts[ends > starts]
    return (
        np.asarray(np.searchsorted(a, starts, side="right"), dtype=np.int64),
        np.asarray(np.searchsorted(b, starts, side="right"), dtype=np.int64),
        np.asarray(ends - starts, dtype=np.int64),
    )


def _line_quantities(net: _Network, tier_flow: I64) -> I64:
    """Each demand line's quantity from the flows on the aggregated tier arcs: a
    full arc gives every piece in it its size; a partly used one is split over its
    pieces in proportion to their sizes, largest remainder first, ties by line."""
    arc = net.tier_inv
    cap = net.p_cap
    flow = tier_flow[arc]
    whole = net.tier_cap[arc]
    line = net.p_line
    share = np.where(flow == whole, cap, 0)
    part = np.flatnonzero((flow > 0) & (flow < whole))
    if len(part):
        if int(whole[part].max()) < 2**31:
            prod = flow[part] * cap[part]
            base = prod // whole[part]
            remainder = prod % whole[part]
            share[part] = base
            given = np.zeros(len(tier_flow), dtype=np.int64)
            np.add.at(given, arc[part], base)
            order = part[np.lexsort((line[part], -remainder, arc[part]))]
            a_o = arc[order]
            first = np.r_[True, a_o[1:] != a_o[:-1]]
            starts = np.flatnonzero(first)
            rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            share[order] += rank < (tier_flow - given)[a_o]
        else:  # products beyond int64: Python integers
            for a in np.unique(arc[part]).tolist():
                es = np.flatnonzero(arc == a)
                shares = _split(int(tier_flow[a]), cap[es].tolist(), line[es].tolist())
                share[es] = shares
    line_qty = np.zeros(len(net.d_idx), dtype=np.int64)
    np.add.at(line_qty, line, share)
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
    s_arr: I64,
    d_arr: I64,
    q_arr: I64,
    options: MatchOptions,
    counts: _Counts | None,
    started: float,
    needs: Needs | None = None,
) -> Plan:
    """A ``Plan`` from (supply index, demand index, quantity) arrays; quantities of
    a repeated pair add up. ``needs``: ``Needs.of(inst.demand)``, if the caller has
    it already."""
    s_arr, d_arr, q_arr = (np.asarray(a, dtype=np.int64) for a in (s_arr, d_arr, q_arr))
    pos = q_arr > 0
    s_arr, d_arr, q_arr = s_arr[pos], d_arr[pos], q_arr[pos]
    key = s_arr * max(1, len(inst.demand)) + d_arr
    uniq, inv = np.unique(key, return_inverse=True)
    if len(uniq) < len(key):
        summed = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(summed, inv.ravel(), q_arr)
        q_arr = summed
        s_arr = uniq // max(1, len(inst.demand))
        d_arr = uniq % max(1, len(inst.demand))
    n = len(s_arr)
    s_loc = np.array(inst.s_loc, dtype=np.intp)
    d_loc = np.array(inst.d_loc, dtype=np.intp)
    km = np.round(inst.dist_km[s_loc[s_arr], d_loc[d_arr]], 1) if n else np.zeros(0)

    # A need's allocations (all its lines of the item) counted nearest first, then
    # by supply and demand line: the running total is the need's fill after each.
    needs = needs or Needs.of(inst.demand)
    need = needs.of_line[d_arr] if n else _EMPTY
    order = np.lexsort((d_arr, s_arr, km, need))
    n_o = need[order]
    running = np.cumsum(q_arr[order])
    first = np.r_[True, n_o[1:] != n_o[:-1]] if n else np.zeros(0, dtype=bool)
    before = (running - q_arr[order])[first]
    running -= np.repeat(before, np.diff(np.r_[np.flatnonzero(first), n]))
    after = np.empty(n, dtype=np.int64)
    after[order] = running
    nearest_km = np.full(len(needs.total), np.inf)
    np.minimum.at(nearest_km, need, km)
    fill = (needs.had[need] + after) / np.maximum(needs.total[need], 1) if n else np.zeros(0)
    use = needs.daily_use[need]
    days = np.where(use > 0, np.round((needs.stock[need] + after) / np.maximum(use, 1), 1), -1.0)
    nearest = km <= nearest_km[need] if n else np.zeros(0, dtype=bool)

    rank_of = {item: r for r, item in enumerate(sorted({d.item for d in inst.demand}))}
    item_rank = _ints(rank_of[d.item] for d in inst.demand)
    final = np.lexsort((s_arr, d_arr, item_rank[d_arr])) if n else np.zeros(0, dtype=np.int64)
    demand = inst.demand
    s_ids = [line.id for line in inst.supply]
    d_ids = [line.id for line in demand]
    d_items = [line.item for line in demand]
    d_u = _ints(_URGENCY_RANK[line.urgency] for line in demand)
    # Reasons repeat and are immutable: one object per distinct reason.
    s_f, d_f, q_f = s_arr[final], d_arr[final], q_arr[final]
    keys = list(
        zip(
            d_u[d_f].tolist(),
            km[final].tolist(),
            fill[final].tolist(),
            days[final].tolist(),
            nearest[final].tolist(),
            strict=True,
        )
    )
    known: dict[tuple[int, float, float, float, bool], Reason] = {}
    reasons = [
        known.get(k)
        or known.setdefault(
            k, Reason(URGENCIES[k[0]], k[1], k[2], None if k[3] < 0 else k[3], bool(k[4]))
        )
        for k in keys
    ]
    allocations = [
        Allocation(s_ids[s], d_ids[d], d_items[d], q, r)
        for s, d, q, r in zip(s_f.tolist(), d_f.tolist(), q_f.tolist(), reasons, strict=True)
    ]
    got_arr = np.zeros(len(demand), dtype=np.int64)
    np.add.at(got_arr, d_arr, q_arr)
    got = got_arr.tolist()
    delivered: dict[str, dict[str, int]] = {}
    for j, line in enumerate(demand):
        if got[j]:
            per_item = delivered.setdefault(line.item, dict.fromkeys(URGENCIES, 0))
            per_item[line.urgency] += got[j]
    delivered = dict(sorted(delivered.items()))
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
        delivered=delivered,
        seconds=time.perf_counter() - started,
    )
    return Plan(allocations=tuple(allocations), unmet=unmet, stats=stats)
