"""Residents' cases in the community service: a resident's request taken in, handed to
the social worker with most spare hours, followed up, closed and reopened; who reads
what of a case; and what erasure leaves of it."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.auth import Account, admin, coordinator, register
from tests.support.community import Community, add_households, community, member, post
from tests.support.stack import Stack

SUMMARY = "Insulin pens to collect from the district hospital; lives alone on the 6th floor"
FOLLOW_UP = "Collected two pens, delivered at 15:00; next pickup in ten days"
CLOSING = "Her daughter is back from quarantine and collects the pens herself"


@dataclass
class Team:
    """The seed community's people, with a second social worker (2 hours a day) and a
    case supervisor."""

    place: Community
    other_worker: Account
    supervisor: Account

    @property
    def worker(self) -> Account:
        return self.place.social_worker

    def household(self, building: int, n: int = 0) -> str:
        return self.place.households[self.place.buildings[building]][n]


def _team(stack: Stack, client: Any, boss: Account) -> Team:
    place = community(stack, client, boss)
    add_households(client, place)
    other_worker = member(stack, client, place.committee, "Second social worker")
    post(
        client,
        f"{place.base}/appointments",
        {"user_id": other_worker.user_id, "role": "social_worker", "hours_per_day": 2},
        place.committee,
    )
    supervisor = member(stack, client, place.committee, "Case supervisor")
    post(
        client,
        f"{place.base}/appointments",
        {"user_id": supervisor.user_id, "role": "case_supervisor"},
        place.committee,
    )
    return Team(place, other_worker, supervisor)


def _intake(client: Any, team: Team, who: Account, **fields: Any) -> dict[str, Any]:
    body = {"kind": "medicine_pickup", "urgency": "urgent", "summary": SUMMARY, **fields}
    made: dict[str, Any] = post(client, f"{team.place.base}/cases", body, who)
    return made


def _get(client: Any, url: str, who: Account | dict[str, str]) -> Any:
    headers = who.headers if isinstance(who, Account) else who
    return client.get(url, headers=headers)


def test_a_case_from_intake_to_closing_and_reopening(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    from services.community.models import Case, CaseFollowUp, messaging
    from services.community.residents import service as residents

    caplog.set_level(logging.INFO)
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    team = _team(stack, client, boss)
    place, worker, other, supervisor = team.place, team.worker, team.other_worker, team.supervisor
    leader1 = place.leaders[0]
    cases = f"{place.base}/cases"

    # The leader of building 1 takes a request in for one of its households.
    made = _intake(client, team, leader1, household_id=team.household(0))
    assert re.fullmatch(r"C-\d{4}-0001", made["number"]), made["number"]
    assert made["status"] == "open" and made["assigned_to"] is None
    assert made["building_id"] == place.buildings[0]
    assert made["summary"] == SUMMARY  # what they wrote, until a worker has it
    case_url = f"{cases}/{made['id']}"
    # Not for building 2's household; a wrong kind or no summary names its field.
    elsewhere = client.post(
        cases,
        json={"kind": "counselling", "summary": "x", "household_id": team.household(1)},
        headers=leader1.headers,
    )
    assert elsewhere.status_code == 422 and set(elsewhere.json["errors"]) == {"household_id"}
    wrong = client.post(cases, json={"kind": "haircut"}, headers=leader1.headers)
    assert wrong.status_code == 422 and set(wrong.json["errors"]) == {"kind", "summary"}

    # The two social workers' hours, as the supervisor sees them.
    workers = {
        w["user_id"]: w
        for w in _get(client, f"{place.base}/case-workers", supervisor).json["items"]
    }
    assert {k: (w["hours_per_day"], w["spare_hours"]) for k, w in workers.items()} == {
        worker.user_id: (6.0, 6.0),
        other.user_id: (2.0, 2.0),
    }

    # Assigned to whoever has most hours to spare.
    assigned = post(client, f"{case_url}/assign", {"auto": True}, supervisor, status=200)
    assert assigned["assigned_to"] == worker.user_id and assigned["status"] == "assigned"
    # The leader now sees what became of it, not the notes.
    seen = _get(client, case_url, leader1).json
    assert seen["status"] == "assigned" and seen["notes_visible"] is False
    assert "summary" not in seen and "follow_ups" not in seen
    mine = _get(client, case_url, worker)
    assert mine.status_code == 200 and mine.json["summary"] == SUMMARY
    assert _get(client, case_url, other).status_code == 404

    # The worker's first follow-up puts it in progress.
    note = post(
        client,
        f"{case_url}/follow-ups",
        {"note": FOLLOW_UP, "at": "2020-02-14T07:00:00+00:00"},
        worker,
    )
    assert note["at"].startswith("2020-02-14T07:00:00")
    detail = _get(client, case_url, worker)
    assert detail.json["status"] == "in_progress"
    assert [f["note"] for f in detail.json["follow_ups"]] == [FOLLOW_UP]
    future = client.post(
        f"{case_url}/follow-ups",
        json={"note": "later", "at": "2999-01-01T00:00:00+00:00"},
        headers=worker.headers,
    )
    assert future.status_code == 422 and set(future.json["errors"]) == {"at"}
    stale = client.post(
        f"{case_url}/follow-ups",
        json={"note": "stale"},
        headers={**worker.headers, "If-Match": '"1"'},
    )
    assert stale.status_code == 412

    # Two more urgent cases fill the first worker's six hours; the next goes to the
    # second worker, and when neither has room auto assignment says so.
    for _ in range(2):
        extra = _intake(client, team, place.committee)
        post(
            client,
            f"{cases}/{extra['id']}/assign",
            {"social_worker_id": worker.user_id},
            place.committee,
            status=200,
        )
    soon = _intake(client, team, worker, urgency="soon", kind="counselling")
    to_other = post(client, f"{cases}/{soon['id']}/assign", {"auto": True}, supervisor, 200)
    assert to_other["assigned_to"] == other.user_id
    urgent = _intake(client, team, supervisor, kind="child_care")
    full = client.post(
        f"{cases}/{urgent['id']}/assign", json={"auto": True}, headers=supervisor.headers
    )
    assert full.status_code == 409 and full.json["type"].endswith("/no-capacity")
    assert "social_worker_id" in full.json["detail"]
    # The second worker states more hours; now there is room.
    raised = client.put(
        f"{place.base}/case-workers/{other.user_id}/hours",
        json={"hours_per_day": 4},
        headers=other.headers,
    )
    assert raised.status_code == 200 and raised.json["spare_hours"] == 3.0
    again = post(client, f"{cases}/{urgent['id']}/assign", {"auto": True}, supervisor, 200)
    assert again["assigned_to"] == other.user_id
    # Only a social worker of this community may be given a case.
    for someone in (place.volunteer.user_id, str(uuid.uuid4())):
        refused = client.post(
            f"{cases}/{urgent['id']}/assign",
            json={"social_worker_id": someone},
            headers=supervisor.headers,
        )
        assert refused.status_code == 422, refused.json
        assert set(refused.json["errors"]) == {"social_worker_id"}
    both = client.post(
        f"{cases}/{urgent['id']}/assign",
        json={"auto": True, "social_worker_id": worker.user_id},
        headers=supervisor.headers,
    )
    assert both.status_code == 422 and set(both.json["errors"]) == {"social_worker_id"}

    # Closing needs a note.
    bare = client.post(f"{case_url}/close", json={"closing_note": " "}, headers=worker.headers)
    assert bare.status_code == 422 and set(bare.json["errors"]) == {"closing_note"}
    assert client.post(f"{case_url}/close", json={}, headers=worker.headers).status_code == 422
    closed = post(client, f"{case_url}/close", {"closing_note": CLOSING}, worker, status=200)
    assert closed["status"] == "closed" and closed["closing_note"] == CLOSING
    late = client.post(f"{case_url}/follow-ups", json={"note": "x"}, headers=worker.headers)
    assert late.status_code == 409

    # Reopened by a supervisor only: back to its worker, the closing note kept.
    for who in (worker, place.committee):
        denied = client.post(f"{case_url}/reopen", json={"reason": "x" * 5}, headers=who.headers)
        assert denied.status_code == 403
    reopened = post(
        client,
        f"{case_url}/reopen",
        {"reason": "The daughter is back in quarantine"},
        supervisor,
        status=200,
    )
    assert reopened["status"] == "assigned" and reopened["assigned_to"] == worker.user_id
    assert reopened["closing_note"] is None
    assert [(f["kind"], f["note"]) for f in reopened["follow_ups"]] == [
        ("note", FOLLOW_UP),
        ("closing", CLOSING),
        ("reopened", "The daughter is back in quarantine"),
    ]
    again_closed = client.post(
        f"{case_url}/reopen", json={"reason": "again"}, headers=supervisor.headers
    )
    assert again_closed.status_code == 409

    # The committee's counts: cases not closed, by kind and urgency.
    counts = _get(client, f"{cases}/summary", place.committee).json
    assert counts["open"] == 5 and counts["closed"] == 0
    assert counts["by_kind"]["medicine_pickup"] == {"routine": 0, "soon": 0, "urgent": 3}
    assert counts["by_kind"]["counselling"]["soon"] == 1
    assert counts["by_urgency"] == {"routine": 0, "soon": 1, "urgent": 4}
    assert counts["by_status"] == {"open": 0, "assigned": 5, "in_progress": 0, "closed": 0}

    # Nothing of a case's text left the service's database in an event, nor in a log
    # line at INFO.
    with stack.runtime("community").session_factory() as session:
        outbox = " ".join(str(row.message) for row in session.query(messaging.outbox).all())
    # Nor in the gateway's audit log, which records each write by id and status.
    from services.gateway.models import AuditEntry

    with stack.runtime("gateway").session_factory() as session:
        audited = session.query(AuditEntry).filter(AuditEntry.action.like("POST %/cases%")).all()
    assert len(audited) >= 10 and {(a.after or {}).get("id") for a in audited} >= {made["id"]}
    audit = " ".join(str(a.after) for a in audited)
    for text in (SUMMARY, FOLLOW_UP, CLOSING):
        assert text not in outbox
        assert text not in caplog.text
        assert text not in audit

    # The household moves away: its case keeps no text, and ends.
    household = client.delete(
        f"{place.base}/households/{team.household(0)}", headers=leader1.headers
    )
    assert household.status_code == 204
    gone = _get(client, case_url, supervisor).json
    assert gone["erased"] is True and gone["status"] == "closed"
    assert gone["summary"] is None and gone["closing_note"] is None
    assert [f["note"] for f in gone["follow_ups"]] == [None, None, None]
    assert (
        client.post(
            f"{case_url}/reopen", json={"reason": "moved back"}, headers=supervisor.headers
        ).status_code
        == 409
    )
    # The organisation's data erased: no case keeps any text; the counts stay.
    with stack.runtime("community").unit_of_work() as session:
        residents.erase_community(session, uuid.UUID(place.committee.org_id))
    with stack.runtime("community").session_factory() as session:
        kept = session.query(Case).all()
        notes = session.query(CaseFollowUp).all()
    assert len(kept) == 5 and all(c.erased and c.summary is None for c in kept)
    assert all(n.note is None for n in notes)
    assert _get(client, f"{cases}/summary", place.committee).json["closed"] == 5


# Who may call what on cases: each role's expected status. ``{case}`` is a case the
# leader of building 1 took in for one of its households, assigned to the first social
# worker; ``{fresh}`` a new one like it for each call, ``{closed}`` a new closed one.
ROLES = (
    "committee",
    "supervisor",
    "worker",
    "other_worker",
    "leader1",
    "leader2",
    "volunteer",
    "stranger",
    "coordinator",
    "coordinator_with_reason",
)


def _expect(default: int, **statuses: int) -> dict[str, int]:
    return {role: statuses.get(role, default) for role in ROLES}


_MEMBERS = dict.fromkeys(ROLES[:7], 200)
_FOR_CASE = {"other_worker": 404, "leader2": 404, "volunteer": 404}

CASE_ROWS: list[tuple[str, str, dict[str, int], dict[str, Any] | None]] = [
    ("GET", "/cases", _expect(403, **_MEMBERS, coordinator_with_reason=200), None),
    (
        "POST",
        "/cases",
        _expect(
            403,
            committee=201,
            supervisor=201,
            worker=201,
            other_worker=201,
            leader1=201,
            leader2=422,
        ),
        {"kind": "other", "summary": "Needs help", "household_id": "{household1}"},
    ),
    (
        "GET",
        "/cases/summary",
        _expect(403, committee=200, supervisor=200, coordinator=200, coordinator_with_reason=200),
        None,
    ),
    (
        "GET",
        "/cases/{case}",
        _expect(
            404,
            committee=403,
            supervisor=200,
            worker=200,
            leader1=200,
            stranger=403,
            coordinator=403,
            coordinator_with_reason=200,
        ),
        None,
    ),
    (
        "POST",
        "/cases/{case}/assign",
        _expect(403, committee=200, supervisor=200, **_FOR_CASE),
        {"social_worker_id": "{worker}"},
    ),
    (
        "POST",
        "/cases/{case}/follow-ups",
        _expect(403, supervisor=201, worker=201, **_FOR_CASE),
        {"note": "Called; all well"},
    ),
    (
        "POST",
        "/cases/{fresh}/close",
        _expect(403, supervisor=200, worker=200, **_FOR_CASE),
        {"closing_note": "Done"},
    ),
    (
        "POST",
        "/cases/{closed}/reopen",
        _expect(403, supervisor=200, **_FOR_CASE),
        {"reason": "Needed again"},
    ),
    (
        "GET",
        "/case-workers",
        _expect(403, committee=200, supervisor=200, worker=200, other_worker=200),
        None,
    ),
    (
        "PUT",
        "/case-workers/{worker}/hours",
        _expect(403, committee=200, supervisor=200, worker=200),
        {"hours_per_day": 6},
    ),
]


def test_each_role_reads_and_changes_only_its_part_of_cases(stack: Stack) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    chief = coordinator(client, boss)
    team = _team(stack, client, boss)
    place = team.place
    stranger = register(client, kind="hospital")
    reason = {"X-Access-Reason": "A resident complained her case was dropped"}
    who: dict[str, dict[str, str]] = {
        "committee": place.committee.headers,
        "supervisor": team.supervisor.headers,
        "worker": team.worker.headers,
        "other_worker": team.other_worker.headers,
        "leader1": place.leaders[0].headers,
        "leader2": place.leaders[1].headers,
        "volunteer": place.volunteer.headers,
        "stranger": stranger.headers,
        "coordinator": chief.headers,
        "coordinator_with_reason": {**chief.headers, **reason},
    }

    def assigned_case() -> str:
        made = _intake(client, team, place.leaders[0], household_id=team.household(0))
        post(
            client,
            f"{place.base}/cases/{made['id']}/assign",
            {"social_worker_id": team.worker.user_id},
            team.supervisor,
            status=200,
        )
        return str(made["id"])

    def closed_case() -> str:
        case_id = assigned_case()
        post(
            client,
            f"{place.base}/cases/{case_id}/close",
            {"closing_note": "Done"},
            team.worker,
            status=200,
        )
        return case_id

    case = assigned_case()
    # Building 2's leader takes one in for their own household; no one has it yet.
    theirs = _intake(client, team, place.leaders[1], household_id=team.household(1))["id"]

    # What each role's list holds, and whether it reads the notes.
    lists = {}
    for role in ROLES:
        got = client.get(f"{place.base}/cases", headers=who[role])
        if got.status_code == 200:
            lists[role] = {c["id"]: "summary" in c for c in got.json["items"]}
    assert lists == {
        "committee": {},
        "supervisor": {case: True, theirs: True},
        "worker": {case: True},
        "other_worker": {},
        "leader1": {case: False},
        "leader2": {theirs: True},
        "volunteer": {},
        "coordinator_with_reason": {case: True, theirs: True},
    }
    # Who reads a case's notes.
    for role in ("supervisor", "worker", "leader1", "coordinator_with_reason"):
        read = client.get(f"{place.base}/cases/{case}", headers=who[role]).json
        assert ("summary" in read, "follow_ups" in read) == ((role != "leader1"),) * 2, role
    # A social worker sees only their own hours.
    own = client.get(f"{place.base}/case-workers", headers=who["other_worker"]).json["items"]
    assert [w["user_id"] for w in own] == [team.other_worker.user_id]

    names = {
        "case": case,
        "worker": team.worker.user_id,
        "household1": team.household(0),
    }
    mismatches = []
    for method, path, expected, body in CASE_ROWS:
        for role in ROLES:
            filled = dict(names)
            if "{fresh}" in path:
                filled["fresh"] = assigned_case()
            if "{closed}" in path:
                filled["closed"] = closed_case()
            payload = (
                {k: v.format(**filled) if isinstance(v, str) else v for k, v in body.items()}
                if body
                else None
            )
            if payload and "household_id" in payload and role == "leader2":
                payload["household_id"] = team.household(0)  # building 1's, not theirs
            url = place.base + path.format(**filled)
            got = client.open(url, method=method, json=payload, headers=who[role])
            if got.status_code != expected[role]:
                mismatches.append(
                    f"{method} {path} as {role}: expected {expected[role]}, got "
                    f"{got.status_code} {got.get_json()}"
                )
    assert not mismatches, "\n".join(mismatches)

    # Each coordinator reading with a reason was recorded.
    from services.community.models import AccessRecord

    with stack.runtime("community").session_factory() as session:
        records = session.query(AccessRecord).filter_by(user_id=uuid.UUID(chief.user_id)).all()
    assert records and all(r.reason == reason["X-Access-Reason"] for r in records)
    assert {r.what for r in records} >= {"cases", "case"}
