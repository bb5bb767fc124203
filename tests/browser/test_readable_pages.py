"""Pages people read, in headless Chromium, in both languages: the public ledger, a
matching plan, the coordinator's gaps, the needs and shipment lists and a pledge's trace
show human units (吨, 万, t, thousands separators), places by name and items by name,
never a bare region code nor a base-unit figure where a larger unit exists; every chart
of the ledger holds one unit (a small chart per item), and the gap chart shows each
item's gap as a share of its own need. One supply chain serves both languages; a screenshot of each
page is kept (the folder is printed)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.browser.conftest import Shots, new_page
from tests.browser.supply_chain import build
from tests.browser.test_flows import _choose_language, _sign_in
from tests.support.shipping import await_supply, post_as
from tests.support.stack import Stack

# What each page must show, by language: 460,000 masks reserved of a million pledged,
# 40 t of fruit, the hospital in Jianghan District, the donor in Shenzhen.
SHOWN: dict[str, dict[str, Any]] = {
    "zh": {
        "masks": "46万 个",
        "million": "100万 个",
        "fruit": "40 吨",
        "fruit_name": "水果",
        "mask": "口罩",
        "district": "武汉市江汉区",
        "city": "深圳市",
        "axes": {"mask": "万个", "fruit": "吨"},
        "gloves": "医用检查手套",
        "gloves_needed": "20,000 副",
        "masks_free": "54万 个",
        "wuhan": "武汉市",
        "pairs": "副",
    },
    "en": {
        "masks": "460,000 pieces",
        "million": "1,000,000 pieces",
        "fruit": "40 t",
        "fruit_name": "Fruit",
        "mask": "Mask",
        "district": "Jianghan District, Wuhan",
        "city": "Shenzhen",
        "axes": {"mask": "pieces", "fruit": "t"},
        "gloves": "Examination gloves",
        "gloves_needed": "20,000 pairs",
        "masks_free": "540,000 pieces",
        "wuhan": "Wuhan",
        "pairs": "pairs",
    },
}
CODES = re.compile(r"\b(4201|4403|420103|440304)\b")
# A base-unit figure of five digits or more in a unit that scales (g, ml), or a count
# of a hundred thousand or more that Chinese reads in 万.
NOISE = {
    "zh": re.compile(r"\d{1,3}(,\d{3})+(\.\d+)? ?(克|毫升)|\d{3},\d{3} 个"),
    "en": re.compile(r"\d{1,3}(,\d{3})+(\.\d+)? ?(g|ml)\b"),
}


def _read(page: Any) -> str:
    text: str = page.locator("main").inner_text()
    return text


def _check(text: str, language: str, *expected: str) -> None:
    for shown in expected:
        assert shown in text, (language, shown)
    assert CODES.search(text) is None, (language, CODES.search(text))
    assert NOISE[language].search(text) is None, (language, NOISE[language].search(text))
    assert "40,000,000" not in text and "40000000" not in text


def test_ledger_plan_list_and_trace_read_in_human_units_in_both_languages(
    stack: Stack, live: str, browser: Any, shots: Shots
) -> None:
    chain = build(stack, {"ward": 460_000}, pledged=1_000_000)
    client = stack.client()
    coordinator = chain.people["coordinator"]
    fruit = post_as(
        client,
        "/api/v1/pledges",
        {
            "lines": [{"item": "fruit", "quantity": "40", "unit": "t"}],
            "origin": {"region": "440304", "address": "Futian market"},
        },
        chain.people["donor"],
    )
    await_supply(stack, fruit)
    runs = client.get("/api/v1/matching/runs", headers=coordinator.headers).json["items"]
    # The run that reserved the masks (the fruit's pledge may have started a run of its
    # own by now, which found no need to match).
    run_id = next(
        run["id"]
        for run in runs
        if any(allocation["item"] == "mask" for allocation in run["allocations"])
    )
    # Gloves the ward needs and no one has pledged: the one gap on the coordinator's page.
    post_as(
        client,
        "/api/v1/needs",
        {
            "lines": [
                {"item": "gloves_exam", "quantity": "20000", "unit": "pair", "urgency": "high"}
            ],
            "location": {"region": "420103", "address": "Ward 3, Jiang'an"},
        },
        chain.people["ward"],
    )

    for language, shown in SHOWN.items():
        page = new_page(browser, live, language)
        _choose_language(page, language)
        _sign_in(page, coordinator.email)
        # The public ledger: a small chart per item, each in its own unit.
        page.goto("/transparency")
        for item in ("mask", "fruit"):
            page.locator(f'canvas#chart-item-{item}[data-drawn="true"]').wait_for()
        specs = {
            str(node.get_attribute("id")): json.loads(node.inner_text())
            for node in page.locator('script[type="application/json"]').all()
        }
        for item, axis in shown["axes"].items():
            spec = specs[f"chart-item-{item}-data"]
            assert spec["axis"] == axis, (language, item, spec["axis"])
            assert len(spec["datasets"]) == 1 and len(spec["datasets"][0]["data"]) == 4
        # Every chart counts one item's quantities in one unit.
        for name, spec in specs.items():
            assert spec.get("base_unit"), (language, name)
        text = _read(page)
        _check(text, language, shown["masks"], shown["million"], shown["fruit"], shown["city"])
        print(shots.take(page, f"{language}-ledger"))
        # The matching plan that reserved the masks.
        page.goto(f"/coordinator/matching/{run_id}")
        text = _read(page)
        _check(text, language, shown["masks"], shown["district"], shown["mask"])
        assert re.search(r"\bmask\b", text) is None
        print(shots.take(page, f"{language}-plan"))
        # The coordinator's gaps: each item's bar is its gap in percent of its own need
        # (gloves short by all of it, masks and fruit covered: no bar); the city chart
        # holds the gloves alone, in pairs; the table reads in names and human units.
        page.goto("/coordinator/gaps")
        page.locator('canvas#chart-gaps-by-item[data-drawn="true"]').wait_for()
        page.locator('canvas#chart-gaps-by-city[data-drawn="true"]').wait_for()
        by_item = json.loads(page.locator("#chart-gaps-by-item-data").inner_text())
        by_city = json.loads(page.locator("#chart-gaps-by-city-data").inner_text())
        assert by_item["axis"] == "%" and len(by_item["datasets"]) == 1
        shares = dict(zip(by_item["labels"], by_item["datasets"][0]["data"], strict=True))
        assert shares == {shown["gloves"]: 100, shown["mask"]: 0, shown["fruit_name"]: 0}
        assert (by_city["base_unit"], by_city["axis"]) == ("pair", shown["pairs"])
        (wuhan,) = by_city["labels"]
        assert shown["wuhan"] in wuhan
        _check(
            _read(page),
            language,
            shown["gloves"],
            shown["gloves_needed"],
            shown["masks_free"],
            shown["fruit"],
            shown["wuhan"],
        )
        print(shots.take(page, f"{language}-gaps"))
        # The needs list.
        page.goto("/needs")
        _check(_read(page), language, shown["masks"], shown["district"], shown["mask"])
        print(shots.take(page, f"{language}-needs"))
        # The shipment list.
        page.goto("/shipments")
        _check(_read(page), language, shown["masks"], shown["district"], shown["mask"])
        print(shots.take(page, f"{language}-shipments"))
        # The pledge's trace to the hospital.
        page.goto(f"/pledges/{chain.pledge['id']}")
        _check(_read(page), language, shown["million"], shown["masks"], shown["mask"])
        print(shots.take(page, f"{language}-trace"))
        page.context.close()
    print(f"screenshots: {shots.folder}")
