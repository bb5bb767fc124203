"""Help sessions from booking to their end: a coordinator changing a preview before
approving it; an anonymous seeker following their request with its token; the helper
and the seeker connected by the contact provider without either seeing the other's
number; a session closed held with a note only the helper and their supervisors read,
a follow-up that keeps its helper, and the ledger's event with counts only; a session
missed and its request back first in line; two closes at once; and the help data of
people in their organisation's export, withdrawn with a removed member, erased with a
person and deleted after its retention period."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from shared.config import Settings
from tests.support.auth import Account, admin, coordinator, verified
from tests.support.community import member
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, build_stack, eventually

HELP = "/api/v1/community/help"
NOTE = "Talked through the night shifts; sleeping four hours; wants to talk again"
SEEKER_PHONE = "+86 137 5555 0001"
HELPER_PHONE = "+86 186 7777 0002"
SECRET_TEXT = "I cannot stop crying after my shifts"
BEIJING = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def provided(settings: Settings) -> Iterator[Stack]:
    """The services with the test contact provider."""
    with build_stack(settings.with_overrides(help_contact_provider="test")) as s:
        yield s


def _helper_body(**extra: Any) -> dict[str, Any]:
    return {
        "kinds": ["counsellor"],
        "topics": ["anxiety", "grief"],
        "languages": ["zh"],
        "daily_limit": 6,
        "availability": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)],
        "qualifications": [{"kind": "counsellor certificate", "evidence": "No. 77"}],
        **extra,
    }


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _helper(client: Any, office: Account, by: Account, **body: Any) -> str:
    made = _ok(client.post(f"{HELP}/helpers", json=_helper_body(**body), headers=by.headers), 201)
    _ok(
        client.post(
            f"{HELP}/helpers/{made['id']}/verify",
            json={"decision": "verified"},
            headers=office.headers,
        )
    )
    return str(made["id"])


def _ask(client: Any, who: Account | None = None, **body: Any) -> dict[str, Any]:
    headers = who.headers if who else {}
    sent = {"topic": "anxiety", "languages": ["zh"], "contact": SEEKER_PHONE, **body}
    answer: dict[str, Any] = _ok(client.post(f"{HELP}/requests", json=sent, headers=headers), 201)
    return answer


def _move(stack: Stack, session_id: str, starts: datetime) -> None:
    """Put a session at ``starts`` (the tests cannot wait for the clock)."""
    from services.community.models import HelpSession

    with stack.runtime("community").unit_of_work() as session:
        row = session.get(HelpSession, uuid.UUID(session_id))
        assert row is not None
        row.starts_at, row.ends_at = starts, starts + timedelta(minutes=50)
        if row.held_start is not None:
            row.held_start = starts


def _status(client: Any, request_id: str, token: str) -> Any:
    return client.get(f"{HELP}/requests/{request_id}/status", query_string={"token": token})


def test_a_session_from_an_edited_preview_to_its_follow_up(provided: Stack) -> None:
    from services.community.models import AccessRecord, HelpRequest, messaging

    stack = provided
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital", region="420106")
    counsellor = member(stack, client, hospital, "Counsellor Li")
    colleague = member(stack, client, hospital, "Colleague")
    other = verified(client, boss, kind="hospital")
    seeker = verified(client, boss, kind="hospital")
    eventually(lambda: read_model_org(stack.runtime("community"), hospital.org_id), timeout=30)
    helper = _helper(client, office, counsellor)

    # Asked without signing in: a token to follow the request, once; signed in: none.
    anonymous = _ask(client, text=SECRET_TEXT)
    token = anonymous["follow_token"]
    assert token and len(token) >= 40
    signed = _ask(client, seeker)
    assert signed["follow_token"] is None
    third = _ask(client, topic="grief")
    with stack.runtime("community").session_factory() as session:
        row = session.get(HelpRequest, uuid.UUID(anonymous["id"]))
        assert row is not None and row.follow_token_hash != token
    followed = _ok(_status(client, anonymous["id"], token))
    assert followed == {
        "id": anonymous["id"],
        "status": "open",
        "session_status": None,
        "starts_at": None,
        "ends_at": None,
        "follow_up_request_id": None,
    }
    assert _status(client, anonymous["id"], "not-the-token").status_code == 404
    assert _status(client, third["id"], token).status_code == 404
    missing = _status(client, anonymous["id"], "").get_json()
    assert "token" in missing["errors"]

    # The preview, changed by a coordinator: a slot that is not one is refused, naming
    # the assignment and the rule; then the anonymous request a day later, the third
    # left out.
    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    planned = {a["request_id"]: a for a in run["assignments"]}
    assert set(planned) == {anonymous["id"], signed["id"], third["id"]}
    first = planned[anonymous["id"]]
    later = datetime.fromisoformat(first["starts_at"]) + timedelta(days=1)
    path = f"{HELP}/runs/{run['id']}"
    bad = client.patch(
        path,
        json={
            "assignments": [
                {**_edit(first), "starts_at": (later + timedelta(minutes=30)).isoformat()}
            ]
        },
        headers=office.headers,
    )
    assert bad.status_code == 422, bad.get_json()
    problem = bad.get_json()
    assert problem["type"].endswith("schedule-breaks-rules")
    assert anonymous["id"] in problem["detail"] and "not a free slot" in problem["detail"]
    assert "assignments.0" in problem["errors"]
    assert (
        client.patch(
            path, json={"assignments": [_edit(first)]}, headers=hospital.headers
        ).status_code
        == 403
    )
    edited = _ok(
        client.patch(
            path,
            json={
                "assignments": [
                    {**_edit(first), "starts_at": later.isoformat()},
                    _edit(planned[signed["id"]]),
                ]
            },
            headers=office.headers,
        )
    )
    assert edited["revision"] == 2
    assert client.get(path, headers=office.headers).headers["ETag"] == '"2"'
    stale = client.patch(
        path,
        json={"assignments": []},
        headers={**office.headers, "If-Match": '"1"'},
    )
    assert stale.status_code == 412, stale.get_json()
    moved = {a["request_id"]: a for a in edited["assignments"]}
    assert set(moved) == {anonymous["id"], signed["id"]}
    assert datetime.fromisoformat(moved[anonymous["id"]]["starts_at"]) == later
    assert moved[anonymous["id"]]["reason"].startswith("a coordinator's choice")
    assert moved[signed["id"]]["reason"] == planned[signed["id"]]["reason"]
    assert [(u["request_id"], u["reason"]) for u in edited["unassigned"]] == [
        (third["id"], "left-out-by-coordinator")
    ]
    made = _ok(client.post(f"{path}/approve", headers=office.headers))
    sessions = {s["request_id"]: s for s in made["items"]}
    assert set(sessions) == {anonymous["id"], signed["id"]}
    assert datetime.fromisoformat(sessions[anonymous["id"]]["starts_at"]) == later
    assert client.patch(path, json={"assignments": []}, headers=office.headers).status_code == 409
    followed = _ok(_status(client, anonymous["id"], token))
    assert followed["status"] == "scheduled" and followed["session_status"] == "booked"
    assert datetime.fromisoformat(followed["starts_at"]) == later
    assert set(followed) == {
        "id",
        "status",
        "session_status",
        "starts_at",
        "ends_at",
        "follow_up_request_id",
    }

    # Connected through the provider, within the window, by the helper alone.
    held = sessions[anonymous["id"]]
    connect = f"{HELP}/sessions/{held['id']}/connect"
    for who in (office, other, hospital, colleague):
        assert client.post(connect, json={}, headers=who.headers).status_code == 404
    assert client.post(connect, json={}, headers=counsellor.headers).status_code == 403
    _ok(client.post(f"{HELP}/sessions/{held['id']}/confirm", headers=counsellor.headers))
    early = client.post(
        f"{HELP}/sessions/{held['id']}/close", json={"note": NOTE}, headers=counsellor.headers
    )
    assert early.status_code == 409 and early.get_json()["type"].endswith("session-not-started")
    held_at = datetime.now(UTC) - timedelta(minutes=5)
    _move(stack, held["id"], held_at)
    called = _ok(
        client.post(connect, json={"helper_contact": HELPER_PHONE}, headers=counsellor.headers)
    )
    assert called == {"session_id": held["id"], "kind": "call_back", "room_url": None}
    room = _ok(client.post(connect, json={}, headers=counsellor.headers))
    assert room["kind"] == "room" and room["room_url"].startswith("https://")
    assert _ok(client.post(connect, json={}, headers=counsellor.headers)) == room
    answers = json.dumps([called, room])
    assert SEEKER_PHONE not in answers and HELPER_PHONE not in answers
    log = stack.settings.var_dir / "contact-provider-test.jsonl"
    asked = [json.loads(line) for line in log.read_text().splitlines()]
    assert [a["kind"] for a in asked] == ["call_back", "room"]
    calls = {c["side"]: c for c in asked[0]["calls"]}
    assert calls["helper"]["dialled"] == HELPER_PHONE
    assert calls["seeker"]["dialled"] == SEEKER_PHONE
    assert calls["helper"]["shown"] != SEEKER_PHONE and calls["seeker"]["shown"] != HELPER_PHONE

    # Closed held with a note and a follow-up: once.
    close = f"{HELP}/sessions/{held['id']}/close"
    assert client.post(close, json={"note": NOTE}, headers=office.headers).status_code == 404
    too_long = client.post(close, json={"note": "x" * 2001}, headers=counsellor.headers)
    assert too_long.status_code == 422 and "note" in too_long.get_json()["errors"]
    closed = _ok(
        client.post(
            close,
            json={"note": NOTE, "follow_up": True, "minutes": 45},
            headers=counsellor.headers,
        )
    )
    assert closed["status"] == "held" and closed["minutes"] == 45
    follow_up = closed["follow_up_request_id"]
    assert follow_up
    again = client.post(close, json={"note": NOTE, "follow_up": True}, headers=counsellor.headers)
    assert again.status_code == 409
    notes = f"{HELP}/sessions/{held['id']}/notes"
    for reader in (counsellor, hospital):
        mine = _ok(client.get(notes, headers=reader.headers))["items"]
        assert [(n["note"], n["follow_up"]) for n in mine] == [(NOTE, True)]
    for who in (office, colleague, other, seeker):
        assert client.get(notes, headers=who.headers).status_code == 404
    assert client.get(notes).status_code == 401

    # The ledger's event: ids and counts, never the note.
    with stack.runtime("community").session_factory() as session:
        rows = list(session.scalars(select(messaging.outbox)))
        with_note = [r for r in rows if NOTE in json.dumps(r.message, default=str)]
        sent = [r for r in rows if r.type == "community.help_session_held"]
        with_phone = session.scalar(
            select(func.count())
            .select_from(AccessRecord)
            .where(AccessRecord.what.like(f"help session connection%{held['id']}"))
        )
    assert with_note == []
    # The call-back, the room, and the room answered again: each connection recorded.
    assert with_phone == 3
    assert len(sent) == 1
    # The week the session was held in (moved to now above), in Beijing.
    local = held_at.astimezone(BEIJING).date()
    assert sent[0].message["payload"] == {
        "session_id": held["id"],
        "person_key": anonymous["id"],
        "region": "420106",
        "week": (local - timedelta(days=local.weekday())).isoformat(),
        "minutes": 45,
    }

    # The follow-up keeps its helper, though another is as free; the token follows it.
    # (The session held a moment ago is put hours back first: held as now, it would
    # still take the helper's next slot, and the earlier slot wins over continuity.)
    _move(stack, held["id"], datetime.now(UTC) - timedelta(hours=3))
    other_helper = _helper(client, office, other)
    followed = _ok(_status(client, anonymous["id"], token))
    assert followed["status"] == "closed" and followed["follow_up_request_id"] == follow_up
    assert _ok(_status(client, follow_up, token))["status"] == "open"
    rerun = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    kept = {a["request_id"]: a for a in rerun["assignments"]}
    assert kept[follow_up]["helper_id"] == helper != other_helper
    assert "a follow-up with the same helper" in kept[follow_up]["reason"]
    assert kept[third["id"]]["helper_id"] == other_helper

    # Missed by the seeker: the slot freed, the request first in line again.
    booked = sessions[signed["id"]]
    missed = f"{HELP}/sessions/{booked['id']}/missed"
    assert client.post(missed, json={"who": "seeker"}, headers=office.headers).status_code == 409
    _move(stack, booked["id"], datetime.now(UTC) - timedelta(minutes=20))
    assert client.post(missed, json={"who": "nobody"}, headers=office.headers).status_code == 422
    assert client.post(missed, json={"who": "seeker"}, headers=other.headers).status_code == 404
    gone = _ok(client.post(missed, json={"who": "seeker"}, headers=counsellor.headers))
    assert gone["status"] == "missed" and gone["missed_by"] == "seeker"
    assert client.post(missed, json={"who": "helper"}, headers=office.headers).status_code == 409
    queue = _ok(client.get(f"{HELP}/requests", headers=office.headers))["items"]
    assert queue[0]["id"] == signed["id"]


def _edit(assignment: dict[str, Any]) -> dict[str, Any]:
    return {k: assignment[k] for k in ("request_id", "helper_id", "starts_at")}


def test_two_closes_at_once_make_one_follow_up(stack: Stack) -> None:
    """Closed twice at the same moment: one close, one 409, one follow-up; without a
    provider, connecting is a 409 that says so."""
    from services.community.models import HelpRequest

    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    _helper(client, office, hospital)
    _ask(client)
    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    made = _ok(client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers))
    sid = made["items"][0]["id"]
    _ok(client.post(f"{HELP}/sessions/{sid}/confirm", headers=hospital.headers))
    _move(stack, sid, datetime.now(UTC) - timedelta(minutes=10))
    none = client.post(f"{HELP}/sessions/{sid}/connect", json={}, headers=hospital.headers)
    assert none.status_code == 409 and none.get_json()["type"].endswith("no-contact-provider")

    def close(_: int) -> int:
        answer = stack.client().post(
            f"{HELP}/sessions/{sid}/close",
            json={"note": "fine", "follow_up": True},
            headers=hospital.headers,
        )
        return int(answer.status_code)

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert sorted(pool.map(close, range(2))) == [200, 409]
    with stack.runtime("community").session_factory() as session:
        follow_ups = session.scalar(
            select(func.count())
            .select_from(HelpRequest)
            .where(HelpRequest.previous_helper_id.is_not(None))
        )
    assert follow_ups == 1


def test_helpers_and_seekers_data_exported_withdrawn_erased_and_expired(stack: Stack) -> None:
    from services.community.models import Helper, HelpRequest, HelpSession, HelpSessionNote

    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    counsellor = member(stack, client, hospital, "Counsellor Zhao")
    volunteer = verified(client, boss, kind="individual")
    person = verified(client, boss, kind="individual")
    mine = _helper(client, office, volunteer, topics=["anxiety"])
    theirs = _helper(client, office, counsellor, topics=["grief"])
    asked = _ask(client, person, text=SECRET_TEXT)
    ahead = _ask(client, topic="grief")
    past = _ask(client, topic="grief")
    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    made = _ok(client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers))
    by_request = {s["request_id"]: s for s in made["items"]}
    sid = by_request[asked["id"]]["id"]
    assert by_request[asked["id"]]["helper_id"] == mine
    _ok(client.post(f"{HELP}/sessions/{sid}/confirm", headers=volunteer.headers))
    _move(stack, sid, datetime.now(UTC) - timedelta(minutes=50))
    _ok(client.post(f"{HELP}/sessions/{sid}/close", json={"note": NOTE}, headers=volunteer.headers))

    # The export: the helper reads their record and which notes they keep; a
    # coordinator the record, not the notes; the person their request with its text
    # and contact.
    def community_part(org_id: str, who: Account) -> dict[str, Any]:
        answer = client.get(f"/api/v1/orgs/{org_id}/personal-data", headers=who.headers)
        assert answer.status_code == 200, answer.get_json()
        part = next(s for s in answer.get_json()["services"] if s["service"] == "community")
        records: dict[str, Any] = part["records"]
        return records

    own = community_part(volunteer.org_id, volunteer)
    assert [(h["id"], bool(h["qualifications"])) for h in own["helpers"]] == [(mine, True)]
    # Which notes are kept, never what they say: a note is in no export.
    assert [n["session_id"] for n in own["help_session_notes"]] == [sid]
    assert NOTE not in json.dumps(own)
    assert own["help_requests"] == []
    seen = community_part(volunteer.org_id, office)
    assert seen["help_session_notes"] == [] and seen["helpers"][0]["qualifications"]
    asking = community_part(person.org_id, person)
    assert [(r["id"], r["text"], r["contact"]) for r in asking["help_requests"]] == [
        (asked["id"], SECRET_TEXT, SEEKER_PHONE)
    ]
    assert NOTE not in json.dumps(community_part(person.org_id, office))
    # A member of the hospital who is no helper reads no one's helper record in the
    # community service's part of its export; its admin and the helper read it.
    from services.community.sessions.privacy import personal_data
    from shared.identity import ORG_ADMIN, Identity

    def helpers_seen(user_id: str, *roles: str) -> list[str]:
        reader = Identity(
            user_id=uuid.UUID(user_id),
            org_id=uuid.UUID(hospital.org_id),
            roles=frozenset({"recipient", *roles}),
            org_status="verified",
            via="session",
        )
        with stack.runtime("community").session_factory() as session:
            part = personal_data(session, uuid.UUID(hospital.org_id), reader)
        return [h["id"] for h in part["helpers"]]

    nurse = member(stack, client, hospital, "Nurse Sun")
    assert helpers_seen(nurse.user_id) == []
    assert helpers_seen(counsellor.user_id) == [theirs]
    assert helpers_seen(hospital.user_id, ORG_ADMIN) == [theirs]

    # Notes past their retention period go, by the community worker's task.
    rt = stack.runtime("community")
    with rt.unit_of_work() as session:
        session.add(
            HelpSessionNote(
                id=uuid.uuid4(),
                session_id=uuid.UUID(by_request[ahead["id"]]["id"]),
                helper_id=uuid.UUID(theirs),
                org_id=uuid.UUID(hospital.org_id),
                note="an old note",
                written_at=datetime.now(UTC) - timedelta(days=366),
            )
        )
    # So does what a request closed long ago said, and how to reach its person.
    old_request = uuid.uuid4()
    with rt.unit_of_work() as session:
        session.add(
            HelpRequest(
                id=old_request,
                topic="grief",
                urgency="routine",
                languages=["zh"],
                text="an old request",
                contact="+86 137 0000 9999",
                status="closed",
                updated_at=datetime.now(UTC) - timedelta(days=91),
            )
        )
    assert rt.celery.tasks["community.delete_expired_session_notes"]() == 1
    with rt.session_factory() as session:
        assert list(session.scalars(select(HelpSessionNote.note))) == [NOTE]
        cleared = session.get(HelpRequest, old_request)
        assert cleared is not None and (cleared.text, cleared.contact) == (None, None)
        recent = session.get(HelpRequest, uuid.UUID(asked["id"]))
        assert recent is not None and recent.text == SECRET_TEXT

    # The counsellor leaves the hospital: withdrawn, their session ahead back in line,
    # and one already over that they never closed missed by them, back in line too.
    over = by_request[past["id"]]["id"]
    _move(stack, over, datetime.now(UTC) - timedelta(hours=2))
    removed = client.delete(
        f"/api/v1/orgs/{hospital.org_id}/members/{counsellor.user_id}", headers=hospital.headers
    )
    assert removed.status_code == 204

    def withdrawn() -> bool:
        with rt.session_factory() as session:
            row = session.get(Helper, uuid.UUID(theirs))
            return row is not None and row.status == "withdrawn"

    eventually(withdrawn, timeout=30)
    with rt.session_factory() as session:
        row = session.get(Helper, uuid.UUID(theirs))
        assert row is not None and row.name is None and row.qualifications == []
        declined = session.get(HelpSession, uuid.UUID(by_request[ahead["id"]]["id"]))
        assert declined is not None and declined.status == "declined"
        back = session.get(HelpRequest, uuid.UUID(ahead["id"]))
        assert back is not None and back.status == "open"
        missed = session.get(HelpSession, uuid.UUID(over))
        assert missed is not None and (missed.status, missed.missed_by) == ("missed", "helper")
        assert session.get(HelpRequest, uuid.UUID(past["id"])).status == "open"  # type: ignore[union-attr]
    again = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    assert {u["request_id"] for u in again["unassigned"]} == {ahead["id"], past["id"]}
    reverify = client.post(
        f"{HELP}/helpers/{theirs}/verify", json={"decision": "verified"}, headers=office.headers
    )
    assert reverify.status_code == 409 and reverify.get_json()["type"].endswith("withdrawn")

    # The person's erasure: their request's text and contact, and the note on their
    # session, go; the session held and its minutes stay, for the counts.
    erased = client.post(
        f"/api/v1/orgs/{person.org_id}/erase", json={"reason": "asked"}, headers=office.headers
    )
    assert erased.status_code == 200, erased.get_json()

    def gone() -> bool:
        with rt.session_factory() as session:
            row = session.get(HelpRequest, uuid.UUID(asked["id"]))
            return row is not None and row.text is None and row.contact is None

    eventually(gone, timeout=30)
    with rt.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(HelpSessionNote)) == 0
        held = session.get(HelpSession, uuid.UUID(sid))
        assert held is not None and held.status == "held" and held.minutes == 50


class FailingProvider:
    """A contact provider whose error quotes the number it could not reach."""

    name = "failing"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def connect(self, asked: Any) -> Any:
        from services.community.sessions.contact import ContactProviderError

        raise ContactProviderError(f"could not reach {asked.seeker_contact}")


def _confirmed_now(stack: Stack) -> tuple[Account, str]:
    """A hospital's helper and their confirmed session, started five minutes ago."""
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    _helper(client, office, hospital)
    _ask(client)
    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    made = _ok(client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers))
    sid = str(made["items"][0]["id"])
    _ok(client.post(f"{HELP}/sessions/{sid}/confirm", headers=hospital.headers))
    _move(stack, sid, datetime.now(UTC) - timedelta(minutes=5))
    return hospital, sid


