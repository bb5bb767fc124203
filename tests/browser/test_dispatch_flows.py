"""Shipments, receipts and the public ledger in headless Chromium, in both languages:
a coordinator assigns the logistics company; logistics staff, on a phone, mark one
shipment delivered update by update and another through a scanner batch with a
refused row; the hospital confirms a short delivery (the page adds up each line, the
API refuses a total that does not match); the public ledger shows what arrived,
without sign-in, with its charts and downloads.

Then the papers of the road: logistics staff print a shipment's waybill and scan it
by the tracking number printed on it; a hospital corrects a short receipt and sees
what is still open on the need line it serves."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pypdf import PdfReader

from tests.browser.conftest import Shots, new_page
from tests.browser.supply_chain import assign, build, deliver, need_line, shipment, stamp
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
        "corrected": "The receipt is corrected.",
        "now": "now 270 pieces accepted, 10 pieces damaged, 20 pieces short",
        "open_before": "0 pieces still open",
        "open_short": "50 pieces still open",
        "open_corrected": "30 pieces still open",
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
        "corrected": "收货确认已更正。",
        "now": "目前：完好 270 个，损坏 10 个，短缺 20 个",  # noqa: RUF001
        "open_before": "仍缺 0 个",
        "open_short": "仍缺 50 个",
        "open_corrected": "仍缺 30 个",
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
    # The flows are a page of the whole ledger, which both languages' runs share: a
    # flow from this donor that arrived in part (250 of 300) is on it.
    assert any("250" in row for row in flows.splitlines())
    public.locator('canvas#chart-item-mask[data-drawn="true"]').wait_for()
    link = public.locator('a[href*="export.csv?table=flows"]')
    download = public.request.get(str(link.get_attribute("href")))
    assert download.status == 200 and chain.people["ward"].org["name"] in download.text()
    shots.take(public, "ledger")
    assert re.search(r"/signin", public.url) is None
    for page in (desk, phone, ward, public):
        page.context.close()


def _need_figures(page: Any, line: int = 0) -> dict[str, Any]:
    """What the receipt page says of the need line its ``line`` serves, as the API
    names the figures."""
    shown = page.locator("[data-receipt-line]").nth(line).locator(".need-line")
    figures: dict[str, Any] = {"id": shown.get_attribute("data-need-line")}
    for name in ("requested", "received", "in-transit", "open"):
        figures[name.replace("-", "_")] = int(str(shown.get_attribute(f"data-{name}")))
    return figures


def _api_figures(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": line["id"],
        "requested": line["quantity"],
        "received": line["received"],
        "in_transit": line["in_transit"],
        "open": line["open"],
    }


@pytest.mark.parametrize("language", LANGUAGES)
def test_logistics_prints_the_waybill_and_scans_it_by_its_tracking_number(
    stack: Stack, live: str, browser: Any, shots: Shots, language: str
) -> None:
    chain = build(stack, {"ward": 300})
    ward_id = chain.shipments["ward"]["id"]
    assign(stack, chain, "ward")
    number = shipment(stack, chain, "ward")["tracking_number"]
    assert re.fullmatch(r"AL-\d{4}-\d{6}", number)

    # Logistics staff open their shipment from the board.
    desk = new_page(browser, live, language)
    _choose_language(desk, language)
    _sign_in(desk, chain.people["carrier"].email)
    desk.goto("/shipments")
    desk.locator(f'section[data-status="planned"] [data-shipment="{ward_id}"] a').click()
    desk.wait_for_url(f"**/shipments/{ward_id}")
    assert number in desk.locator("h1").inner_text()
    assert desk.locator("h1 .status-planned").count() == 1
    shots.take(desk, "shipment")

    # The waybill link gives the PDF to print, with the tracking number on it. The
    # answer is kept on its way to the browser, whose viewer would stand in its place.
    answers: list[Any] = []

    def keep(route: Any) -> None:
        answers.append(route.fetch())
        route.fulfill(response=answers[-1])

    desk.route("**/waybill.pdf*", keep)
    desk.locator("a.waybill-a4").click()
    desk.wait_for_url(f"**/shipments/{ward_id}/waybill.pdf")
    (waybill,) = answers
    assert waybill.status == 200
    assert waybill.headers["content-type"] == "application/pdf"
    reader = PdfReader(io.BytesIO(waybill.body()))
    printed = "".join(page.extract_text() or "" for page in reader.pages)
    assert number in re.sub(r"\s+", "", printed)

    # The scanner reads the number off the waybill: its batch names the shipment so.
    desk.goto("/shipments/batch")
    scanned = "\n".join(
        [
            "shipment_id,status,occurred_at,location,note",
            f"{number},picked_up,{stamp(3)},Futian depot,",
            f"{number},delivered,{stamp(2)},Ward 3,",
        ]
    )
    desk.set_input_files(
        '[name="file"]',
        files=[{"name": "scanner.csv", "mimeType": "text/csv", "buffer": scanned.encode()}],
    )
    desk.locator('form[action="/shipments/batch"] button[type="submit"]').click()
    outcomes = desk.locator(".batch-result tbody tr")
    assert [outcomes.nth(i).get_attribute("data-outcome") for i in range(2)] == [
        "applied",
        "applied",
    ]
    shots.take(desk, "batch-result")
    after = shipment(stack, chain, "ward")
    assert after["status"] == "delivered"
    scans = [(e["status"], e["applied"]) for e in after["history"] if e["source"] == "batch"]
    assert scans == [("picked_up", True), ("delivered", True)]

    # The row links to the shipment it found, which shows the status moved.
    outcomes.first.locator(f'a[href="/shipments/{ward_id}"]').click()
    desk.wait_for_url(f"**/shipments/{ward_id}")
    assert desk.locator("h1 .status-delivered").count() == 1
    assert "Ward 3" in desk.locator("table.history tbody").inner_text()
    shots.take(desk, "delivered")

    # The waybill's QR code opens the receipt page, which is the hospital's to use: the
    # carrier sees none of the hospital's need figures there.
    desk.goto(f"/shipments/{ward_id}/receipt")
    assert desk.locator("[data-receipt-line]").count() == 1
    assert desk.locator(".need-line").count() == 0
    desk.context.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_hospital_corrects_a_short_receipt_and_sees_what_is_still_open(
    stack: Stack, live: str, browser: Any, shots: Shots, language: str
) -> None:
    text = TEXT[language]
    chain = build(stack, {"ward": 300})
    ward_id = chain.shipments["ward"]["id"]
    assign(stack, chain, "ward")
    deliver(stack, chain, "ward")

    ward = new_page(browser, live, language)
    _choose_language(ward, language)
    _sign_in(ward, chain.people["ward"].email)
    ward.goto(f"/shipments/{ward_id}")
    ward.locator(f'a.button[href="/shipments/{ward_id}/receipt"]').click()
    ward.wait_for_url(f"**/shipments/{ward_id}/receipt")
    # Before the receipt, the need line's 300 masks are all on the way.
    before = need_line(stack, chain, "ward")
    assert (before["in_transit"], before["open"]) == (300, 0)
    assert _need_figures(ward) == _api_figures(before)
    assert text["open_before"] in ward.locator(".need-line").inner_text()

    # Fifty masks missing.
    ward.fill('[name="lines.0.accepted"]', "250")
    ward.fill('[name="lines.0.short"]', "50")
    ward.fill('[name="note"]', "one carton missing")
    ward.locator("form[data-receipt] button[type='submit']").click()
    assert text["confirmed"] in ward.locator(".flash").inner_text()
    assert ward.locator("h1 .status-received").count() == 1

    # The correction starts from those figures, and shows the fifty open again.
    ward.goto(f"/shipments/{ward_id}/receipt")
    short = need_line(stack, chain, "ward")
    assert (short["received"], short["in_transit"], short["open"]) == (250, 0, 50)
    assert _need_figures(ward) == _api_figures(short)
    assert text["open_short"] in ward.locator(".need-line").inner_text()
    assert ward.locator('[name="lines.0.short"]').input_value() == "50"
    shots.take(ward, "correct-receipt")

    # Thirty turn up in the store room, ten of them crushed.
    ward.fill('[name="lines.0.accepted"]', "270")
    ward.fill('[name="lines.0.damaged"]', "10")
    ward.fill('[name="lines.0.short"]', "20")
    ward.fill('[name="note"]', "30 found in the store room, 10 of them crushed")
    ward.locator("form[data-receipt] button[type='submit']").click()
    assert text["corrected"] in ward.locator(".flash").inner_text()
    ward.wait_for_url(f"**/shipments/{ward_id}/receipt")
    assert text["now"] in ward.locator("[data-receipt-line] legend").inner_text()
    corrected = need_line(stack, chain, "ward")
    assert (corrected["received"], corrected["in_transit"], corrected["open"]) == (270, 0, 30)
    assert _need_figures(ward) == _api_figures(corrected)
    assert text["open_corrected"] in ward.locator(".need-line").inner_text()
    shots.take(ward, "corrected")

    line = shipment(stack, chain, "ward")["lines"][0]
    assert (line["accepted"], line["damaged"], line["short"]) == (270, 10, 20)
    receipts = stack.client().get(
        f"/api/v1/shipments/{ward_id}/receipts", headers=chain.people["ward"].headers
    )
    assert receipts.json["receipt_status"] == "corrected"
    assert [r["note"] for r in receipts.json["items"]] == [
        "one carton missing",
        "30 found in the store room, 10 of them crushed",
    ]
    ward.context.close()
