"""The API's optional ``display`` fields (README: "Quantities as people read them"):
``?display=true`` adds each quantity as people read it next to the exact figure, in the
language of Accept-Language, on pledge and need lines, allocations, a plan's
allocations, shipment lines, traces and the public ledger; without it every answer is
as before; the OpenAPI document describes the field and the parameter."""

from __future__ import annotations

from typing import Any

from tests.support.auth import Account
from tests.support.shipping import (
    await_supply,
    call_as,
    deliver,
    list_shipments,
    post_as,
    receipt_lines,
)
from tests.support.stack import Stack, eventually
from tests.support.world import saga_world

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}
# What 40 t of fruit and 460,000 masks read as, by language.
FRUIT = {"zh": "40 吨", "en": "40 t"}
MASKS = {"zh": "46万 个", "en": "460,000 pieces"}
# 500 masks short of 460,000: what was accepted, and the shortfall.
ACCEPTED = {"zh": "45.95万 个", "en": "459,500 pieces"}
SHORT = {"zh": "500 个", "en": "500 pieces"}
NONE = {"zh": "0 个", "en": "0 pieces"}


def _get(client: Any, url: str, who: Account | None, headers: dict[str, str]) -> Any:
    if who is None:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response
    return call_as(client, "GET", url, who, 200, headers=headers)


