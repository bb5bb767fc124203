"""Named places: an organisation keeps its warehouses and loading bays once, pledges,
imports and needs name them, and goods from one place travel together, however they
were pledged. The carrier sees the place's opening hours, access notes and contact;
no one else outside the organisation does."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from services.dispatch.models import Place as DispatchPlace
from services.donations.models import Place as DonationsPlace
from tests.support.auth import PASSWORD, Account
from tests.support.shipping import (
    await_supply,
    call_as,
    get_as,
    list_shipments,
    match,
    post_as,
    post_one_need,
)
from tests.support.stack import Stack, eventually
from tests.support.world import saga_world

pytestmark = pytest.mark.embedded

WAREHOUSE = {
    "name": "1号仓库",
    "kind": "warehouse",
    "address": "深圳市福田区 仓库路3号",
    "region": "440304",
    "lat": 22.54,
    "lon": 114.05,
    "contact": {"name": "王师傅", "phone": "13800000001"},
    "opening_hours": "08:00-18:00",
    "access_notes": "封闭园区, 请先打门卫电话",
}


def _places_url(who: Account) -> str:
    return f"/api/v1/orgs/{who.org_id}/places"


def _synced(stack: Stack, place_id: str, version: int = 1) -> None:
    def known() -> bool:
        copies: tuple[tuple[str, Any], ...] = (
            ("donations", DonationsPlace),
            ("dispatch", DispatchPlace),
        )
        for service, model in copies:
            with stack.runtime(service).session_factory() as session:
                row = session.get(model, uuid.UUID(place_id))
                if row is None or row.source_version < version:
                    return False
        return True

    eventually(known, timeout=60)


def _import(client: Any, who: Account, content: bytes) -> dict[str, Any]:
    boundary, body = encode_multipart(
        {"file": FileStorage(io.BytesIO(content), filename="pledges.csv")}
    )
    started = client.post(
        "/api/v1/pledges/imports",
        data=body,
        headers=who.headers,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert started.status_code == 202, started.json
    url = f"/api/v1/pledges/imports/{started.json['id']}"

    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = get_as(client, url, who)
        return job if job["status"] in ("succeeded", "failed") else None

    return eventually(done, timeout=60)


def test_places_are_kept_once_and_refused_with_the_field_named(stack: Stack) -> None:
    people = saga_world(stack, other="foundation")
    client = stack.client()
    donor, url = people["donor"], _places_url(people["donor"])

    missing = call_as(client, "POST", url, donor, 422, json={"name": "x", "region": "440304"})
    assert "address" in missing.json["errors"]
    bad = call_as(client, "POST", url, donor, 422, json={**WAREHOUSE, "region": "4"})
    assert "region" in bad.json["errors"]
    made = post_as(client, url, WAREHOUSE, donor)
    assert made["contact"] == WAREHOUSE["contact"] and made["version"] == 1
    # The same name, written another way, is the same place.
    taken = call_as(client, "POST", url, donor, 409, json={**WAREHOUSE, "name": "１号 仓库"})
    assert "name" in taken.json["errors"]

    # Its own members and coordinators see it; other organisations do not.
    assert [p["id"] for p in get_as(client, url, donor)["items"]] == [made["id"]]
    assert [p["id"] for p in get_as(client, url, people["coordinator"])["items"]] == [made["id"]]
    call_as(client, "GET", url, people["hospital"], 404)
    call_as(client, "POST", url, people["hospital"], 404, json=WAREHOUSE)
    assert client.get(url).status_code == 401

    # A change names the version it was based on.
    one = f"{url}/{made['id']}"
    call_as(client, "PATCH", one, donor, 428, json={"opening_hours": "24h"})
    changed = client.patch(
        one, json={"opening_hours": "24h"}, headers={**donor.headers, "If-Match": '"1"'}
    )
    assert changed.status_code == 200 and changed.json["opening_hours"] == "24h"
    _synced(stack, made["id"], version=2)

    # A pledge naming a place not its own, or a place and an address, is refused.
    line = [{"item": "mask", "quantity": "10", "unit": "piece"}]
    other = call_as(
        client,
        "POST",
        "/api/v1/pledges",
        people["other"],
        422,
        json={"lines": line, "origin": {"place_id": made["id"]}},
    )
    assert "origin.place_id" in other.json["errors"]
    both = call_as(
        client,
        "POST",
        "/api/v1/pledges",
        donor,
        422,
        json={"lines": line, "origin": {"place_id": made["id"], "address": "elsewhere"}},
    )
    assert "origin.address" in both.json["errors"]
    unnamed = call_as(
        client, "POST", "/api/v1/pledges", donor, 422, json={"lines": line, "origin": {}}
    )
    assert "origin.region" in unnamed.json["errors"]
    by_name = call_as(
        client,
        "POST",
        "/api/v1/pledges",
        donor,
        422,
        json={"lines": line, "origin": {"place": "2号仓库"}},
    )
    assert "origin.place" in by_name.json["errors"]


def test_an_api_pledge_and_an_imported_one_at_one_place_travel_together(stack: Stack) -> None:
    people = saga_world(stack, carriers=True)
    client = stack.client()
    donor = people["donor"]
    place = post_as(client, _places_url(donor), WAREHOUSE, donor)
    _synced(stack, place["id"])

    by_api = post_as(
        client,
        "/api/v1/pledges",
        {
            "lines": [{"item": "mask", "quantity": "300", "unit": "piece"}],
            "origin": {"place_id": place["id"]},
        },
        donor,
    )
    assert by_api["origin"]["place_id"] == place["id"]
    assert by_api["origin"]["address"] == WAREHOUSE["address"]
    assert by_api["origin"]["contact"] == WAREHOUSE["contact"]
    # The spreadsheet names the place as people write it.
    job = _import(
        client,
        donor,
        "item,quantity,unit,origin_place\nmask,200,piece,１号仓库\n".encode(),
    )
    assert job["status"] == "succeeded", job
    imported = get_as(client, f"/api/v1/pledges/{job['pledge_ids'][0]}", donor)
    assert imported["origin"]["place_id"] == place["id"]
    await_supply(stack, by_api)
    await_supply(stack, imported)

    need = post_one_need(client, people["hospital"], 500)
    match(client, people)

    def one_shipment() -> dict[str, Any] | None:
        found = list_shipments(client, people["coordinator"], need_id=need["id"])
        if len(found) == 1 and len(found[0]["lines"]) == 2:
            return found[0]
        return None

    shipment = eventually(one_shipment, timeout=60)
    assert {line["pledge_id"] for line in shipment["lines"]} == {by_api["id"], imported["id"]}
    facts = shipment["origin"]["place"]
    assert (facts["name"], facts["opening_hours"], facts["access_notes"]) == (
        WAREHOUSE["name"],
        WAREHOUSE["opening_hours"],
        WAREHOUSE["access_notes"],
    )
    # The hospital sees where its goods come from by region only.
    seen = get_as(client, f"/api/v1/shipments/{shipment['id']}", people["hospital"])
    assert seen["origin"] == {"region": "440304"}


def test_one_address_with_and_without_coordinates_is_one_origin(stack: Stack) -> None:
    people = saga_world(stack)
    client = stack.client()
    donor = people["donor"]
    with_coordinates = post_as(
        client,
        "/api/v1/pledges",
        {
            "lines": [{"item": "mask", "quantity": "100", "unit": "piece"}],
            "origin": {
                "region": "440304",
                "address": "福田区 仓库路3号",
                "lat": 22.54,
                "lon": 114.05,
            },
        },
        donor,
    )
    job = _import(
        client,
        donor,
        "item,quantity,unit,origin_region,origin_address\n"
        "mask,50,piece,440304,福田区仓库路3号\n".encode(),
    )
    assert job["status"] == "succeeded", job
    imported = get_as(client, f"/api/v1/pledges/{job['pledge_ids'][0]}", donor)
    await_supply(stack, with_coordinates)
    await_supply(stack, imported)
    need = post_one_need(client, people["hospital"], 150)
    match(client, people)

    def lines_on_one() -> int:
        found = list_shipments(client, people["coordinator"], need_id=need["id"])
        return len(found[0]["lines"]) if len(found) == 1 else 0

    eventually(lambda: lines_on_one() == 2, timeout=60)


def test_a_donor_keeps_places_and_pledges_from_one_in_the_web_ui(stack: Stack) -> None:
    people = saga_world(stack)
    client = stack.client()
    client.set_cookie("aidlink_lang", "zh")
    page = client.get("/signin")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page.data)
    assert token
    signed = client.post(
        "/signin",
        data={
            "csrf_token": token.group(1).decode(),
            "email": people["donor"].email,
            "password": PASSWORD,
        },
    )
    assert signed.status_code == 302

    def csrf(path: str) -> str:
        found = re.search(rb'name="csrf_token" value="([^"]+)"', client.get(path).data)
        assert found
        return found.group(1).decode()

    missing = client.post(
        "/places", data={"csrf_token": csrf("/places"), "name": "1号仓库", "region": "440304"}
    )
    assert missing.status_code == 422
    assert b'id="f-address-error"' in missing.data
    saved = client.post(
        "/places",
        data={
            "csrf_token": csrf("/places"),
            "name": "1号仓库",
            "kind": "warehouse",
            "region": "深圳福田",  # typed by name, as people do
            "address": "仓库路3号",
            "contact.name": "王师傅",
            "contact.phone": "13800000001",
            "opening_hours": "08:00-18:00",
        },
    )
    assert saved.status_code == 302
    listed = client.get("/places")
    assert "1号仓库".encode() in listed.data and "仓库".encode() in listed.data
    (place,) = get_as(client, _places_url(people["donor"]), people["donor"])["items"]
    assert place["region"] == "440304"
    assert "深圳市福田区".encode() in listed.data
    suggestions = client.get("/regions?q=武昌").get_json()
    assert {"code": "420106", "name": "武汉市武昌区"} in suggestions
    _synced(stack, place["id"])

    form = client.get("/pledges/new")
    assert f'value="{place["id"]}"'.encode() in form.data
    # The place chosen; the address inputs, filled in by habit, are for another address.
    made = client.post(
        "/pledges/new",
        data={
            "csrf_token": csrf("/pledges/new"),
            "lines.0.item": "mask",
            "lines.0.quantity": "100",
            "lines.0.unit": "piece",
            "origin.place_id": place["id"],
            "origin.region": "440304",
            "submit_pledge": "1",
        },
    )
    assert made.status_code == 302, made.data[:400]
    pledges = get_as(client, "/api/v1/pledges", people["donor"])["items"]
    assert [p["origin"]["place_id"] for p in pledges] == [place["id"]]
