"""People read human units, names and local time (README: "Web UI"): a plan, a shipment
list and a shipment show 40 吨 where 40,000,000 g is stored, districts by name, items
and standards by name, in both languages; the exact figure stays on hover."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import update

from services.gateway.models import Organisation as GatewayOrganisation
from tests.support.auth import PASSWORD, Account
from tests.support.shipping import await_supply, list_shipments, post_as
from tests.support.stack import Stack, eventually
from tests.support.world import saga_world

pytestmark = pytest.mark.embedded

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
BEIJING = {"zh": "（北京时间）", "en": "(Beijing time)"}  # noqa: RUF001


def _signed_in(stack: Stack, who: Account, language: str) -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    found = CSRF.search(client.get("/signin").data)
    assert found
    done = client.post(
        "/signin",
        data={"csrf_token": found.group(1).decode(), "email": who.email, "password": PASSWORD},
    )
    assert done.status_code == 302
    return client


def _visible(page: bytes) -> str:
    """The text a person reads: no tags, attributes, scripts or styles."""
    text = re.sub(rb"<(script|style|template)\b.*?</\1>", b" ", page, flags=re.S)
    text = re.sub(rb"<[^>]+>", b" ", text)
    return html.unescape(text.decode())


def test_plans_and_shipments_speak_in_tonnes_and_district_names(stack: Stack) -> None:
    people = saga_world(stack)
    client = stack.client()
    pledge = post_as(
        client,
        "/api/v1/pledges",
        {
            "lines": [
                {"item": "fruit", "quantity": "40", "unit": "t"},
                {"item": "mask", "standard": "GB19083-2010", "quantity": "460000", "unit": "piece"},
            ],
            "origin": {"region": "420106", "address": "Wuchang market"},
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
        {"dry_run": True, "items": ["fruit", "mask"]},
        people["coordinator"],
    )
    shipment = None
    # Both registered their names in Chinese and in English: each page names them in its
    # language, in the public ledger's flows and in the pledge's trace.
    named = {
        "donor": {"zh": "深圳测试基金会", "en": "Shenzhen Test Foundation"},
        "hospital": {"zh": "武汉测试医院", "en": "Wuhan Test Hospital"},
    }
    with stack.runtime("gateway").unit_of_work() as session:
        for who, names in named.items():
            session.execute(
                update(GatewayOrganisation)
                .where(GatewayOrganisation.id == uuid.UUID(people[who].org_id))
                .values(name_zh=names["zh"], name_en=names["en"])
            )

    for language, tonnes, masks, district, item in (
        ("zh", "40 吨", "46万 个", "武汉市江汉区", "水果"),
        ("en", "40 t", "460,000 pieces", "Jianghan District, Wuhan", "Fruit"),
    ):
        desk = _signed_in(stack, people["coordinator"], language)
        # The matching page lists the preview as waiting until it is approved, then
        # under its history.
        listed = desk.get("/coordinator/matching").data.decode()
        waiting, _sep, history = listed.partition('<details class="history">')
        link = f"/coordinator/matching/{run['id']}"
        assert (link in waiting, link in history) == (
            (True, False) if shipment is None else (False, True)
        ), language
        page = desk.get(f"/coordinator/matching/{run['id']}")
        assert page.status_code == 200
        seen = _visible(page.data)
        for expected in (tonnes, masks, district, item, "GB19083-2010"):
            assert expected in seen, (language, expected)
        # The stored figures and codes stay out of what people read...
        codes = (" fruit ", " mask ") if language == "zh" else (" fruit ",)
        for stored in ("40,000,000", "40000000", "420103", *codes):
            assert stored not in seen, (language, stored)
        # ...and the exact figure is there on hover.
        assert b'title="40,000,000 ' in page.data
        # Its time is Beijing time, and says so.
        assert BEIJING[language] in seen

        if shipment is None:
            approved = desk.post(
                f"/coordinator/matching/{run['id']}/approve",
                data={"csrf_token": CSRF.search(page.data).group(1).decode()},  # type: ignore[union-attr]
            )
            assert approved.status_code in (302, 303), approved.data[:300]

            def planned() -> dict[str, Any] | None:
                found = list_shipments(client, people["coordinator"], need_id=need["id"])
                return found[0] if found and len(found[0]["lines"]) == 2 else None

            shipment = eventually(planned, timeout=60)
        board = _visible(desk.get("/shipments").data)
        one = _visible(desk.get(f"/shipments/{shipment['id']}").data)
        for seen in (board, one):
            for expected in (tonnes, district, item):
                assert expected in seen, (language, expected)
            assert "40,000,000" not in seen and "420103" not in seen
        other = "en" if language == "zh" else "zh"
        reader = stack.client()
        reader.set_cookie("aidlink_lang", language)
        flows = re.findall(
            r'<td class="(?:donor|recipient)">(.*?)</td>', reader.get("/transparency").data.decode()
        )
        assert named["donor"][language] in flows and named["hospital"][language] in flows
        assert not {named["donor"][other], named["hospital"][other]} & set(flows)
        # The ledger's region filter takes a name as people type it, and shows the region
        # it chose by name; the API and the downloads filter by its code.
        typed, chosen = ("深圳", "广东省深圳市") if language == "zh" else ("Shenzhen", "Shenzhen")
        filtered = reader.get("/transparency", query_string={"region": typed})
        assert filtered.status_code == 200
        assert b"region=4403" in filtered.data
        field = re.search(rb'<input id="[^"]*region[^"]*" name="region"[^>]*>', filtered.data)
        assert field and f'value="{chosen}'.encode() in field.group(0), field
        trace = _visible(desk.get(f"/pledges/{pledge['id']}").data)
        assert named["hospital"][language] in trace and named["hospital"][other] not in trace
        assert BEIJING[language] in one
        # The masks' standard is named on the board's card as on the shipment.
        assert "GB19083-2010" in board and "GB19083-2010" in one
        # The system's note on the planned shipment reads in the page's language too.
        assert ("预留后自动合并" if language == "zh" else "consolidated on reservation") in one
        if language == "zh":
            assert "consolidated" not in one