def _has_display(value: Any) -> bool:
    if isinstance(value, dict):
        return "display" in value or any(_has_display(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_display(v) for v in value)
    return False


def test_display_fields_read_quantities_in_the_callers_language(stack: Stack) -> None:
    people = saga_world(stack)
    client = stack.client()
    pledge = post_as(
        client,
        "/api/v1/pledges",
        {
            "lines": [
                {"item": "fruit", "quantity": "40", "unit": "t"},
                {"item": "mask", "quantity": "460000", "unit": "piece"},
            ],
            "origin": {"region": "440304", "address": "Futian warehouse"},
        },
        people["donor"],
    )
    await_supply(stack, pledge)
    need = post_as(
        client,
        "/api/v1/needs",
        {
            "lines": [
                {"item": "fruit", "quantity": "40000", "unit": "kg", "urgency": "critical"},
                {"item": "mask", "quantity": "460000", "unit": "piece", "urgency": "critical"},
            ],
            "location": {"region": "420103", "address": "1277 Jiefang Avenue"},
        },
        people["hospital"],
    )
    run = post_as(
        client,
        "/api/v1/matching/runs",
        {"dry_run": False, "items": ["fruit", "mask"]},
        people["coordinator"],
    )
    assert run["status"] == "applied", run

    def planned() -> dict[str, Any] | None:
        found = list_shipments(client, people["coordinator"], need_id=need["id"])
        return found[0] if found and len(found[0]["lines"]) == 2 else None

    shipment = eventually(planned, timeout=60)
    coordinator, donor, hospital = people["coordinator"], people["donor"], people["hospital"]
    urls: list[tuple[str, Account | None]] = [
        (f"/api/v1/pledges/{pledge['id']}", donor),
        ("/api/v1/pledges", donor),
        (f"/api/v1/needs/{need['id']}", hospital),
        (f"/api/v1/allocations?need_id={need['id']}", coordinator),
        (f"/api/v1/shipments/{shipment['id']}", coordinator),
        (f"/api/v1/pledges/{pledge['id']}/trace", donor),
        (f"/api/v1/needs/{need['id']}/trace", hospital),
        ("/api/v1/transparency/ledger", None),
        (f"/api/v1/matching/runs/{run['id']}", coordinator),
    ]

    # Without the parameter, whatever the language: the answers as before, exact.
    plain = {}
    for url, who in urls:
        body = _get(client, url, who, ZH).json
        assert not _has_display(body), url
        plain[url] = body
    fruit_line = next(line for line in plain[urls[0][0]]["lines"] if line["item"] == "fruit")
    assert fruit_line["quantity"] == 40_000_000 and fruit_line["base_unit"] == "g"

    for language, headers in (("zh", ZH), ("en", EN), ("en", {})):
        seen = {}
        for url, who in urls:
            joiner = "&" if "?" in url else "?"
            seen[url] = _get(client, f"{url}{joiner}display=true", who, headers).json

        def by_item(lines: list[dict[str, Any]], key: str = "item") -> dict[str, Any]:
            return {line[key]: line for line in lines}

        pledged = by_item(seen[urls[0][0]]["lines"])
        assert pledged["fruit"]["quantity"] == 40_000_000  # the exact figure stays
        assert pledged["fruit"]["display"]["quantity"] == FRUIT[language]
        assert pledged["mask"]["display"]["quantity"] == MASKS[language]
        assert pledged["fruit"]["display"]["reserved"] == FRUIT[language]
        assert set(pledged["fruit"]["display"]) == {
            "quantity",
            "reserved",
            "shipped",
            "delivered",
            "available",
        }
        listed = seen["/api/v1/pledges"]["items"][0]["lines"]
        assert by_item(listed)["fruit"]["display"]["quantity"] == FRUIT[language]

        needed = by_item(seen[urls[2][0]]["lines"])
        assert needed["fruit"]["display"]["quantity"] == FRUIT[language]
        assert needed["fruit"]["display"]["reserved"] == FRUIT[language]
        assert needed["mask"]["display"]["open"] == ("0 个" if language == "zh" else "0 pieces")

        allocations = by_item(seen[urls[3][0]]["items"])
        assert allocations["fruit"]["display"] == {"quantity": FRUIT[language]}
        assert allocations["mask"]["display"] == {"quantity": MASKS[language]}

        lines = by_item(seen[urls[4][0]]["lines"])
        assert lines["fruit"]["quantity"] == 40_000_000
        assert lines["fruit"]["display"]["quantity"] == FRUIT[language]

        traced = by_item(seen[urls[5][0]]["lines"])
        assert traced["fruit"]["display"]["allocated"] == FRUIT[language]
        assert by_item(seen[urls[6][0]]["lines"])["mask"]["display"]["quantity"] == MASKS[language]

        ledger = seen["/api/v1/transparency/ledger"]
        assert ledger["totals"]["fruit"]["pledged"] == 40_000_000
        assert ledger["totals"]["fruit"]["display"]["pledged"] == FRUIT[language]
        assert ledger["totals"]["mask"]["display"]["reserved"] == MASKS[language]
        assert ledger["by_region"]["4403"]["fruit"]["display"]["pledged"] == FRUIT[language]
        flows = by_item(ledger["flows"])
        assert flows["fruit"]["display"]["quantity"] == FRUIT[language]
        planned_allocations = by_item(seen[urls[8][0]]["allocations"])
        assert planned_allocations["fruit"]["display"] == {"quantity": FRUIT[language]}
        # Apart from ``display``, the answer is the one without the parameter.
        for url, _who in urls:
            assert _without_display(seen[url]) == plain[url], url

    # The ledger's cached answers and ETags are kept apart by language.
    etags = {
        name: client.get("/api/v1/transparency/ledger" + query, headers=headers).headers
        for name, query, headers in (
            ("plain", "", ZH),
            ("zh", "?display=true", ZH),
            ("en", "?display=true", EN),
        )
    }
    assert len({h["ETag"] for h in etags.values()}) == 3
    assert "Accept-Language" in etags["zh"]["Vary"]
    assert "Accept-Language" not in etags["plain"]["Vary"]

    # The open-data exports keep their exact columns; with ?display=true each figure
    # also reads as people read it, in a column of its own after them.
    plain_csv = client.get("/api/v1/transparency/export.csv", headers=ZH).get_data(as_text=True)
    assert "_display" not in plain_csv.splitlines()[0]
    for language, headers in (("zh", ZH), ("en", EN)):
        shown_csv = client.get(
            "/api/v1/transparency/export.csv?display=true", headers=headers
        ).get_data(as_text=True)
        exact_head = plain_csv.splitlines()[0].split(",")
        head, *rows = [line.split(",") for line in shown_csv.splitlines()]
        assert head[: len(exact_head)] == exact_head
        assert head[-4:] == [f"{m}_display" for m in ("pledged", "reserved", "shipped", "received")]
        fruit_rows = [dict(zip(head, row, strict=True)) for row in rows if "fruit" in row]
        donated = [row for row in fruit_rows if row["pledged"] == "40000000"]
        assert [row["pledged_display"] for row in donated] == [FRUIT[language]]
        flows = client.get("/api/v1/transparency/export.json?display=true", headers=headers).json
        assert "quantity_display" in flows["columns"]["flows"]
        assert {f["quantity_display"] for f in flows["flows"] if f["item"] == "fruit"} == {
            FRUIT[language]
        }

    # Delivered, the hospital finds 500 masks short; a second need of 10 t of fruit
    # finds no supply left, and a preview leaves it unmet.
    (shipment,) = deliver(client, people, need["id"])
    masks_line, fruit_line_id = _line_of(shipment, "mask"), _line_of(shipment, "fruit")
    received = [
        {**line, "accepted": line["accepted"] - 500, "short": 500}
        if line["shipment_line_id"] == masks_line
        else line
        for line in receipt_lines(shipment)
    ]
    post_as(client, f"/api/v1/shipments/{shipment['id']}/receipt", {"lines": received}, hospital)
    more = post_as(
        client,
        "/api/v1/needs",
        {
            "lines": [{"item": "fruit", "quantity": "10", "unit": "t", "urgency": "high"}],
            "location": {"region": "420103", "address": "1277 Jiefang Avenue"},
        },
        hospital,
    )
    preview = post_as(
        client, "/api/v1/matching/runs", {"dry_run": True, "items": ["fruit"]}, coordinator
    )
    assert preview["unmet"] == [{"need_line_id": more["lines"][0]["id"], "quantity": 10_000_000}]
    later: list[tuple[str, Account | None]] = [
        (f"/api/v1/pledges/{pledge['id']}/trace", donor),
        (f"/api/v1/needs/{need['id']}/trace", hospital),
        (f"/api/v1/shipments/{shipment['id']}/receipts", hospital),
        (f"/api/v1/matching/runs/{preview['id']}", coordinator),
    ]
    for language, headers in (("zh", ZH), ("en", EN)):

        def both(headers: dict[str, str] = headers) -> dict[str, Any] | None:
            """The answers with display, once each is the plain one apart from it (what
            follows the receipt and the new need settles in the workers meanwhile)."""
            shown, plain = {}, {}
            for url, who in later:
                plain[url] = _get(client, url, who, ZH).json
                shown[url] = _get(client, f"{url}?display=true", who, headers).json
            assert not any(_has_display(body) for body in plain.values())
            same = all(_without_display(shown[url]) == plain[url] for url in plain)
            return shown if same else None

        seen = eventually(both, timeout=30, interval=0.5)
        pledge_trace, need_trace, receipts, run_shown = (seen[url] for url, _who in later)

        # Inside a trace, each party, its shipments and its allocations read in the
        # line's item.
        (masks_traced,) = [line for line in pledge_trace["lines"] if line["item"] == "mask"]
        (party,) = masks_traced["recipients"]
        assert party["display"]["quantity"] == MASKS[language]
        assert party["display"]["short"] == SHORT[language]
        (carried,) = party["shipments"]
        assert carried["display"] == {
            "quantity": MASKS[language],
            "accepted": ACCEPTED[language],
            "damaged": NONE[language],
            "short": SHORT[language],
        }
        (allocated,) = party["allocations"]
        assert allocated["display"]["quantity"] == MASKS[language]
        (fruit_traced,) = [line for line in need_trace["lines"] if line["item"] == "fruit"]
        (donor_party,) = fruit_traced["donors"]
        assert donor_party["display"]["quantity"] == FRUIT[language]
        assert donor_party["shipments"][0]["display"]["accepted"] == FRUIT[language]

        # A receipt's lines, in their shipment line's item.
        (receipt,) = receipts["items"]
        figures = {line["shipment_line_id"]: line["display"] for line in receipt["lines"]}
        assert figures[masks_line] == {
            "accepted": ACCEPTED[language],
            "damaged": NONE[language],
            "short": SHORT[language],
        }
        assert figures[fruit_line_id]["accepted"] == FRUIT[language]

        # A plan's unmet demand, in its need line's item.
        (unmet,) = run_shown["unmet"]
        assert unmet["quantity"] == 10_000_000
        assert unmet["display"] == {"quantity": "10 吨" if language == "zh" else "10 t"}


def _line_of(shipment: dict[str, Any], item: str) -> str:
    (line,) = [line["id"] for line in shipment["lines"] if line["item"] == item]
    return str(line)


def _without_display(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_display(v) for k, v in value.items() if k != "display"}
    if isinstance(value, list):
        return [_without_display(v) for v in value]
    return value


def test_openapi_documents_the_display_field_and_parameter(stack: Stack) -> None:
    document = stack.client().get("/api/v1/openapi.json").json
    schemas = document["components"]["schemas"]
    for name in (
        "Line",
        "NeedLine",
        "Allocation",
        "ShipmentLine",
        "Figures",
        "Flow",
        "Party",
        "TracedShipment",
        "TracedAllocation",
        "ReceiptLine",
    ):
        field = schemas[name]["properties"]["display"]
        assert field["type"] == "object" and field["readOnly"] is True, name
        assert field["additionalProperties"] == {"type": "string"}, name
        assert "Accept-Language" in field["description"], name
    for path in (
        "/api/v1/pledges",
        "/api/v1/pledges/{pledge_id}",
        "/api/v1/needs",
        "/api/v1/needs/{need_id}",
        "/api/v1/allocations",
        "/api/v1/shipments/{shipment_id}",
        "/api/v1/transparency/ledger",
        "/api/v1/needs/{need_id}/trace",
        "/api/v1/matching/runs/{run_id}",
        "/api/v1/shipments/{shipment_id}/receipts",
        "/api/v1/community/{org_id}/reach",
    ):
        parameters = document["paths"][path].get("parameters", [])
        (display,) = [p for p in parameters if p["name"] == "display"]
        assert display["in"] == "query" and display["schema"]["type"] == "boolean", path
    # A boolean, as documented: anything else is refused, naming the parameter, before
    # the request does anything.
    client = stack.client()
    for value in ("maybe", "16246", ""):
        refused = client.get(f"/api/v1/transparency/ledger?display={value}")
        assert refused.status_code == 422, value
        assert refused.json["errors"] == {"display": ["Not a valid boolean: true or false."]}
    for value in ("true", "false", "1", "0"):
        assert client.get(f"/api/v1/transparency/ledger?display={value}").status_code == 200
