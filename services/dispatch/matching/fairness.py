"""What a unit delivered to a need is worth, in kilometres of distance.

Fairness is counted per need and item, never per line: a need's lines of one item
share its size ``Q`` (and, where stated, its stock and daily use), so splitting a
request into lines gains nothing. Each demand line is cut into pieces, each with a
quantity and a value per unit:

* share of the request filled (the default): with ``T = fairness_tiers`` tiers,
  tier ``k`` of a need holds its units ``ceil(Q*k/T)+1 .. ceil(Q*(k+1)/T)``
  (rounded up, so a need of one unit has a first tier and is never starved by
  rounding), counted after what the need already had and then along its lines in
  order; each unit is worth ``fill_km / Q * w_k`` with weights
  ``w_k = 2 (T - k) / (T + 1)`` (all 1 with one tier);
* days of supply, for a need that states its stock ``S`` and daily use ``C``: the
  units that raise the need from ``d`` to ``d + 1`` days (``d`` whole, starting at
  ``S / C``; a line holds its share ``q / Q`` of them, rounded up) are worth
  ``days_km / (1 + d)`` each, whatever the need's size; units beyond
  ``days_horizon`` days are worth nothing.

Values are integers in tenths of a kilometre (``COST_PER_KM``), the unit of the
solver's costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.dispatch.matching.model import DemandLine, MatchOptions

I64 = npt.NDArray[np.int64]

COST_PER_KM = 10


@dataclass(slots=True)
class Needs:
    """The needs of an instance's demand lines: ``of_line[j]`` numbers line ``j``'s
    (need, item); per need the ``total`` requested, how much of it it ``had``
    before this plan, summed ``stock`` and ``daily_use`` (0 where none is stated)."""

    of_line: I64
    total: I64
    had: I64
    stock: I64
    daily_use: I64

    @classmethod
    def of(cls, demand: list[DemandLine]) -> Needs:
        numbers: dict[tuple[str, str], int] = {}
        keys = ((d.item, d.id if d.need_id is None else d.need_id) for d in demand)
        of_line = np.fromiter(
            (numbers.setdefault(key, len(numbers)) for key in keys),
            dtype=np.int64,
            count=len(demand),
        )
        n = len(numbers)
        requested = np.fromiter(
            (max(d.quantity, d.requested or 0) for d in demand), np.int64, len(demand)
        )
        had = np.zeros(n, dtype=np.int64)
        quantity = np.fromiter((d.quantity for d in demand), np.int64, len(demand))
        np.add.at(had, of_line, requested - quantity)
        total = np.zeros(n, dtype=np.int64)
        stock = np.zeros(n, dtype=np.int64)
        use = np.zeros(n, dtype=np.int64)
        np.add.at(total, of_line, requested)
        np.add.at(
            stock, of_line, np.fromiter((d.stock or 0 for d in demand), np.int64, len(demand))
        )
        np.add.at(
            use, of_line, np.fromiter((d.daily_use or 0 for d in demand), np.int64, len(demand))
        )
        return cls(of_line=of_line, total=total, had=had, stock=stock, daily_use=use)


def pieces(qty: I64, need: I64, needs: Needs, options: MatchOptions) -> tuple[I64, I64, I64]:
    """(line, quantity, value per unit) of every non-empty piece of the given lines
    (``qty[n]`` units of need ``need[n]``); ``line`` indexes ``qty``."""
    T = options.fairness_tiers
    days = needs.daily_use[need] > 0
    out: list[tuple[I64, I64, I64]] = []

    share = np.flatnonzero(~days)
    if len(share):
        # Each line's units in its need's count: after what the need had, then its
        # earlier lines; the tiers are cut on the need, so splitting gains nothing.
        n_of = need[share]
        order = np.argsort(n_of, kind="stable")
        q_o = qty[share][order]
        ends = np.cumsum(q_o)
        firsts = np.r_[True, n_of[order][1:] != n_of[order][:-1]]
        before = np.repeat((ends - q_o)[firsts], np.diff(np.r_[np.flatnonzero(firsts), len(order)]))
        start = np.empty(len(share), dtype=np.int64)
        start[order] = ends - q_o - before
        start += needs.had[n_of]
        end = start + qty[share]
        k = np.arange(T + 1, dtype=np.int64)[None, :]
        total = needs.total[n_of][:, None]
        bounds = -((-total * k) // T)  # ceil(Q * k / T): a one-unit need has a first tier
        caps = np.maximum(
            0,
            np.minimum(end[:, None], bounds[:, 1:]) - np.maximum(start[:, None], bounds[:, :-1]),
        )
        weights = 2.0 * (T - np.arange(T)) / (T + 1)
        size = needs.total[n_of].astype(np.float64)
        values = np.rint(
            options.fill_km * COST_PER_KM * weights[None, :] / np.maximum(size, 1)[:, None]
        ).astype(np.int64)
        rows = np.repeat(share, T)
        keep = caps.ravel() > 0
        out.append((rows[keep], caps.ravel()[keep], values.ravel()[keep]))

    for n in np.flatnonzero(days).tolist():
        out.append(_days_pieces(n, int(qty[n]), int(need[n]), needs, options))

    if not out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    lines, caps_, values_ = (np.concatenate(parts) for parts in zip(*out, strict=True))
    return lines, caps_, values_


def _days_pieces(
    line: int, q: int, need: int, needs: Needs, options: MatchOptions
) -> tuple[I64, I64, I64]:
    # The need's lines share the units that raise it by a day in proportion to
    # what each still misses.
    missing = max(int(needs.total[need] - needs.had[need]), 1)
    use = int(needs.daily_use[need]) * q / missing
    start = int(needs.stock[need]) / int(needs.daily_use[need])
    caps: list[int] = []
    values: list[int] = []
    given = 0
    level = math.floor(start)
    while given < q and level < options.days_horizon:
        upto = min(q, math.ceil(use * (level + 1 - start) - 1e-9))
        if upto > given:
            caps.append(upto - given)
            values.append(round(options.days_km * COST_PER_KM / (1 + level)))
            given = upto
        level += 1
    if given < q:
        caps.append(q - given)
        values.append(0)
    n = len(caps)
    return (
        np.full(n, line, dtype=np.int64),
        np.array(caps, dtype=np.int64),
        np.array(values, dtype=np.int64),
    )
