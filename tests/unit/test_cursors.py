"""A list's cursor continues the order it was issued in: read the other way it would
answer a page of the wrong rows, so it is refused by name; a cursor from before the
order was written in it is taken either way; anything else is not a cursor."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest

from shared.pagination import _decode, _encode
from shared.problems import Problem

AT = datetime(2020, 2, 3, 8, 30, tzinfo=UTC)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_cursor_continues_its_own_order(newest_first: bool) -> None:
    cursor = _encode(AT, ID, newest_first)
    assert _decode(cursor, newest_first) == (AT, ID)
    with pytest.raises(Problem) as refused:
        _decode(cursor, not newest_first)
    assert refused.value.status == 400
    said = "newest first" if newest_first else "oldest first"
    assert said in str(refused.value.detail)
    assert list(refused.value.errors or {}) == ["cursor"]


def test_a_cursor_from_before_the_order_was_written_in_it_is_taken_either_way() -> None:
    old = base64.urlsafe_b64encode(json.dumps([AT.isoformat(), str(ID)]).encode())
    cursor = old.decode().rstrip("=")
    assert _decode(cursor, False) == _decode(cursor, True) == (AT, ID)


@pytest.mark.parametrize(
    "parts", [[AT.isoformat(), str(ID), "sideways"], [AT.isoformat()], ["soon", str(ID)]]
)
def test_anything_else_is_not_a_cursor(parts: list[str]) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")
    with pytest.raises(Problem) as refused:
        _decode(cursor)
    assert refused.value.status == 400 and "not one this API issued" in str(refused.value.detail)
