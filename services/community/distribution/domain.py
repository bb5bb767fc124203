"""How a quantity is split over households, by the rule the committee chooses.

Quantities are split in whole ``step``s (one ordered unit: 500 g is a 斤 of
vegetables), so nobody is handed a fraction of what they asked for; what cannot be
split into whole steps stays in stock. Shares are proportional, rounded by the largest
remainder (ties to the earlier household), so the split is deterministic and adds up.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RULES = ("as_ordered", "per_person", "vulnerable_first", "by_hand")


@dataclass(frozen=True)
class Claim:
    """A household's claim on an item: what it ordered (in steps), its people, and
    whether it is vulnerable."""

    household_id: uuid.UUID
    ordered: int
    people: int
    vulnerable: bool


def proportional(
    available: int, weights: Sequence[int], caps: Sequence[int] | None = None
) -> list[int]:
    """``available`` whole units shared in proportion to ``weights`` (largest remainder),
    none above its cap when ``caps`` are given (what a cap leaves goes to the others)."""
    shares = [0] * len(weights)
    remaining = available
    active = [i for i, w in enumerate(weights) if w > 0 and (caps is None or caps[i] > 0)]
    while remaining > 0 and active:
        total = sum(weights[i] for i in active)
        exact = {i: remaining * weights[i] / total for i in active}
        floors = {i: int(exact[i]) for i in active}
        if caps is not None:
            floors = {i: min(floors[i], caps[i] - shares[i]) for i in active}
        left = remaining - sum(floors.values())
        order = sorted(active, key=lambda i: (-(exact[i] - int(exact[i])), i))
        for i in order:
            if left <= 0:
                break
            if caps is None or shares[i] + floors[i] < caps[i]:
                floors[i] += 1
                left -= 1
        for i, n in floors.items():
            shares[i] += n
        given = sum(floors.values())
        remaining -= given
        if caps is not None:
            active = [i for i in active if shares[i] < caps[i]]
        if given == 0:
            break
    return shares


def split(
    available: int,
    claims: Sequence[Claim],
    rule: str,
    by_hand: Mapping[uuid.UUID, int] | None = None,
) -> dict[uuid.UUID, int]:
    """Whole steps for each household, never more in all than ``available``:

    - ``as_ordered``: what each ordered, in proportion when there is not enough;
    - ``per_person``: in proportion to people, whether they ordered or not;
    - ``vulnerable_first``: vulnerable households' orders in full first (in proportion
      among them if short), then the others' as ordered;
    - ``by_hand``: the committee's figures, refused if they add up to more than there is.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}")
    ids = [c.household_id for c in claims]
    if rule == "by_hand":
        wanted = {h: n for h, n in (by_hand or {}).items() if n > 0}
        if sum(wanted.values()) > available:
            raise ValueError("the figures add up to more than the stock")
        return wanted
    if rule == "per_person":
        shares = proportional(available, [c.people for c in claims])
    elif rule == "as_ordered":
        ordered = [c.ordered for c in claims]
        shares = proportional(available, ordered, ordered)
    else:
        first = [c.ordered if c.vulnerable else 0 for c in claims]
        shares = proportional(available, first, first)
        rest = [0 if c.vulnerable else c.ordered for c in claims]
        more = proportional(available - sum(shares), rest, rest)
        shares = [a + b for a, b in zip(shares, more, strict=True)]
    return {h: n for h, n in zip(ids, shares, strict=True) if n > 0}
