"""How a community's stock is split over households, by each rule."""

from __future__ import annotations

import uuid

import pytest

from services.community.distribution.domain import Claim, proportional, split
from services.community.orders.domain import parse_paste

A, B, C, D = (uuid.UUID(int=n) for n in range(1, 5))
CLAIMS = [
    Claim(A, ordered=4, people=1, vulnerable=True),
    Claim(B, ordered=6, people=3, vulnerable=False),
    Claim(C, ordered=8, people=4, vulnerable=True),
    Claim(D, ordered=0, people=2, vulnerable=False),
]


def test_vulnerable_households_are_served_first_then_the_others_as_ordered() -> None:
    assert split(10, CLAIMS, "vulnerable_first") == {A: 3, C: 7}
    assert split(15, CLAIMS, "vulnerable_first") == {A: 4, C: 8, B: 3}
    assert split(100, CLAIMS, "vulnerable_first") == {A: 4, C: 8, B: 6}


def test_as_ordered_never_gives_more_than_was_ordered_and_adds_up() -> None:
    assert split(9, CLAIMS, "as_ordered") == {A: 2, B: 3, C: 4}
    assert split(100, CLAIMS, "as_ordered") == {A: 4, B: 6, C: 8}


def test_per_person_counts_everyone_whether_they_ordered_or_not() -> None:
    shares = split(10, CLAIMS, "per_person")
    assert sum(shares.values()) == 10 and shares[D] == 2 and shares[C] == 4


def test_by_hand_takes_the_committees_figures_within_the_stock() -> None:
    assert split(5, CLAIMS, "by_hand", {A: 2, D: 3}) == {A: 2, D: 3}
    with pytest.raises(ValueError, match="more than the stock"):
        split(4, CLAIMS, "by_hand", {A: 2, D: 3})


def test_largest_remainder_is_deterministic_and_never_exceeds_what_there_is() -> None:
    for available in range(0, 30):
        shares = proportional(available, [3, 3, 3])
        assert sum(shares) == available
        assert max(shares) - min(shares) <= 1
        assert shares == proportional(available, [3, 3, 3])


def test_a_pasted_table_names_households_and_items_in_either_language() -> None:
    households = {"1-101": A, "1-102": B}
    batch = parse_paste("户,蔬菜,rice,鸡蛋\n1单元101,4,2,\n1-102,,1,10\n9-9,1,,\n", households)
    assert batch.rows == [(A, {"vegetables": 4, "rice": 2}), (B, {"rice": 1, "eggs": 10})]
    assert batch.errors == {"row 4": ["No household '9-9' in this building."]}
