"""Printed documents: the waybill (A4 and the 100 x 150 mm label), the delivery note
and the run sheet, rendered for the people whose work needs them, parsed back as
text: the tracking number, both places and their contacts, every line as packed and
in base units, Chinese as Chinese."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pypdf import PdfReader

from tests.browser.supply_chain import Chain, assign, build, shipment
from tests.support.auth import PASSWORD, Account
from tests.support.stack import Stack

pytestmark = pytest.mark.embedded

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


def _signed_in(stack: Stack, who: Account, language: str) -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    page = client.get("/signin")
    found = CSRF.search(page.data)
    assert found
    done = client.post(
        "/signin",
        data={"csrf_token": found.group(1).decode(), "email": who.email, "password": PASSWORD},
    )
    assert done.status_code == 302
    return client


def _pdf_text(response: Any) -> tuple[str, PdfReader]:
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(response.data))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    # Table cells may wrap; compare without the line breaks and spaces.
    return re.sub(r"\s+", "", text), reader


def _chain(stack: Stack) -> Chain:
    return build(
        stack,
        {"ward": 1230},
        names={"donor": "启迪公益基金会", "ward": "武汉市第一医院", "carrier": "九州通物流"},
        pledge_line={
            "item": "mask",
            "standard": "GB19083-2010",
            "quantity": "30",
            "unit": "case",
            "pack_size": 50,
        },
        origin={
            "region": "440304",
            "address": "福田区仓库3号",
            "contact": {"name": "王师傅", "phone": "13800000001"},
        },
    )


def test_the_carrier_prints_a_waybill_a_label_and_the_run_sheet(stack: Stack) -> None:
    chain = _chain(stack)
    assign(stack, chain, "ward")
    moved = shipment(stack, chain, "ward")
    number = moved["tracking_number"]
    line = moved["lines"][0]
    assert (line["pack_unit"], line["pack_size"], line["standard"]) == (
        "case",
        50,
        "GB19083-2010",
    )
    carrier = _signed_in(stack, chain.people["carrier"], "zh")
    page = carrier.get(f"/shipments/{moved['id']}")
    assert f"/shipments/{moved['id']}/waybill.pdf".encode() in page.data
    assert "24 箱".encode() in page.data  # 1,230 masks as packed: 24 cases of 50 + 30

    text, reader = _pdf_text(carrier.get(f"/shipments/{moved['id']}/waybill.pdf"))
    assert len(reader.pages) == 1
    width, height = (float(x) for x in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    for expected in (
        number,
        "运单",
        "启迪公益基金会",
        "福田区仓库3号",
        "王师傅",
        "13800000001",
        "武汉市第一医院",
        "Ward3,Jiang'an",
        "九州通物流",
        "口罩",
        "GB19083-2010",
        "24箱",
        "1,230",
    ):
        assert expected in text, (expected, text)

    text, reader = _pdf_text(carrier.get(f"/shipments/{moved['id']}/waybill.pdf?size=label"))
    width, height = (float(x) for x in reader.pages[0].mediabox.upper_right)
    assert (round(width), round(height)) == (283, 425)  # 100 x 150 mm
    assert number in text and "武汉市第一医院" in text and "福田区仓库3号" in text

    bad = carrier.get(f"/shipments/{moved['id']}/waybill.pdf?size=a3")
    assert bad.status_code == 400 and b"size" in bad.data

    carrier.set_cookie("aidlink_lang", "en")
    text, _reader = _pdf_text(carrier.get(f"/shipments/{moved['id']}/waybill.pdf"))
    assert "Waybill" in text and "Mask" in text and "24case" in text

    today = (datetime.now(UTC) + timedelta(hours=8)).date().isoformat()
    text, _reader = _pdf_text(carrier.get(f"/shipments/run-sheet.pdf?day={today}"))
    assert number in text and "武汉市第一医院" in text and "福田区仓库3号" in text
    bad = carrier.get("/shipments/run-sheet.pdf?day=tomorrow")
    assert bad.status_code == 400 and b"day" in bad.data

    # The run sheet asks for the company's shipments still on their way, not every one
    # it ever carried; the API's filter says which those are.
    api = stack.client()
    headers = chain.people["carrier"].headers

    def listed(in_progress: str) -> list[str]:
        answer = api.get(f"/api/v1/shipments?in_progress={in_progress}", headers=headers)
        assert answer.status_code == 200, answer.json
        return [s["id"] for s in answer.json["items"]]

    assert moved["id"] in listed("true") and moved["id"] not in listed("false")
    refused = api.get("/api/v1/shipments?in_progress=soon", headers=headers)
    assert refused.status_code == 422 and "in_progress" in str(refused.json["errors"])


def test_the_hospital_prints_the_delivery_note_and_a_stranger_prints_nothing(
    stack: Stack,
) -> None:
    chain = _chain(stack)
    moved = shipment(stack, chain, "ward")
    hospital = _signed_in(stack, chain.people["ward"], "zh")
    text, _reader = _pdf_text(hospital.get(f"/shipments/{moved['id']}/delivery-note.pdf"))
    assert moved["tracking_number"] in text and "交接单" in text and "口罩" in text
    # The recipient sees where its goods come from by region only: no pickup address.
    assert "福田区仓库3号" not in text and "王师傅" not in text

    stranger = _signed_in(stack, chain.people["donor"], "zh")
    assert stranger.get(f"/shipments/{moved['id']}/waybill.pdf").status_code == 200
    # A logistics company not assigned sees nothing of it.
    carrier = _signed_in(stack, chain.people["carrier"], "zh")
    assert carrier.get(f"/shipments/{moved['id']}/waybill.pdf").status_code == 404
