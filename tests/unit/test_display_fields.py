"""The ``display`` mixin (shared.display_fields): only with ?display=true, in the language
Accept-Language prefers, the unit from ``base_unit`` or the item, packed lines as packed."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from marshmallow import Schema, fields

from shared.display_fields import DisplayQuantities, requested_language


class FiguresSchema(DisplayQuantities, Schema):
    display_fields = ("quantity", "shipped")
    display_packed = "quantity"

    item = fields.String()
    base_unit = fields.String(allow_none=True)
    quantity = fields.Integer()
    shipped = fields.Integer(allow_none=True)
    pack_unit = fields.String(allow_none=True)
    pack_size = fields.Integer(allow_none=True)


APP = Flask(__name__)
FRUIT = {"item": "fruit", "base_unit": "g", "quantity": 40_000_000, "shipped": 1_500_500}


def _dump(query: str, headers: dict[str, str], obj: dict[str, Any]) -> dict[str, Any]:
    with APP.test_request_context(query, headers=headers):
        return dict(FiguresSchema().dump(obj))


@pytest.mark.parametrize(
    ("query", "accept", "language"),
    [
        ("/?display=true", "zh-CN,zh;q=0.9", "zh"),
        ("/?display=1", "zh-TW", "zh"),
        ("/?display=true", "en-GB,en;q=0.9,zh;q=0.8", "en"),
        ("/?display=true", "fr-FR", "en"),
        ("/?display=true", "", "en"),
        ("/?display=false", "zh-CN", None),
        ("/", "zh-CN", None),
    ],
)
def test_the_language_asked_for(query: str, accept: str, language: str | None) -> None:
    headers = {"Accept-Language": accept} if accept else {}
    with APP.test_request_context(query, headers=headers):
        assert requested_language() == language
    dumped = _dump(query, headers, FRUIT)
    if language is None:
        assert dumped == FRUIT  # unchanged
    else:
        expected = {
            "zh": {"quantity": "40 吨", "shipped": "1,500.5 千克"},
            "en": {"quantity": "40 t", "shipped": "1,500.5 kg"},
        }[language]
        assert dumped == {**FRUIT, "display": expected}


def test_the_unit_from_the_item_packed_lines_and_missing_figures() -> None:
    line = {"item": "mask", "quantity": 1_230, "shipped": None, "pack_unit": "case"}
    dumped = _dump("/?display=true", {"Accept-Language": "en"}, {**line, "pack_size": 50})
    assert dumped["display"] == {"quantity": "24 cases of 50 pieces + 30 pieces"}
    dumped = _dump("/?display=true", {"Accept-Language": "zh"}, {**line, "pack_size": 50})
    assert dumped["display"] == {"quantity": "24 箱（每箱 50 个） + 30 个"}  # noqa: RUF001
    unknown = _dump("/?display=true", {}, {"item": "no-such-item", "quantity": 5})
    assert unknown["display"] == {"quantity": "5"}
    # Outside a request (a worker, an event): never.
    assert "display" not in FiguresSchema().dump(FRUIT)
