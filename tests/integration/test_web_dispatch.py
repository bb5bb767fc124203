"""The shipment, receipt, trace, gaps and ledger pages through Flask's test client,
over a real supply chain (real workers): errors land at their fields, in the page's
language; forms need their CSRF token; the assignment is based on the version shown;
text that looks like HTML is shown as text."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from services.dispatch.models import MatchingRun, Shipment
from services.dispatch.models import Organisation as DispatchOrganisation
from services.gateway.models import Organisation as GatewayOrganisation
from tests.browser.supply_chain import Chain, assign, build, shipment
from tests.support.auth import PASSWORD, Account
from tests.support.stack import Stack

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
BEIJING = timedelta(hours=8)


def _token(client: Any, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.data[:500]
    found = CSRF.search(page.data)
    assert found
    return found.group(1).decode()


def _error(page: bytes, name: str) -> str:
    found = re.search(rb'id="f-' + name.replace(".", "-").encode() + rb'-error">([^<]*)<', page)
    return html.unescape(found.group(1).decode()) if found else ""


def _signed_in(stack: Stack, who: Account, language: str = "en") -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    token = _token(client, "/signin")
    done = client.post(
        "/signin", data={"csrf_token": token, "email": who.email, "password": PASSWORD}
    )
    assert done.status_code == 302
    return client


def _local(hours_ago: float) -> str:
    """A ``datetime-local`` value in Beijing time, ``hours_ago`` before now."""
    moment = datetime.now(UTC) + BEIJING - timedelta(hours=hours_ago)
    return moment.strftime("%Y-%m-%dT%H:%M")


def _text(html: bytes) -> str:
    return html.decode()


def test_logistics_assigns_updates_and_batches_then_the_hospital_confirms(
    stack: Stack,
) -> None:
    chain: Chain = build(stack, {"ward": 300, "clinic": 200})
    ward_id = chain.shipments["ward"]["id"]
    clinic_id = chain.shipments["clinic"]["id"]

    # The coordinator assigns the carrier, based on the version the page showed.
    desk = _signed_in(stack, chain.people["coordinator"])
    page = desk.get(f"/shipments/{ward_id}")
    assert page.status_code == 200
    token = CSRF.search(page.data).group(1).decode()  # type: ignore[union-attr]
    found = re.search(rb'name="etag" value="([^"]*)"', page.data)
    assert found is not None
    etag = html.unescape(found.group(1).decode())
    assert chain.people["carrier"].org_id.encode() in page.data  # offered in the list
    stale = desk.post(
        f"/shipments/{ward_id}/assign",
        data={
            "csrf_token": token,
            "etag": '"999"',
            "logistics_org_id": chain.people["carrier"].org_id,
        },
    )
    assert stale.status_code == 412
    assert b"Someone changed this shipment meanwhile" in stale.data
    assert shipment(stack, chain, "ward")["logistics_org_id"] is None
    wrong = desk.post(
        f"/shipments/{ward_id}/assign",
        data={"csrf_token": token, "etag": etag, "logistics_org_id": chain.people["donor"].org_id},
    )
    assert wrong.status_code == 422
    assert _error(wrong.data, "logistics_org_id") == "A foundation is not a logistics company."
    done = desk.post(
        f"/shipments/{ward_id}/assign",
        data={
            "csrf_token": token,
            "etag": etag,
            "logistics_org_id": chain.people["carrier"].org_id,
        },
    )
    assert done.status_code == 302
    assert shipment(stack, chain, "ward")["logistics_org_id"] == chain.people["carrier"].org_id
    assign(stack, chain, "clinic")

    # The carrier's board shows both, as planned.
    carrier = _signed_in(stack, chain.people["carrier"])
    board = carrier.get("/shipments")
    assert board.status_code == 200
    assert ward_id.encode() in board.data and clinic_id.encode() in board.data
    assert b'data-status="planned"' in board.data

    # One update by the form: no CSRF token, a missing time, an impossible status.
    update_url = f"/shipments/{ward_id}/status"
    assert carrier.post(update_url, data={"status": "picked_up"}).status_code == 400
    token = _token(carrier, f"/shipments/{ward_id}")
    missing = carrier.post(
        update_url, data={"csrf_token": token, "status": "picked_up", "occurred_at": ""}
    )
    assert missing.status_code == 422
    assert _error(missing.data, "occurred_at") == "Missing data for required field."
    refused = carrier.post(
        update_url,
        data={
            "csrf_token": token,
            "status": "received",
            "occurred_at": _local(3),
            "zone": "+08:00",
        },
    )
    assert refused.status_code == 409
    assert _error(refused.data, "status") == (
        "A shipment is received only through the recipient's receipt."
    )
    carrier.set_cookie("aidlink_lang", "zh")
    refused = carrier.post(
        update_url,
        data={
            "csrf_token": token,
            "status": "received",
            "occurred_at": _local(3),
            "zone": "+08:00",
        },
    )
    assert _error(refused.data, "status") == "只有收货方确认收货后，货运才会变为已签收。"  # noqa: RUF001
    carrier.set_cookie("aidlink_lang", "en")
    assert shipment(stack, chain, "ward")["status"] == "planned"
    for status, hours in (("picked_up", 3), ("delivered", 2)):
        moved = carrier.post(
            update_url,
            data={
                "csrf_token": token,
                "status": status,
                "occurred_at": _local(hours),
                "zone": "+08:00",
                "location": "Wuhan checkpoint 4",
                "note": "sealed",
            },
        )
        assert moved.status_code == 302, moved.data[:2000]
    ward = shipment(stack, chain, "ward")
    assert ward["status"] == "delivered"
    applied = [e["status"] for e in ward["history"] if e["source"] == "api"]
    assert applied == ["picked_up", "delivered"]
    page = carrier.get(f"/shipments/{ward_id}")
    assert b"Wuhan checkpoint 4" in page.data and b"sealed" in page.data

    # A batch of pasted rows without a header: two applied, one duplicate, one refused.
    picked, dropped = _iso(3), _iso(2)
    rows = "\n".join(
        [
            f"{clinic_id},picked_up,{picked},Hankou,",
            f"{clinic_id},delivered,{dropped},Jiang'an,",
            f"{clinic_id},delivered,{dropped},Jiang'an,",
            f"{ward_id},in_transit,{_iso(1)},Hankou,",
        ]
    )
    token = _token(carrier, "/shipments/batch")
    assert carrier.post("/shipments/batch", data={"rows": rows}).status_code == 400
    empty = carrier.post("/shipments/batch", data={"csrf_token": token, "rows": " "})
    assert empty.status_code == 422
    assert _error(empty.data, "rows") == "Choose a file or paste the scanned rows."
    result = carrier.post("/shipments/batch", data={"csrf_token": token, "rows": rows})
    assert result.status_code == 200
    outcomes = re.findall(rb'data-outcome="(\w+)"', result.data)
    assert outcomes == [b"applied", b"applied", b"duplicate", b"refused"], _reason_cells(
        result.data
    )
    assert b"4 rows: 2 applied, 0 late, 1 duplicates, 1 refused." in result.data
    assert "A shipment that is delivered cannot become in transit." in _reason_cells(result.data)
    assert shipment(stack, chain, "clinic")["status"] == "delivered"
    # The same rows again change nothing.
    again = carrier.post("/shipments/batch", data={"csrf_token": token, "rows": rows})
    assert re.findall(rb'data-outcome="(\w+)"', again.data).count(b"applied") == 0

    # The hospital confirms the ward's shipment line by line; errors land on the line.
    hospital = _signed_in(stack, chain.people["ward"])
    incoming = hospital.get("/shipments")
    assert ward_id.encode() in incoming.data and clinic_id.encode() not in incoming.data
    form_url = f"/shipments/{ward_id}/receipt"
    token = _token(hospital, form_url)
    line = "lines.0"
    assert hospital.post(form_url, data={f"{line}.accepted": "300"}).status_code == 400
    uneven = hospital.post(
        form_url,
        data={
            "csrf_token": token,
            f"{line}.accepted": "250",
            f"{line}.damaged": "0",
            f"{line}.short": "40",
        },
    )
    assert uneven.status_code == 422
    assert _error(uneven.data, line) == (
        "Accepted, damaged and short add up to 290; the line carried 300."
    )
    assert b'value="40"' in uneven.data  # what was typed stays
    wordy = hospital.post(
        form_url,
        data={
            "csrf_token": token,
            f"{line}.accepted": "lots",
            f"{line}.damaged": "0",
            f"{line}.short": "0",
        },
    )
    assert _error(wordy.data, f"{line}.accepted") == "Not a valid integer."
    assert shipment(stack, chain, "ward")["status"] == "delivered"
    confirmed = hospital.post(
        form_url,
        data={
            "csrf_token": token,
            f"{line}.accepted": "250",
            f"{line}.damaged": "0",
            f"{line}.short": "50",
            "note": "one carton missing",
        },
    )
    assert confirmed.status_code == 302
    ward = shipment(stack, chain, "ward")
    assert ward["status"] == "received"
    assert (ward["lines"][0]["accepted"], ward["lines"][0]["short"]) == (250, 50)

    # Thirty of the "missing" turn up in the store room: the hospital corrects it,
    # from the figures it gave, and must say why.
    again = hospital.get(form_url)
    assert b"Correct the receipt" in again.data
    assert b'value="250"' in again.data and b'value="50"' in again.data
    corrects = re.search(rb'name="corrects" value="([^"]+)"', again.data)
    assert corrects is not None
    figures = {
        "csrf_token": _token(hospital, form_url),
        "corrects": corrects.group(1).decode(),
        f"{line}.accepted": "280",
        f"{line}.damaged": "0",
        f"{line}.short": "20",
    }
    unexplained = hospital.post(form_url, data=figures)
    assert unexplained.status_code == 422
    assert _error(unexplained.data, "note") == "Say why the receipt is corrected."
    corrected = hospital.post(form_url, data={**figures, "note": "30 found in the store room"})
    assert corrected.status_code == 302
    ward = shipment(stack, chain, "ward")
    assert (ward["lines"][0]["accepted"], ward["lines"][0]["short"]) == (280, 20)
    receipts = (
        stack.client()
        .get(f"/api/v1/shipments/{ward_id}/receipts", headers=chain.people["ward"].headers)
        .json["items"]
    )
    assert [(r["sequence"], r["note"]) for r in receipts] == [
        (1, "one carton missing"),
        (2, "30 found in the store room"),
    ]
    assert receipts[1]["corrects"] == receipts[0]["id"]

    # Traces: the hospital's need to its donor, the donor's pledge to the hospitals.
    need_page = hospital.get(f"/needs/{chain.needs['ward']['id']}")
    assert need_page.status_code == 200
    assert chain.people["donor"].org["name"].encode() in need_page.data
    assert b"280 piece" in need_page.data or b"280 pieces" in need_page.data
    donor = _signed_in(stack, chain.people["donor"])
    pledge_page = donor.get(f"/pledges/{chain.pledge['id']}")
    assert pledge_page.status_code == 200
    for name in ("ward", "clinic"):
        assert chain.people[name].org["name"].encode() in pledge_page.data
    assert f"/pledges/{chain.pledge['id']}".encode() in donor.get("/pledges").data

    # The public ledger, with no sign-in: the corrected receipt's 280 masks, and its
    # downloads.
    public = stack.client()
    ledger = public.get("/transparency")
    assert ledger.status_code == 200
    received = re.search(
        rb'<tr data-item="mask">.*?<td class="received">([^<]*)</td>', ledger.data, re.S
    )
    assert received and received.group(1).startswith(b"280")
    assert b"/api/v1/transparency/export.csv?table=flows" in ledger.data
    bad = public.get("/transparency?region=42x")
    assert bad.status_code == 422
    assert _error(bad.data, "region") == "Digits only: a region code or its prefix."
    bad = public.get("/transparency?from=2020-02-10&to=2020-02-01")
    assert _error(bad.data, "to") == "Must not be before 'from'."


def _iso(hours_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def _reason_cells(page: bytes) -> str:
    return html.unescape(
        b" ".join(re.findall(rb'<td class="reason">(.*?)</td>', page, re.S)).decode()
    )


def test_overdue_gaps_and_html_looking_text_shown_as_text(stack: Stack) -> None:
    odd = 'Wuhan <b>Relief</b> & "Care" <script>alert(1)</script>'
    chain = build(stack, {"ward": 300})
    shipment_id = chain.shipments["ward"]["id"]
    assign(stack, chain, "ward")
    # The API refuses markup in JSON bodies: such text can only come in from elsewhere
    # (an older record, a CSV), so it is put straight into the records here.
    with stack.runtime("gateway").unit_of_work() as session:
        session.execute(
            update(GatewayOrganisation)
            .where(GatewayOrganisation.id == uuid.UUID(chain.people["ward"].org_id))
            .values(name=odd)
        )
    with stack.runtime("dispatch").unit_of_work() as session:
        session.execute(
            update(DispatchOrganisation)
            .where(DispatchOrganisation.id == uuid.UUID(chain.people["ward"].org_id))
            .values(name=odd)
        )
    carrier = _signed_in(stack, chain.people["carrier"])
    token = _token(carrier, "/shipments/batch")
    location = '"<img src=x onerror=alert(1)> a < b"'
    note = '"<i>fragile</i> & ""c"""'  # CSV doubles the quotes inside a quoted field
    csv = (
        "shipment_id,status,occurred_at,location,note\n"
        f"{shipment_id},picked_up,{_iso(2)},{location},{note}\n"
    )
    sent = carrier.post(
        "/shipments/batch",
        data={"csrf_token": token, "file": (_bytes(csv), "scan.csv", "text/csv")},
        content_type="multipart/form-data",
    )
    assert sent.status_code == 200
    assert re.findall(rb'data-outcome="(\w+)"', sent.data) == [b"applied"]

    # Flagged as the overdue sweep would (an applied update clears the flag).
    with stack.runtime("dispatch").unit_of_work() as session:
        session.execute(
            update(Shipment)
            .where(Shipment.id == uuid.UUID(shipment_id))
            .values(
                overdue_at=datetime.now(UTC),
                overdue_reason=f"stale: no update since {_iso(30)}",
            )
        )
    desk = _signed_in(stack, chain.people["coordinator"])
    pages = {
        "shipment": desk.get(f"/shipments/{shipment_id}"),
        "board": desk.get("/shipments"),
        "pledge trace": desk.get(f"/pledges/{chain.pledge['id']}"),
        "ledger": stack.client().get("/transparency"),
    }
    for name, page in pages.items():
        assert page.status_code == 200, name
        text = page.data.decode()
        assert "<b>Relief</b>" not in text and "<script>alert(1)" not in text, name
        assert "Wuhan &lt;b&gt;Relief&lt;/b&gt; &amp; &#34;Care&#34; &lt;script&gt;" in text, name
    text = pages["shipment"].data.decode()
    assert "<img src=x" not in text and "<i>fragile</i>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt; a &lt; b" in text
    assert "&lt;i&gt;fragile&lt;/i&gt; &amp; &#34;c&#34;" in text

    # Overdue: listed for coordinators with its reason; refused to others.
    overdue = desk.get("/coordinator/shipments/overdue")
    assert overdue.status_code == 200
    assert shipment_id.encode() in overdue.data
    assert b"no update since" in overdue.data
    assert carrier.get("/coordinator/shipments/overdue").status_code == 403

    # Gaps: 1000 pledged, 300 allocated to the ward; nothing else is needed.
    gaps = desk.get("/coordinator/gaps")
    assert gaps.status_code == 200, gaps.data[:3000]
    row = re.search(rb'<tr data-item="mask">(.*?)</tr>', gaps.data, re.S)
    assert row is not None
    assert b'<td class="supply">700' in row.group(1)
    assert b'<td class="demand">0' in row.group(1)
    assert b'data-chart="chart-gaps-by-item-data"' in gaps.data
    assert carrier.get("/coordinator/gaps").status_code == 403


