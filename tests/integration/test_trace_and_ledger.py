"""Traces and the public ledger, end to end through real workers: a pledge split across
three hospitals, traced by its donor and by each recipient; an individual donor who
stays anonymous; the ledger's totals against the rows they count, without a login and
without a private detail; and the open-data exports."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

from sqlalchemy import select

from services.dispatch.models import Allocation, ShipmentLine, SupplyLine
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.shipping import (
    await_supply,
    deliver,
    get_as,
    match,
    post_as,
    post_one_need,
    post_pledge,
    receipt_lines,
)
from tests.support.stack import Stack, eventually

SECRET_ADDRESS = "No. 7 Hidden Courtyard"
SECRET_CONTACT = {"name": "Zhang Private", "phone": "+86 27 8765 4321", "email": "zp@private.cn"}
PERSON = "Li Wenliang Memorial Giver"

TOTAL_COLUMNS = [
    "month",
    "region",
    "item",
    "base_unit",
    "pledged",
    "reserved",
    "shipped",
    "received",
]
FLOW_COLUMNS = [
    "donor",
    "donor_org_id",
    "recipient",
    "recipient_org_id",
    "item",
    "base_unit",
    "quantity",
    "shipped",
    "received",
]


def _world(stack: Stack) -> dict[str, Account]:
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    private = {"address": SECRET_ADDRESS, "contacts": [SECRET_CONTACT]}
    people = {
        "coordinator": coordinator(client, boss),
        "donor": verified(client, boss, kind="foundation", region="4403", **private),
        "person": verified(client, boss, kind="individual", region="4201", name=PERSON),
    }
    for n, region in enumerate(("420103", "420102", "420106"), start=1):
        people[f"h{n}"] = verified(client, boss, kind="hospital", region=region, **private)
    return people


def _sums(stack: Stack) -> dict[str, dict[str, int]]:
    """The ledger's definitions, computed straight from the rows."""
    sums: dict[str, dict[str, int]] = defaultdict(
        lambda: {"pledged": 0, "reserved": 0, "shipped": 0, "received": 0}
    )
    with stack.runtime("dispatch").session_factory() as session:
        for line in session.scalars(select(SupplyLine)):
            if line.status not in ("cancelled", "expired"):
                sums[line.item]["pledged"] += line.quantity
        for allocation in session.scalars(select(Allocation)):
            if allocation.status == "reserved":
                sums[allocation.item]["reserved"] += allocation.quantity
            elif allocation.status in ("shipped", "delivered", "received"):
                sums[allocation.item]["shipped"] += allocation.quantity
        for carried in session.scalars(select(ShipmentLine)):
            sums[carried.item]["received"] += carried.accepted
    return dict(sums)