def test_a_provider_failing_answers_a_fixed_problem_without_its_message(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider's error may quote the seeker's number: neither the answer nor the
    log carries it, and nothing is recorded."""
    from services.community.models import AccessRecord, HelpConnection

    failing = f"{__name__}:FailingProvider"
    with build_stack(settings.with_overrides(help_contact_provider=failing)) as stack:
        hospital, sid = _confirmed_now(stack)
        for body in ({"helper_contact": HELPER_PHONE}, {}):
            answer = stack.client().post(
                f"{HELP}/sessions/{sid}/connect", json=body, headers=hospital.headers
            )
            assert answer.status_code == 503, answer.get_json()
            problem = answer.get_json()
            assert problem["type"].endswith("contact-provider-failed")
            assert problem["detail"] == (
                "The contact provider could not connect the session; try again or use "
                "the contact shown within the window."
            )
            assert SEEKER_PHONE not in answer.get_data(as_text=True)
        assert SEEKER_PHONE not in caplog.text
        assert "ContactProviderError" in caplog.text
        with stack.runtime("community").session_factory() as session:
            assert session.scalar(select(func.count()).select_from(HelpConnection)) == 0
            recorded = session.scalar(
                select(func.count())
                .select_from(AccessRecord)
                .where(AccessRecord.what.like(f"help session connection%{sid}"))
            )
            assert recorded == 0


def test_two_joins_at_once_open_one_room(provided: Stack) -> None:
    """Two Joins at the same moment: one room, answered to both, each recorded."""
    from services.community.models import AccessRecord, HelpConnection

    hospital, sid = _confirmed_now(provided)

    def join(_: int) -> dict[str, Any]:
        answer = provided.client().post(
            f"{HELP}/sessions/{sid}/connect", json={}, headers=hospital.headers
        )
        assert answer.status_code == 200, answer.get_json()
        joined: dict[str, Any] = answer.get_json()
        return joined

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(join, range(2))
    assert first == second and first["kind"] == "room"
    with provided.runtime("community").session_factory() as session:
        rooms = session.scalar(select(func.count()).select_from(HelpConnection))
        recorded = session.scalar(
            select(func.count())
            .select_from(AccessRecord)
            .where(AccessRecord.what.like(f"help session connection (room)%{sid}"))
        )
    assert rooms == 1
    assert recorded == 2


def test_a_preview_edited_to_a_time_out_of_range_is_refused(stack: Stack) -> None:
    """A start the calendar holds but whose session would end past the year 9999 (or
    whose UTC time is out of range) is a 422 naming the assignment, not a 500."""
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    _helper(client, office, hospital)
    _ask(client)
    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    planned = run["assignments"][0]
    path = f"{HELP}/runs/{run['id']}"
    for starts in ("9999-12-31T23:30:00Z", "0001-01-01T00:30:00+08:00"):
        answer = client.patch(
            path,
            json={"assignments": [{**_edit(planned), "starts_at": starts}]},
            headers=office.headers,
        )
        assert answer.status_code == 422, answer.get_json()
        assert "assignments.0.starts_at" in answer.get_json()["errors"]
    assert _ok(client.get(path, headers=office.headers))["revision"] == run["revision"]
