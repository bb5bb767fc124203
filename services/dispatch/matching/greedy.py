"""A first-come-first-served baseline to compare the matcher with.

Demand lines are served in the order given; each takes what it can from the
compatible supply lines still holding stock, nearest first (ties by supply id).
It obeys the same hard rules (``rules``) but knows nothing of urgency or fairness.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import date

import numpy as np

from services.dispatch.matching.model import (
    DEFAULT_OPTIONS,
    DemandLine,
    MatchOptions,
    Plan,
    SupplyLine,
)
from services.dispatch.matching.rules import compatibility, demand_terms, prepare, supply_terms
from services.dispatch.matching.solver import build_plan


def greedy(
    supply: Iterable[SupplyLine],
    demand: Iterable[DemandLine],
    *,
    today: date,
    options: MatchOptions = DEFAULT_OPTIONS,
) -> Plan:
    """The first-come-first-served plan: demand in input order, nearest supply first."""
    started = time.perf_counter()
    inst = prepare(supply, demand, options)
    index_of = {d.id: j for j, d in enumerate(inst.demand)}
    columns: dict[str, dict[int, int]] = {}
    tables = {}
    for item, s_idx, d_idx in inst.items():
        dist = inst.dist_km[
            np.ix_(
                np.array([inst.s_loc[i] for i in s_idx], dtype=np.intp),
                np.array([inst.d_loc[j] for j in d_idx], dtype=np.intp),
            )
        ]
        compat = compatibility(
            [supply_terms(inst.supply[i]) for i in s_idx],
            [demand_terms(inst.demand[j]) for j in d_idx],
            [inst.demand[j].location.region for j in d_idx],
            dist,
            today,
            options,
        )
        remaining = np.array([inst.supply[i].quantity for i in s_idx], dtype=np.int64)
        tables[item] = (np.array(s_idx, dtype=np.int64), dist, compat, remaining)
        columns[item] = {j: n for n, j in enumerate(d_idx)}

    pairs: list[tuple[int, int, int]] = []
    for line in inst.demand_in_input_order:
        if line.item not in tables or line.quantity == 0:
            continue
        s_idx_arr, dist, compat, remaining = tables[line.item]
        j = index_of[line.id]
        col = columns[line.item][j]
        candidates = np.flatnonzero(compat[:, col] & (remaining > 0))
        # Supply indexes follow id order, so a stable sort breaks ties by id.
        candidates = candidates[np.argsort(dist[candidates, col], kind="stable")]
        need = line.quantity
        for n in candidates.tolist():
            take = min(need, int(remaining[n]))
            remaining[n] -= take
            pairs.append((int(s_idx_arr[n]), j, take))
            need -= take
            if need == 0:
                break
    s_arr, d_arr, q_arr = np.array(pairs, dtype=np.int64).reshape(len(pairs), 3).T
    return build_plan(inst, s_arr, d_arr, q_arr, options, None, started)
