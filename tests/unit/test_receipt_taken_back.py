"""What a receipt's lines taking back quantity are told they can accept, when matching
has allocated part of it again: what is not committed of the need line and what the
other lines of it reopen in the same receipt, shared by the lines taking back."""

from __future__ import annotations

import uuid

from services.dispatch.models import ShipmentLine
from services.dispatch.receipts.service import Counted, _taken_back_errors


def _line(accepted: int, damaged: int, short: int = 0) -> ShipmentLine:
    return ShipmentLine(
        id=uuid.uuid4(), accepted=accepted, damaged=damaged, short=short, quantity=10
    )


def test_one_line_taking_back_is_told_what_the_others_reopen_as_well() -> None:
    # A takes back its 5 damaged; B reports 3 damaged it had not; nothing else free.
    taking, giving = _line(5, 5), _line(10, 0)
    errors = _taken_back_errors(
        [(0, taking, Counted(10, 0, 0)), (1, giving, Counted(7, 3, 0))], free=0
    )
    assert errors == {"lines.0.accepted": ["At most 8 can be accepted now."]}
    # With 1 not yet committed on the need line besides.
    errors = _taken_back_errors(
        [(0, taking, Counted(10, 0, 0)), (1, giving, Counted(7, 3, 0))], free=1
    )
    assert errors == {"lines.0.accepted": ["At most 9 can be accepted now."]}


def test_several_lines_taking_back_share_what_can_be_taken_back() -> None:
    first, second = _line(6, 4), _line(8, 0, 2)
    errors = _taken_back_errors(
        [(2, first, Counted(10, 0, 0)), (0, second, Counted(10, 0, 0))], free=3
    )
    message = "Lines 2, 0 together can take back at most 3 of what they reported damaged or short."
    assert errors == {"lines.2.accepted": [message], "lines.0.accepted": [message]}
