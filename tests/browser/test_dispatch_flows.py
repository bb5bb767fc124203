"""Shipments, receipts and the public ledger in headless Chromium, in both languages:
a coordinator assigns the logistics company; logistics staff, on a phone, mark one
shipment delivered update by update and another through a scanner batch with a
refused row; the hospital confirms a short delivery (the page adds up each line, the
API refuses a total that does not match); the public ledger shows what arrived,
without sign-in, with its charts and downloads."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.browser.conftest import Shots, new_page
from tests.browser.supply_chain import assign, build, shipment, stamp
from tests.browser.test_flows import LANGUAGES, _choose_language, _error_of, _sign_in
from tests.support.stack import Stack

TEXT = {
    "en": {
        "assigned": "The logistics company is assigned.",
        "updated": "The shipment's status is updated.",
        "delivered": "delivered",
        "counts": "3 rows: 2 applied, 0 late, 0 duplicates, 1 refused.",
        "refused": "A shipment that is delivered cannot become in transit.",
        "mismatch": "Accepted, damaged and short add up to 290; the line carried 300.",
        "confirmed": "The receipt is confirmed.",
        "received": "received",
        "mask": "Mask",
    },
    "zh": {
        "assigned": "已指派物流公司。",
        "updated": "货运状态已更新。",
        "delivered": "已送达",
        "counts": "共 3 行：2 行已执行，0 行迟到，0 行重复，1 行被拒绝。",  # noqa: RUF001
        "refused": "状态为“已送达”的货运不能变为“运输中”。",
        "mismatch": "完好、破损和短缺合计 290；该行运送了 300。",  # noqa: RUF001
        "confirmed": "已确认收货。",
        "received": "已签收",
        "mask": "口罩",
    },
}


def _beijing(hours_ago: float) -> str:
    moment = datetime.now(UTC) + timedelta(hours=8) - timedelta(hours=hours_ago)
    return moment.strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize("language", LANGUAGES)
def test_logistics_delivers_the_hospital_confirms_a_short_delivery_the_ledger_shows_it(
    stack: Stack, live: str, browser: Any, shots: Shots, language: str
) -> None:
    text = TEXT[language]
    chain = build(stack, {"ward": 300, "clinic": 200})
    ward_id = chain.shipments["ward"]["id"]
    clinic_id = chain.shipments["clinic"]["id"]
    assign(stack, chain, "clinic")

    # The coordinator assigns the logistics company to the ward's shipment.
    desk = new_page(browser, live, language)
    _choose_language(desk, language)
    _sign_in(desk, chain.people["coordinator"].email)
    desk.goto(f"/shipments/{ward_id}")
    desk.select_option('[name="logistics_org_id"]', chain.people["carrier"].org_id)
    shots.take(desk, "assign")
    desk.locator('form[action$="/assign"] button[type="submit"]').click()
    assert text["assigned"] in desk.locator(".flash").inner_text()
    assert chain.people["carrier"].org["name"] in desk.locator("dd.carrier").inner_text()

    # Logistics staff, on a phone: the board, then one update after another.
    phone = new_page(browser, live, language, mobile=True)
    _choose_language(phone, language)
    _sign_in(phone, chain.people["carrier"].email)
    phone.goto("/shipments")
    planned = phone.locator('section[data-status="planned"]')
    assert planned.locator(f'[data-shipment="{ward_id}"]').count() == 1
    assert planned.locator(f'[data-shipment="{clinic_id}"]').count() == 1
    shots.take(phone, "board")
    planned.locator(f'[data-shipment="{ward_id}"] a').click()
    phone.wait_for_url(f"**/shipments/{ward_id}")
    for status, hours, where in (("picked_up", 3, "Futian depot"), ("delivered", 2, "Ward 3")):
        phone.select_option('[name="status"]', status)
        phone.fill('[name="occurred_at"]', _beijing(hours))
        phone.fill('[name="location"]', where)
        phone.locator('form[action$="/status"] button[type="submit"]').click()
        assert text["updated"] in phone.locator(".flash").inner_text()
    assert text["delivered"] in phone.locator("h1 .status").inner_text()
    history = phone.locator("table.history tbody")
    assert "Futian depot" in history.inner_text() and "Ward 3" in history.inner_text()
    shots.take(phone, "shipment-delivered")

    # A scanner batch: the clinic's shipment picked up and delivered, and a row for
    # the ward's shipment that cannot follow its delivery.
    phone.goto("/shipments/batch")
    rows = "\n".join(
        [
            f"{clinic_id},picked_up,{stamp(3)},Hankou,",
            f"{clinic_id},delivered,{stamp(2)},Ward 4,",
            f"{ward_id},in_transit,{stamp(1)},Hankou,",
        ]
    )
    phone.fill('[name="rows"]', rows)
    shots.take(phone, "batch-form")
    phone.locator('form[action="/shipments/batch"] button[type="submit"]').click()
    result = phone.locator(".batch-result")
    assert result.locator(".counts").inner_text() == text["counts"]
    outcomes = result.locator("tbody tr")
    assert [outcomes.nth(i).get_attribute("data-outcome") for i in range(3)] == [
        "applied",
        "applied",
        "refused",
    ]
    assert text["refused"] in outcomes.nth(2).locator(".reason").inner_text()
    shots.take(phone, "batch-result")
    assert shipment(stack, chain, "clinic")["status"] == "delivered"
    assert shipment(stack, chain, "ward")["status"] == "delivered"

    # The hospital, on a phone, confirms the ward's delivery: 50 masks short.
    ward = new_page(browser, live, language, mobile=True)
    _choose_language(ward, language)
    _sign_in(ward, chain.people["ward"].email)
    ward.goto("/shipments")
    assert ward.locator(f'[data-shipment="{ward_id}"]').count() == 1
    assert ward.locator(f'[data-shipment="{clinic_id}"]').count() == 0
    shots.take(ward, "incoming")
    ward.goto(f"/shipments/{ward_id}/receipt")
    line = ward.locator("[data-receipt-line]").first
    ward.fill('[name="lines.0.accepted"]', "250")
    ward.fill('[name="lines.0.short"]', "40")
    # The page adds the line up as it is typed, and says it does not match.
    assert line.locator("[data-total] output").inner_text() == "290"
    assert line.locator("[data-mismatch]").is_visible()
    shots.take(ward, "receipt-mismatch")
    ward.locator("form[data-receipt] button[type='submit']").click()
    # The API refuses it too, and its error is shown at the line.
    assert _error_of(ward, "lines.0") == text["mismatch"]
    assert ward.locator("#error-summary").is_visible()
    shots.take(ward, "receipt-refused")
    ward.fill('[name="lines.0.short"]', "50")
    assert not ward.locator("[data-receipt-line] [data-mismatch]").first.is_visible()
    ward.locator("form[data-receipt] button[type='submit']").click()
    assert text["confirmed"] in ward.locator(".flash").inner_text()
    assert text["received"] in ward.locator("h1 .status").inner_text()
    shots.take(ward, "received")

    # The public, signed in as no one: the ledger shows the 250 masks received.
    public = new_page(browser, live, language)
    _choose_language(public, language)
    public.goto("/transparency")
    masks = public.locator('table.totals tr[data-item="mask"]')
    assert text["mask"] in masks.inner_text()
    assert masks.locator("td.received").inner_text().startswith("250")
    flows = public.locator("table.flows tbody").inner_text()
    assert chain.people["ward"].org["name"] in flows
    assert chain.people["donor"].org["name"] in flows
    public.locator('canvas#chart-by-item[data-drawn="true"]').wait_for()
    link = public.locator('a[href*="export.csv?table=flows"]')
    download = public.request.get(str(link.get_attribute("href")))
    assert download.status == 200 and chain.people["ward"].org["name"] in download.text()
    shots.take(public, "ledger")
    assert re.search(r"/signin", public.url) is None
    for page in (desk, phone, ward, public):
        page.context.close()
