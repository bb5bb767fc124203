"""The COPY text of each column type (shared.bulk): values of the column's own type
take the short way, any other is written or refused as ``_copy_value`` does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Boolean, Column, Integer, String, Uuid

from shared.bulk import _copy_encoder, _copy_value
from shared.db import UTCDateTime


def _encoder(kind: Any) -> Any:
    return _copy_encoder(Column("c", kind))


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        (Integer(), [7, -3, None, True]),
        (String(20), ["a\tb\\c\n口罩", "", None, 5]),
        (UTCDateTime(), [datetime(2020, 2, 1, 8, 30, tzinfo=UTC), None]),
        (Uuid(), [uuid.UUID(int=1), None]),
        (Boolean(), [True, False, None]),
    ],
)
def test_each_column_type_writes_what_copy_value_writes(kind: Any, values: list[object]) -> None:
    encode = _encoder(kind)
    for value in values:
        if isinstance(value, uuid.UUID):
            # 32 hex digits, which PostgreSQL reads as the hyphenated form.
            assert encode(value) == value.hex
        else:
            assert encode(value) == _copy_value(value)


def test_what_copy_cannot_write_is_refused_by_every_column_type() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        _encoder(UTCDateTime())(datetime(2020, 2, 1))
    with pytest.raises(TypeError, match="no COPY text form"):
        _encoder(Integer())(2.5)
    with pytest.raises(TypeError, match="no COPY text form"):
        _encoder(String(5))(b"bytes")
