"""Charts that compare like with like (README: "Web UI"): the ledger's totals are one
small chart per item, each on its own axis in the unit people read it in; the city and
month charts hold one item; the gap chart's bar is the gap."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_babel import Babel

from services.gateway.web import TRANSLATIONS
from services.gateway.web.gaps import city_chart, short_chart
from services.gateway.web.transparency import FIGURES, ledger_view
from shared.catalog import display


def _figures(unit: str, pledged: int, reserved: int, shipped: int, received: int) -> dict[str, Any]:
    return {
        "base_unit": unit,
        "pledged": pledged,
        "reserved": reserved,
        "shipped": shipped,
        "received": received,
    }


FRUIT = _figures("g", 40_000_000, 30_000_000, 25_500_000, 25_000_000)
MASKS = _figures("piece", 460_000, 300_000, 120_000, 100_000)
SUITS = _figures("set", 800, 500, 200, 150)
BLEACH = _figures("ml", 1_500_500, 0, 0, 0)
LEDGER: dict[str, Any] = {
    "totals": {"fruit": FRUIT, "mask": MASKS, "protective_suit": SUITS, "disinfectant_84": BLEACH},
    "by_region": {
        "4201": {"fruit": FRUIT, "mask": MASKS},
        "4403": {"mask": _figures("piece", 5_000, 0, 0, 0)},
    },
    "by_month": {"2020-02": {"fruit": FRUIT, "mask": MASKS}},
    "flows": [],
}


@pytest.fixture(params=["en", "zh"])
def language(request: pytest.FixtureRequest) -> Iterator[str]:
    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    Babel(app, locale_selector=lambda: "zh_Hans" if request.param == "zh" else "en")
    with app.test_request_context(headers={"Cookie": f"aidlink_lang={request.param}"}):
        yield request.param


def test_each_item_is_a_chart_of_its_own_in_its_own_unit(language: str) -> None:
    view = ledger_view(LEDGER, None)
    charts = view["charts"]["by_item"]
    assert list(charts) == view["items"]
    assert set(charts) == set(LEDGER["totals"])
    axes = {code: (spec["factor"], spec["axis"]) for code, spec in charts.items()}
    if language == "zh":
        assert axes == {
            "mask": (10_000, "万个"),
            "protective_suit": (1, "套"),
            "disinfectant_84": (1_000, "升"),
            "fruit": (1_000_000, "吨"),
        }
    else:
        assert axes == {
            "mask": (1, "pieces"),
            "protective_suit": (1, "sets"),
            "disinfectant_84": (1_000, "l"),
            "fruit": (1_000_000, "t"),
        }
    for code, spec in charts.items():
        row = LEDGER["totals"][code]
        # One series: the item's four figures, each bar its own colour, on its own axis.
        (series,) = spec["datasets"]
        assert spec["base_unit"] == row["base_unit"]
        assert len(spec["labels"]) == len(FIGURES) == len(series["data"])
        assert len(set(series["color"])) == len(FIGURES)
        for value, figure, text in zip(series["data"], FIGURES, series["texts"], strict=True):
            # The bar's length is the figure in the axis's unit; its tooltip reads it
            # exactly as the table does.
            assert value == pytest.approx(row[figure] / spec["factor"])
            assert text == display.quantity(row[figure], row["base_unit"], language)
    # The largest figure of every item reads in tens or hundreds, not millions: masks
    # are no longer invisible next to grams of fruit.
    assert max(charts["fruit"]["datasets"][0]["data"]) == 40
    assert max(charts["protective_suit"]["datasets"][0]["data"]) == 800
    assert charts["disinfectant_84"]["datasets"][0]["data"][0] == 1_500.5


def test_city_and_month_charts_hold_one_item_by_city_name(language: str) -> None:
    view = ledger_view(LEDGER, "fruit")
    by_region, by_month = view["charts"]["by_region"], view["charts"]["by_month"]
    wuhan, shenzhen = (
        ("湖北省武汉市", "广东省深圳市")
        if language == "zh"
        else ("Wuhan, Hubei", "Shenzhen, Guangdong")
    )
    assert by_region["labels"] == [wuhan, shenzhen]
    for spec in (by_region, by_month):
        assert spec["base_unit"] == "g" and spec["factor"] == 1_000_000
        assert spec["axis"] == ("吨" if language == "zh" else "t")
    pledged = by_region["datasets"][0]
    assert pledged["data"] == [40, 0]
    assert pledged["texts"][0] == ("40 吨" if language == "zh" else "40 t")
    # Another item, in its own unit.
    masks = ledger_view(LEDGER, "mask")["charts"]["by_region"]
    assert masks["base_unit"] == "piece" and masks["datasets"][0]["data"][1] in (5_000, 0.5)


def test_the_gap_chart_draws_the_gap(language: str) -> None:
    by_item = {
        "mask": {"demand": 1_000, "supply": 1_500},  # covered: no bar
        "fruit": {"demand": 40_000_000, "supply": 0},  # nothing available: a full bar
        "protective_suit": {"demand": 800, "supply": 200},  # three quarters short
    }
    spec = short_chart(list(by_item), by_item)
    assert spec["datasets"][0]["data"] == [0, 100, 75]
    assert spec["axis"] == "%" and spec["max"] == 100
    city = city_chart(
        ["4201", "4403"],
        [{"demand": 40_000_000, "supply": 10_000_000}, {"demand": 0, "supply": 5_000_000}],
        "fruit",
    )
    assert [d["data"] for d in city["datasets"]] == [[40, 0], [10, 5], [30, 0]]
    assert city["axis"] == ("吨" if language == "zh" else "t")
