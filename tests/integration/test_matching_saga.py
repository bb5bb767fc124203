"""Matching and the allocation saga end to end, through real donations and dispatch
workers: preview, approval, reservation, rejection, and a cancelled pledge returning
its need to matching."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import update

from services.dispatch.models import SupplyLine
from tests.support.auth import Account
from tests.support.matching import approve
from tests.support.stack import Stack, eventually
from tests.support.world import need_line, pledge_line, saga_world, supply_known


def _post(client: Any, url: str, body: dict[str, Any], who: Account, status: int = 201) -> Any:
    response = client.post(url, json=body, headers=who.headers)
    assert response.status_code == status, response.json
    return response.json


def _masks(client: Any, donor: Account, quantity: int) -> dict[str, Any]:
    pledge: dict[str, Any] = _post(
        client,
        "/api/v1/pledges",
        {
            "lines": [{"item": "mask", "quantity": str(quantity), "unit": "piece"}],
            "origin": {"region": "4403"},
        },
        donor,
    )
    return pledge


def _need(client: Any, who: Account, quantity: int, urgency: str, region: str) -> dict[str, Any]:
    need: dict[str, Any] = _post(
        client,
        "/api/v1/needs",
        {
            "lines": [
                {
                    "item": "mask",
                    "standards": [],
                    "quantity": str(quantity),
                    "unit": "piece",
                    "urgency": urgency,
                }
            ],
            "location": {"region": region, "address": "ward 3"},
        },
        who,
    )
    assert need["status"] == "open", need
    return need


def _allocations(client: Any, who: Account, **query: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/allocations", query_string=query, headers=who.headers)
    assert response.status_code == 200, response.json
    items: list[dict[str, Any]] = response.json["items"]
    return items


def _masks_for_two_needs(stack: Stack) -> tuple[dict[str, Account], Any, Any, Any, Any]:
    """1,000 masks pledged, a critical need of 800 and a normal one of 500, and the
    pledge known to dispatch."""
    people = saga_world(stack)
    client = stack.client()
    pledge = _masks(client, people["donor"], 1000)
    critical = _need(client, people["hospital"], 800, "critical", "420103")
    normal = _need(client, people["community"], 500, "normal", "420102")
    eventually(lambda: supply_known(stack, pledge))
    return people, client, pledge, critical, normal


def test_a_previewed_plan_is_approved_reserved_and_a_cancelled_pledge_returns_the_need(
    stack: Stack,
) -> None:
    people, client, pledge, critical, normal = _masks_for_two_needs(stack)

    # Nobody but a coordinator runs matching.
    refused = client.post(
        "/api/v1/matching/runs", json={"dry_run": True}, headers=people["hospital"].headers
    )
    assert refused.status_code == 403
    preview = _post(
        client,
        "/api/v1/matching/runs",
        {"dry_run": True, "items": ["mask"]},
        people["coordinator"],
    )
    assert preview["status"] == "preview"
    planned = {a["need_line_id"]: a for a in preview["allocations"]}
    critical_line = critical["lines"][0]["id"]
    normal_line = normal["lines"][0]["id"]
    # Urgency first: the critical need is met in full, the rest goes to the other.
    assert planned[critical_line]["quantity"] == 800
    assert planned[normal_line]["quantity"] == 200
    assert planned[critical_line]["reason"]["urgency"] == "critical"
    assert {u["need_line_id"]: u["quantity"] for u in preview["unmet"]} == {normal_line: 300}
    # A preview changes nothing.
    assert _allocations(client, people["coordinator"]) == []

    approved = approve(client, preview["id"], people["coordinator"])
    assert approved["status"] == "applied"
    again = client.post(
        f"/api/v1/matching/runs/{preview['id']}/approve",
        json={},
        headers=people["coordinator"].headers,
    )
    assert again.status_code == 409

    eventually(
        lambda: len(_allocations(client, people["coordinator"], status="reserved")) == 2,
        timeout=60,
    )
    assert pledge_line(stack, pledge["lines"][0]["id"]).reserved == 1000
    assert need_line(stack, critical_line).reserved == 800
    # Each party sees its own allocations only.
    mine = _allocations(client, people["hospital"])
    assert [a["need_line_id"] for a in mine] == [critical_line]
    assert len(_allocations(client, people["donor"], pledge_id=pledge["id"])) == 2

    # The donor cancels: reservations are released and both needs go back to matching.
    _post(
        client,
        f"/api/v1/pledges/{pledge['id']}/cancel",
        {"reason": "stock seized"},
        people["donor"],
        status=200,
    )
    eventually(
        lambda: len(_allocations(client, people["coordinator"], status="cancelled")) == 2,
        timeout=60,
    )
    line = need_line(stack, critical_line)
    assert (line.proposed, line.reserved, line.status) == (0, 0, "open")
    need = client.get(f"/api/v1/needs/{critical['id']}", headers=people["hospital"].headers).json
    assert need["status"] == "open"


def test_a_rejected_proposal_returns_its_quantity_to_matching(stack: Stack) -> None:
    people = saga_world(stack)
    client = stack.client()
    pledge = _masks(client, people["donor"], 100)
    need = _need(client, people["hospital"], 500, "high", "420103")
    eventually(lambda: supply_known(stack, pledge))
    # Dispatch's view of the pledge is stale (from an older version of the pledge): it
    # believes in 400 masks.
    dispatch = stack.runtime("dispatch")
    with dispatch.unit_of_work() as session:
        session.execute(
            update(SupplyLine)
            .where(SupplyLine.id == uuid.UUID(pledge["lines"][0]["id"]))
            .values(quantity=400, pledge_version=0)
        )

    applied = _post(
        client,
        "/api/v1/matching/runs",
        {"dry_run": False, "items": ["mask"]},
        people["coordinator"],
    )
    assert applied["status"] == "applied"
    assert sum(a["quantity"] for a in applied["allocations"]) == 400

    rejected = eventually(
        lambda: _allocations(client, people["coordinator"], status="rejected"), timeout=60
    )
    assert rejected[0]["status_reason"] == "not enough left on the line"
    line = need_line(stack, need["lines"][0]["id"])
    assert (line.proposed, line.reserved) == (0, 0)
    assert line.status == "open"
    # The donations side never over-committed, and dispatch learnt the true figure.
    assert pledge_line(stack, pledge["lines"][0]["id"]).reserved == 0
    with dispatch.session_factory() as session:
        supply = session.get(SupplyLine, uuid.UUID(pledge["lines"][0]["id"]))
        assert supply is not None and supply.quantity == 100 and supply.proposed == 0


def test_a_coordinator_cancels_an_allocation_before_it_ships(stack: Stack) -> None:
    people = saga_world(stack)
    client = stack.client()
    pledge = _masks(client, people["donor"], 50)
    need = _need(client, people["hospital"], 50, "critical", "420103")
    eventually(lambda: supply_known(stack, pledge))
    _post(client, "/api/v1/matching/runs", {"dry_run": False}, people["coordinator"])
    reserved = eventually(
        lambda: _allocations(client, people["coordinator"], status="reserved"), timeout=60
    )
    allocation_id = reserved[0]["id"]
    assert (
        client.post(
            f"/api/v1/allocations/{allocation_id}/cancel",
            json={"reason": "road closed"},
            headers=people["hospital"].headers,
        ).status_code
        == 403
    )
    cancelled = _post(
        client,
        f"/api/v1/allocations/{allocation_id}/cancel",
        {"reason": "road closed"},
        people["coordinator"],
        status=200,
    )
    assert cancelled["status"] == "cancelled"
    eventually(lambda: pledge_line(stack, pledge["lines"][0]["id"]).reserved == 0, timeout=60)
    assert need_line(stack, need["lines"][0]["id"]).reserved == 0
    twice = client.post(
        f"/api/v1/allocations/{allocation_id}/cancel",
        json={"reason": "road closed"},
        headers=people["coordinator"].headers,
    )
    assert twice.status_code == 409


def test_a_coordinator_edits_a_preview_and_the_edited_plan_is_what_gets_reserved(
    stack: Stack,
) -> None:
    people, client, pledge, critical, normal = _masks_for_two_needs(stack)
    preview = _post(
        client, "/api/v1/matching/runs", {"dry_run": True, "items": ["mask"]}, people["coordinator"]
    )
    pledged = pledge["lines"][0]["id"]
    critical_line = critical["lines"][0]["id"]
    normal_line = normal["lines"][0]["id"]
    url = f"/api/v1/matching/runs/{preview['id']}/edits"

    # Only a coordinator edits; a change that breaks a rule is refused, naming it,
    # and the preview stays as it was.
    change = {"pledge_line_id": pledged, "need_line_id": normal_line, "quantity": 400}
    assert (
        client.post(url, json={"changes": [change]}, headers=people["hospital"].headers).status_code
        == 403
    )
    too_much = client.post(url, json={"changes": [change]}, headers=people["coordinator"].headers)
    assert too_much.status_code == 422, too_much.json
    assert too_much.json["errors"] == {
        "changes.0": [f"supply line {pledged} would give 1200 of its 1000"]
    }
    unknown = str(uuid.uuid4())
    bad = client.post(
        url,
        json={"changes": [{"pledge_line_id": unknown, "need_line_id": normal_line, "quantity": 1}]},
        headers=people["coordinator"].headers,
    )
    assert bad.status_code == 422
    assert bad.json["errors"] == {
        "changes.0": [f"supply line {unknown} is not in the plan's supply"]
    }
    negative = client.post(
        url, json={"changes": [{**change, "quantity": -1}]}, headers=people["coordinator"].headers
    )
    assert negative.status_code == 422
    assert negative.json["errors"] == {
        "changes.0.quantity": ["Must be greater than or equal to 0."]
    }
    same = client.get(
        f"/api/v1/matching/runs/{preview['id']}", headers=people["coordinator"].headers
    )
    assert same.json["allocations"] == preview["allocations"]

    # Less to the critical need, more to the other: within the pledge, so it holds.
    edited = _post(
        client,
        url,
        {
            "changes": [
                {"pledge_line_id": pledged, "need_line_id": critical_line, "quantity": 600},
                {"pledge_line_id": pledged, "need_line_id": normal_line, "quantity": 400},
            ]
        },
        people["coordinator"],
        status=200,
    )
    planned = {a["need_line_id"]: a for a in edited["allocations"]}
    assert {line: a["quantity"] for line, a in planned.items()} == {
        critical_line: 600,
        normal_line: 400,
    }
    assert planned[normal_line]["reason"]["need_fill"] == 0.8
    assert {u["need_line_id"]: u["quantity"] for u in edited["unmet"]} == {
        critical_line: 200,
        normal_line: 100,
    }
    assert edited["stats"]["items"]["mask"]["allocated"] == 1000
    assert edited["stats"]["edited"] == 1

    # Removing one (quantity 0) leaves it out; the approved plan is the edited one.
    edited = _post(
        client,
        url,
        {"changes": [{"pledge_line_id": pledged, "need_line_id": normal_line, "quantity": 0}]},
        people["coordinator"],
        status=200,
    )
    assert [a["need_line_id"] for a in edited["allocations"]] == [critical_line]
    approve(client, preview["id"], people["coordinator"])
    eventually(
        lambda: len(_allocations(client, people["coordinator"], status="reserved")) == 1,
        timeout=60,
    )
    assert need_line(stack, critical_line).reserved == 600
    assert pledge_line(stack, pledged).reserved == 600
    late = client.post(url, json={"changes": [change]}, headers=people["coordinator"].headers)
    assert late.status_code == 409


def test_a_run_on_events_leaves_a_coordinators_preview_and_an_approval_supersedes_the_rest(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    from services.dispatch.matching import service as matching_service

    people, client, _pledge, _critical, _normal = _masks_for_two_needs(stack)
    chief = people["coordinator"]
    rt = stack.runtime("dispatch")
    caplog.set_level(logging.INFO, logger=matching_service.__name__)

    def status(run_id: Any) -> str:
        return str(
            client.get(f"/api/v1/matching/runs/{run_id}", headers=chief.headers).json["status"]
        )

    def preview() -> Any:
        return _post(client, "/api/v1/matching/runs", {"dry_run": True, "items": ["mask"]}, chief)

    mine = preview()
    # The service's own run, newer, waits beside hers; hers is not taken from her.
    theirs = matching_service.run(rt, items=["mask"], dry_run=True, trigger="schedule")
    assert theirs is not None and theirs.status == "preview"
    assert status(mine["id"]) == "preview"
    # A coordinator's new run supersedes every waiting plan of the masks, hers too.
    second = preview()
    assert (status(mine["id"]), status(theirs.id)) == ("superseded", "superseded")
    later = matching_service.run(rt, items=["mask"], dry_run=True, trigger="event")
    assert later is not None and later.status == "preview"
    # Each run says in the worker's log what it found and what it spent where.
    said = [r.getMessage() for r in caplog.records if str(later.id) in r.getMessage()]
    assert len(said) == 1 and "(event, preview)" in said[0] and "2 allocations" in said[0]
    assert "read and solved in" in said[0] and "written in 1 transaction(s)" in said[0]
    assert status(second["id"]) == "preview"
    # Her approval makes every other waiting plan of the masks stale.
    approve(client, second["id"], chief)
    assert (status(second["id"]), status(later.id)) == ("applied", "superseded")
    waiting = client.get(
        "/api/v1/matching/runs", query_string={"status": "preview"}, headers=chief.headers
    ).json["items"]
    assert [run for run in waiting if "mask" in run["items"]] == []
    # The history newest first, as the coordinator's page shows it, paged to older runs.
    made = [mine["id"], str(theirs.id), second["id"], str(later.id)]
    pages: list[str] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"newest_first": "true", "limit": 3}
        if cursor:
            query["cursor"] = cursor
        page = client.get("/api/v1/matching/runs", query_string=query, headers=chief.headers)
        assert page.status_code == 200, page.json
        pages.extend(str(run["id"]) for run in page.json["items"])
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert [run for run in pages if run in made] == made[::-1]
    # A newest-first cursor read oldest first is refused by name, not answered wrongly.
    first = client.get(
        "/api/v1/matching/runs",
        query_string={"newest_first": "true", "limit": 1},
        headers=chief.headers,
    ).json
    crossed = client.get(
        "/api/v1/matching/runs",
        query_string={"cursor": first["next_cursor"]},
        headers=chief.headers,
    )
    assert crossed.status_code == 400 and "cursor" in crossed.json["errors"]
    oldest_first = client.get("/api/v1/matching/runs", headers=chief.headers).json["items"]
    assert [str(r["id"]) for r in oldest_first if str(r["id"]) in made] == made


def test_a_run_on_events_that_finds_nothing_leaves_no_preview(stack: Stack) -> None:
    from services.dispatch.matching import service as matching_service

    people, client, _pledge, _critical, _normal = _masks_for_two_needs(stack)
    rt = stack.runtime("dispatch")
    masks = matching_service.run(rt, items=["mask"], dry_run=True, trigger="event")
    fruit = matching_service.run(rt, items=["fruit"], dry_run=True, trigger="event")
    assert masks is not None and fruit is not None
    assert (masks.status, fruit.status) == ("preview", "empty")
    waiting = client.get(
        "/api/v1/matching/runs",
        query_string={"status": "preview"},
        headers=people["coordinator"].headers,
    ).json["items"]
    # (The service's own runs on the pledge's and needs' events may have made newer
    # previews of the masks meanwhile: none of what waits is empty.)
    assert waiting and str(fruit.id) not in {run["id"] for run in waiting}
    assert all(run["allocations"] for run in waiting)
    # A newer preview of the masks supersedes the older: one plan of an item waits.
    newer = matching_service.run(rt, items=["mask"], dry_run=True, trigger="event")
    assert newer is not None and newer.status == "preview"
    older = client.get(
        f"/api/v1/matching/runs/{masks.id}", headers=people["coordinator"].headers
    ).json
    assert older["status"] == "superseded"
    waiting = client.get(
        "/api/v1/matching/runs",
        query_string={"status": "preview"},
        headers=people["coordinator"].headers,
    ).json["items"]
    # (A run of the service's own on a late event may be newer still: one waits.)
    assert len([run for run in waiting if "mask" in run["items"]]) == 1
    refused = client.post(
        f"/api/v1/matching/runs/{fruit.id}/approve",
        json={},
        headers=people["coordinator"].headers,
    )
    assert refused.status_code == 409
    # A coordinator who asks gets the run, empty or not.
    asked = _post(
        client,
        "/api/v1/matching/runs",
        {"dry_run": True, "items": ["fruit"]},
        people["coordinator"],
    )
    assert asked["status"] == "preview" and asked["allocations"] == []