def test_a_pledge_split_across_three_recipients_is_traced_and_published(stack: Stack) -> None:
    people = _world(stack)
    client = stack.client()
    masks = post_pledge(client, people["donor"], 300)
    needs = [
        post_one_need(client, people[h], 100, region=people[h].org["region"])
        for h in ("h1", "h2", "h3")
    ]
    await_supply(stack, masks)
    match(client, people)
    shipments = {
        h: deliver(client, people, n["id"])[0]
        for h, n in zip(("h1", "h2", "h3"), needs, strict=True)
    }
    post_as(
        client,
        f"/api/v1/shipments/{shipments['h1']['id']}/receipt",
        {"lines": receipt_lines(shipments["h1"], accepted=95, damaged=5)},
        people["h1"],
    )
    post_as(
        client,
        f"/api/v1/shipments/{shipments['h2']['id']}/receipt",
        {"lines": receipt_lines(shipments["h2"])},
        people["h2"],
    )

    # An individual gives gloves and asks to stay anonymous; a foundation may not.
    refused = client.post(
        "/api/v1/pledges",
        json={
            "lines": [{"item": "gloves_exam", "quantity": "10", "unit": "pair"}],
            "origin": {"region": "4403"},
            "anonymous": True,
        },
        headers=people["donor"].headers,
    )
    assert refused.status_code == 422 and "anonymous" in refused.json["errors"]
    gloves = post_pledge(client, people["person"], 50, item="gloves_exam", anonymous=True)
    assert gloves["anonymous"] is True
    gloves_need = post_one_need(client, people["h1"], 50, region="420103", item="gloves_exam")
    await_supply(stack, gloves)
    match(client, people, item="gloves_exam")
    eventually(
        lambda: get_as(
            client,
            "/api/v1/allocations",
            people["coordinator"],
            need_id=gloves_need["id"],
            status="reserved",
        )["items"],
        timeout=60,
    )

    # The donor's trace: one line, three recipients, each through its own shipment.
    url = f"/api/v1/pledges/{masks['id']}/trace"
    trace = get_as(client, url, people["donor"])
    assert trace["donor"] == {"org_id": people["donor"].org_id, "name": people["donor"].org["name"]}
    (line,) = trace["lines"]
    assert line["pledge_line_id"] == masks["lines"][0]["id"]
    assert (line["allocated"], line["accepted"], line["damaged"]) == (300, 195, 5)
    by_org = {r["org_id"]: r for r in line["recipients"]}
    assert set(by_org) == {people[h].org_id for h in ("h1", "h2", "h3")}
    expected = {
        "h1": ("received", "confirmed", 95, 5, 0),
        "h2": ("received", "confirmed", 100, 0, 0),
        "h3": ("delivered", "pending", 0, 0, 0),
    }
    for h, (status, receipt, accepted, damaged, short) in expected.items():
        got = by_org[people[h].org_id]
        assert got["name"] == people[h].org["name"]
        assert got["quantity"] == 100 and got["unshipped"] == 0
        (shipment,) = got["shipments"]
        assert shipment["id"] == shipments[h]["id"]
        assert (shipment["status"], shipment["receipt_status"]) == (status, receipt)
        assert (shipment["accepted"], shipment["damaged"], shipment["short"]) == (
            accepted,
            damaged,
            short,
        )
    # Nobody else's business: another donor, a recipient, the public.
    for who in ("person", "h1"):
        assert client.get(url, headers=people[who].headers).status_code == 404
    assert client.get(url).status_code == 401
    assert client.get(url, headers=people["coordinator"].headers).status_code == 200

    # The recipient's trace: where its masks and gloves came from.
    need_url = f"/api/v1/needs/{needs[0]['id']}/trace"
    mine = get_as(client, need_url, people["h1"])
    (mask_line,) = mine["lines"]
    (donor,) = mask_line["donors"]
    assert (donor["org_id"], donor["name"]) == (people["donor"].org_id, people["donor"].org["name"])
    assert (donor["quantity"], donor["accepted"], donor["damaged"]) == (100, 95, 5)
    assert donor["shipments"][0]["receipt_status"] == "confirmed"
    assert mask_line["received"] == 95
    assert client.get(need_url, headers=people["h2"].headers).status_code == 404
    assert client.get(need_url, headers=people["donor"].headers).status_code == 404
    gloves_url = f"/api/v1/needs/{gloves_need['id']}/trace"
    (giver,) = get_as(client, gloves_url, people["h1"])["lines"][0]["donors"]
    assert (giver["org_id"], giver["name"]) == (None, "anonymous")
    assert all(a["pledge_id"] is None for a in giver["allocations"])
    (seen,) = get_as(client, gloves_url, people["coordinator"])["lines"][0]["donors"]
    assert (seen["org_id"], seen["name"]) == (people["person"].org_id, PERSON)

    # The public ledger: no login, totals that are the sums of the rows they count.
    response = client.get("/api/v1/transparency/ledger")
    assert response.status_code == 200, response.json
    ledger = response.json
    sums = _sums(stack)
    assert sums["mask"] == {"pledged": 300, "reserved": 0, "shipped": 300, "received": 195}
    assert sums["gloves_exam"] == {"pledged": 50, "reserved": 50, "shipped": 0, "received": 0}
    for item, figures in sums.items():
        assert {k: ledger["totals"][item][k] for k in figures} == figures
    assert ledger["totals"]["mask"]["base_unit"] == "piece"
    for grouping in ("by_region", "by_month"):
        rolled: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for per_item in ledger[grouping].values():
            for item, figures in per_item.items():
                for measure in sums[item]:
                    rolled[item][measure] += figures[measure]
        assert {item: dict(f) for item, f in rolled.items()} == sums
    # Pledged counts where it comes from, the rest where it goes.
    assert ledger["by_region"]["4403"]["mask"]["pledged"] == 300
    assert ledger["by_region"]["4201"]["mask"]["shipped"] == 300
    flows = {(f["donor"], f["recipient"], f["item"]): f for f in ledger["flows"]}
    for h, received in (("h1", 95), ("h2", 100), ("h3", 0)):
        flow = flows[(people["donor"].org["name"], people[h].org["name"], "mask")]
        assert (flow["quantity"], flow["shipped"], flow["received"]) == (100, 100, received)
        assert flow["donor_org_id"] == people["donor"].org_id
    anonymous = flows[("anonymous", people["h1"].org["name"], "gloves_exam")]
    assert anonymous["donor_org_id"] is None and anonymous["quantity"] == 50
    for item in sums:
        assert sum(f["quantity"] for f in ledger["flows"] if f["item"] == item) == (
            sums[item]["reserved"] + sums[item]["shipped"]
        )
    # Nothing private: no address, contact, the anonymous person or where goods left from.
    text = response.get_data(as_text=True)
    for secret in (
        SECRET_ADDRESS,
        *SECRET_CONTACT.values(),
        PERSON,
        people["person"].org_id,
        "Futian warehouse",
        "ward 3",
    ):
        assert secret not in text, secret

    # Filters.
    only_gloves = get_as(client, "/api/v1/transparency/ledger", item="gloves_exam")
    assert set(only_gloves["totals"]) == {"gloves_exam"}
    assert {f["item"] for f in only_gloves["flows"]} == {"gloves_exam"}
    origin = get_as(client, "/api/v1/transparency/ledger", region="4403")
    assert origin["totals"]["mask"]["pledged"] == 300 and origin["totals"]["mask"]["shipped"] == 0
    assert origin["flows"] == []
    future = get_as(client, "/api/v1/transparency/ledger?from=2999-01-01")
    assert future["totals"] == {} and future["flows"] == []
    backwards = client.get(
        "/api/v1/transparency/ledger", query_string={"from": "2020-02-01", "to": "2020-01-01"}
    )
    assert backwards.status_code == 422 and "to" in backwards.json["errors"]

    # Open data: stable columns, the same figures.
    exported = client.get("/api/v1/transparency/export.csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(exported.get_data(as_text=True))))
    assert rows[0] == TOTAL_COLUMNS
    from_csv: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows[1:]:
        record = dict(zip(TOTAL_COLUMNS, row, strict=True))
        for measure in sums[record["item"]]:
            from_csv[record["item"]][measure] += int(record[measure])
    assert {item: dict(f) for item, f in from_csv.items()} == sums
    flow_rows = list(
        csv.DictReader(
            io.StringIO(
                client.get("/api/v1/transparency/export.csv?table=flows").get_data(as_text=True)
            )
        )
    )
    assert list(flow_rows[0]) == FLOW_COLUMNS
    assert {r["donor"] for r in flow_rows if r["item"] == "gloves_exam"} == {"anonymous"}
    assert all(r["donor_org_id"] == "" for r in flow_rows if r["donor"] == "anonymous")
    document = client.get("/api/v1/transparency/export.json")
    assert document.status_code == 200
    body = json.loads(document.get_data(as_text=True))
    assert body["columns"] == {"totals": TOTAL_COLUMNS, "flows": FLOW_COLUMNS}
    # Keys are the columns (JSON objects have no order; "columns" gives it).
    assert all(set(r) == set(TOTAL_COLUMNS) for r in body["totals"])
    assert all(set(r) == set(FLOW_COLUMNS) for r in body["flows"])
    assert len(body["totals"]) == len(rows) - 1 and len(body["flows"]) == len(flow_rows)
    assert PERSON not in document.get_data(as_text=True)
