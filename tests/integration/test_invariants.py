"""``aidlink check-invariants``: clean after a saga run through real workers, and each
kind of corruption reported with the records involved and exit status 1."""

from __future__ import annotations

import json
import uuid
from typing import Any

from click.testing import CliRunner
from sqlalchemy import update

from services.cli import main
from services.dispatch.models import NeedLine
from services.donations.models import PledgeLine, Reservation
from services.invariants import check
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.matching import approve
from tests.support.stack import Stack, eventually


def _post(client: Any, url: str, body: dict[str, Any], who: Account, status: int = 201) -> Any:
    response = client.post(url, json=body, headers=who.headers)
    assert response.status_code == status, response.json
    return response.json


def _reserved_world(stack: Stack) -> dict[str, Any]:
    """A pledge of 1000 masks matched to a need of 600, reserved at the donor."""
    for service in ("gateway", "donations", "dispatch", "community"):
        stack.start_worker(service)
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    donor = verified(client, boss, kind="foundation", region="4403")
    hospital = verified(client, boss, kind="hospital", region="420103")
    pledge = _post(
        client,
        "/api/v1/pledges",
        {
            "lines": [{"item": "mask", "quantity": "1000", "unit": "piece"}],
            "origin": {"region": "4403"},
        },
        donor,
    )
    need = _post(
        client,
        "/api/v1/needs",
        {
            "lines": [{"item": "mask", "quantity": "600", "unit": "piece", "urgency": "high"}],
            "location": {"region": "420103", "address": "ward 3"},
        },
        hospital,
    )

    def planned() -> dict[str, Any] | None:
        run = _post(client, "/api/v1/matching/runs", {"dry_run": True, "items": ["mask"]}, chief)
        return run if run["allocations"] else None

    run = eventually(planned, timeout=60)
    approve(client, run["id"], chief)

    def reserved() -> bool:
        with stack.runtime("donations").session_factory() as session:
            line = session.get(PledgeLine, uuid.UUID(pledge["lines"][0]["id"]))
            return line is not None and line.reserved == 600

    eventually(reserved, timeout=60)
    return {"pledge": pledge, "need": need}


def test_a_saga_run_leaves_every_invariant_holding_and_corruption_is_named(
    stack: Stack,
) -> None:
    world = _reserved_world(stack)
    report = check(stack.settings, settle=60)
    assert report.settled, report.in_flight
    assert report.violations == []
    assert report.counts["allocations"] == report.counts["reservations"] == 1

    pledge_line = uuid.UUID(world["pledge"]["lines"][0]["id"])
    need_line = uuid.UUID(world["need"]["lines"][0]["id"])
    with stack.runtime("donations").unit_of_work() as session:
        session.execute(update(PledgeLine).where(PledgeLine.id == pledge_line).values(reserved=607))
    with stack.runtime("dispatch").unit_of_work() as session:
        session.execute(update(NeedLine).where(NeedLine.id == need_line).values(received=5))

    broken = check(stack.settings, settle=5)
    found = {
        (v.invariant, v.records.get("pledge_line_id") or v.records.get("need_line_id"))
        for v in broken.violations
    }
    assert ("pledge-line-counts-its-reservations", str(pledge_line)) in found
    assert ("need-line-counts-its-allocations", str(need_line)) in found
    details = [v.detail for v in broken.violations]
    assert "reserved is 607 but its reservations add up to 600" in details
    assert "received is 5 but its allocations add up to 0" in details

    # The reservation's quantity drifting from its allocation's is a disagreement.
    with stack.runtime("donations").unit_of_work() as session:
        session.execute(update(Reservation).values(quantity=599))
    runner = CliRunner()
    result = runner.invoke(main, ["check-invariants", "--settle", "5"], env=stack.settings.to_env())
    assert result.exit_code == 1, result.output
    assert "VIOLATED allocation-and-reservation-agree" in result.output
    assert f"pledge_line_id={pledge_line}" in result.output
    as_json = runner.invoke(
        main, ["check-invariants", "--settle", "0", "--json"], env=stack.settings.to_env()
    )
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["clean"] is False
    assert {v["invariant"] for v in document["violations"]} >= {
        "pledge-line-counts-its-reservations",
        "need-line-counts-its-allocations",
        "allocation-and-reservation-agree",
    }


def test_a_clean_installation_exits_zero(stack: Stack) -> None:
    result = CliRunner().invoke(
        main, ["check-invariants", "--settle", "0"], env=stack.settings.to_env()
    )
    assert result.exit_code == 0, result.output
    assert "all invariants hold" in result.output
