"""What JSON columns store (shared.db.json_text): the standard library's JSON, faster."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

from shared import db
from shared.db import json_text, make_engine

VALUE = {
    "name": "武汉市第一医院",
    "quantity": 40_000_000,
    "km": 12.345,
    "nested": [{"days": None, "nearest": True}],
    1: "an integer key",
}


def test_json_text_is_orjsons_and_reads_back_as_the_standard_librarys() -> None:
    written = json_text(VALUE)
    assert written == orjson.dumps(VALUE, option=orjson.OPT_NON_STR_KEYS).decode()
    assert written != json.dumps(VALUE)  # not the standard library's text ...
    assert json.loads(written) == json.loads(json.dumps(VALUE))  # ... but its value


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    value = {"past_64_bits": 2**70, "quantity": 3}
    assert json_text(value) == json.dumps(value)


def test_an_engines_json_columns_are_written_by_it(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/json.db")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON))
    table.metadata.create_all(engine)
    doc = {"region": "武汉市", "lines": [1, 2, 3]}
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": 1, "doc": doc}])
        stored = conn.exec_driver_sql("SELECT doc FROM t").scalar_one()
        assert stored == orjson.dumps(doc).decode() != json.dumps(doc)
        assert conn.scalar(select(table.c.doc)) == doc
    engine.dispose()


def test_json_columns_are_read_by_orjson_and_what_it_refuses_by_the_standard_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real = orjson.loads

    def loads(text: str | bytes) -> object:
        read.append("orjson")
        return real(text)

    monkeypatch.setattr(db.orjson, "loads", loads)
    engine = make_engine(f"sqlite:///{tmp_path}/json.db")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON))
    table.metadata.create_all(engine)
    small = {"region": "武汉市", "days": None, "km": 1.5}
    large = {"past_64_bits": 2**70}
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": 1, "doc": small}, {"id": 2, "doc": large}])
        docs = conn.execute(select(table.c.doc).order_by(table.c.id)).scalars().all()
    engine.dispose()
    assert docs == [small, large]
    # Both read by orjson first; the second, refused by it, by the standard library.
    assert read == ["orjson", "orjson"]
    assert db.json_value(json.dumps(large)) == large