def _bytes(text: str) -> Any:
    import io

    return io.BytesIO(text.encode())


def test_a_preview_kept_from_before_shows_its_reasons_in_both_languages(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Previews stored before reasons carried a need's fill and the nearest donor
    (urgency, fairness tier, distance) still read, in both languages; each allocation
    says where it goes, its need asked for by the line's id."""
    from services.gateway.web import api as web_api
    from services.gateway.web import coordinator as coordinator_pages

    chain = build(stack, {"ward": 300, "clinic": 200})
    office = chain.people["coordinator"]
    ward, clinic = chain.needs["ward"], chain.needs["clinic"]
    ward_line = str(ward["lines"][0]["id"])
    clinic_line = str(clinic["lines"][0]["id"])
    unknown_line = str(uuid.uuid4())
    run_id = uuid.uuid4()
    with stack.runtime("dispatch").unit_of_work() as session:
        session.add(
            MatchingRun(
                id=run_id,
                status="preview",
                dry_run=True,
                trigger="manual",
                items=["mask"],
                plan={
                    "allocations": [
                        {
                            "pledge_line_id": str(uuid.uuid4()),
                            "need_line_id": unknown_line,
                            "item": "mask",
                            "quantity": 40,
                            "reason": {"urgency": "high", "fairness_tier": 2, "distance_km": 12.3},
                        },
                        {
                            "pledge_line_id": str(uuid.uuid4()),
                            "need_line_id": ward_line,
                            "item": "mask",
                            "quantity": 60,
                            "reason": {"urgency": "high"},
                        },
                        {
                            "pledge_line_id": str(uuid.uuid4()),
                            "need_line_id": clinic_line,
                            "item": "mask",
                            "quantity": 20,
                            "reason": {"urgency": "high", "distance_km": 3.0},
                        },
                    ],
                    "unmet": [],
                },
                stats={},
            )
        )
    # One line an ask, so that the page's two asks are seen; each names its lines.
    monkeypatch.setattr(coordinator_pages, "LINES_PER_ASK", 1)
    asked: list[Any] = []
    real_get = web_api.get

    def recording_get(path: str, **kwargs: Any) -> Any:
        if path == "/needs":
            asked.append(kwargs.get("query"))
        return real_get(path, **kwargs)

    monkeypatch.setattr(web_api, "get", recording_get)
    for language, words in (("en", "12.3 km"), ("zh", "12.3 公里")):
        page = _signed_in(stack, office, language).get(f"/coordinator/matching/{run_id}")
        assert page.status_code == 200, page.data[:300]
        shown = html.unescape(_text(page.data))
        assert words in shown
        # The need a line belongs to is found by the line's id, however old or new the
        # need: its place is named, not its id.
        for need, line in ((ward, ward_line), (clinic, clinic_line)):
            assert need["location"]["address"] in shown and f"{line[:8]}</td>" not in shown
    # Each page asked for its three lines one at a time (the first names no need).
    assert all(len(q["line_id"]) == 1 for q in asked), asked
    assert sorted(q["line_id"][0] for q in asked) == sorted(
        [unknown_line, ward_line, clinic_line] * 2
    )
    # The page asks for the needs by their lines' ids, at most 200 at a time.
    api = stack.client()

    def needs_of(*line_ids: str) -> Any:
        query = [("line_id", line_id) for line_id in line_ids]
        return api.get("/api/v1/needs", query_string=query, headers=office.headers)

    assert [n["id"] for n in needs_of(ward_line, str(uuid.uuid4())).json["items"]] == [ward["id"]]
    assert needs_of(str(uuid.uuid4())).json["items"] == []
    too_many = needs_of(*(str(uuid.uuid4()) for _ in range(51)))
    assert too_many.status_code == 422 and "line_id" in str(too_many.json["errors"])
