"""What JSON columns store (shared.db.json_text): the standard library's JSON, faster."""

from __future__ import annotations

import json

from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select

from shared.db import json_text, make_engine


def test_json_text_reads_back_as_the_standard_library_writes_it() -> None:
    value = {
        "name": "武汉市第一医院",
        "quantity": 40_000_000,
        "past_64_bits": 2**70,
        "km": 12.345,
        "nested": [{"days": None, "nearest": True}],
        1: "an integer key",
    }
    assert json.loads(json_text(value)) == json.loads(json.dumps(value))


def test_an_engines_json_columns_are_written_by_it(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/json.db")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("doc", JSON))
    table.metadata.create_all(engine)
    doc = {"region": "武汉市", "lines": [1, 2, 3], "big": 2**70}
    with engine.begin() as conn:
        conn.execute(insert(table), [{"id": 1, "doc": doc}])
        stored = conn.exec_driver_sql("SELECT doc FROM t").scalar_one()
        assert stored == json_text(doc)
        assert conn.scalar(select(table.c.doc)) == doc
    engine.dispose()
