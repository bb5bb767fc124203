"""Help from people's time in the community service: a helper registered through their
organisation and verified by a coordinator; requests for help (a crisis recognised by
its words, in Chinese); a coordinator's preview approved into sessions, the crisis
first; a declined session's request back first in line; the seeker's contact shown to
the helper only within the session's window, each reveal recorded; and what each other
party sees of all this."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tests.support.auth import Account, admin, coordinator, verified
from tests.support.stack import Stack

HELP = "/api/v1/community/help"
CONTACT = "+86 138 0000 0000"
CRISIS_TEXT = "最近每天都睡不着\uff0c我不想活了"


def _helper_body() -> dict[str, Any]:
    return {
        "name": "Counsellor Wang",
        "kinds": ["counsellor", "social_worker"],
        "topics": ["anxiety", "medical_worker"],
        "languages": ["zh", "en"],
        "daily_limit": 4,
        "timezone": "Asia/Shanghai",
        "availability": [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)],
        "qualifications": [
            {"kind": "national counsellor certificate, level 2", "evidence": "No. 2020-4471"}
        ],
    }


def _ask(client: Any, body: dict[str, Any], who: Account | None = None) -> dict[str, Any]:
    headers = who.headers if who else {}
    made = client.post(f"{HELP}/requests", json=body, headers=headers)
    assert made.status_code == 201, made.get_json()
    answer: dict[str, Any] = made.get_json()
    return answer


def _queue(client: Any, who: Account) -> list[dict[str, Any]]:
    listed = client.get(f"{HELP}/requests", headers=who.headers)
    assert listed.status_code == 200, listed.get_json()
    items: list[dict[str, Any]] = listed.get_json()["items"]
    return items


def test_a_helper_is_verified_scheduled_declined_and_the_request_requeued(stack: Stack) -> None:
    from services.community.models import AccessRecord, HelpSession

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    stranger = verified(client, boss, kind="hospital")

    # A member of a verified organisation registers; a coordinator verifies.
    made = client.post(f"{HELP}/helpers", json=_helper_body(), headers=hospital.headers)
    assert made.status_code == 201, made.get_json()
    helper = made.get_json()
    assert helper["status"] == "pending" and helper["org_id"] == hospital.org_id
    again = client.post(f"{HELP}/helpers", json=_helper_body(), headers=hospital.headers)
    assert again.status_code == 409
    bad = client.post(
        f"{HELP}/helpers",
        json={**_helper_body(), "timezone": "Mars/Olympus"},
        headers=stranger.headers,
    )
    assert bad.status_code == 422 and "timezone" in bad.get_json()["errors"]
    assert client.get(f"{HELP}/helpers/{helper['id']}", headers=stranger.headers).status_code == 404
    assert client.get(f"{HELP}/helpers", headers=stranger.headers).get_json()["items"] == []
    refused = client.post(
        f"{HELP}/helpers/{helper['id']}/verify",
        json={"decision": "verified"},
        headers=hospital.headers,
    )
    assert refused.status_code == 403
    no_reason = client.post(
        f"{HELP}/helpers/{helper['id']}/verify",
        json={"decision": "rejected"},
        headers=office.headers,
    )
    assert no_reason.status_code == 422
    done = client.post(
        f"{HELP}/helpers/{helper['id']}/verify",
        json={"decision": "verified"},
        headers=office.headers,
    )
    assert done.status_code == 200 and done.get_json()["status"] == "verified"

    # Requests: one no helper takes (first in line until then), a routine one, and a
    # crisis by its words, asked last and through the public form.
    waiting = _ask(
        client,
        {"topic": "child_care", "languages": ["zh"], "contact": "+86 139 1111 1111"},
        hospital,
    )
    routine = _ask(
        client,
        {
            "topic": "anxiety",
            "languages": ["en"],
            "contact": "+86 137 2222 2222",
            "priority_group": "medical_staff",
            "text": "Twelve-hour shifts in the ICU for a month",
        },
    )
    assert routine["crisis"] is False and routine["crisis_line"] is None
    crisis = _ask(
        client,
        {"topic": "anxiety", "languages": ["zh"], "contact": CONTACT, "text": CRISIS_TEXT},
    )
    assert crisis["crisis"] is True and crisis["urgency"] == "crisis"
    assert crisis["crisis_line"] == "12356"

    queue = _queue(client, office)
    assert [r["id"] for r in queue] == [crisis["id"], routine["id"], waiting["id"]]
    assert all("contact" not in r and "text" not in r for r in queue)
    assert client.get(f"{HELP}/requests").status_code == 401
    assert [r["id"] for r in _queue(client, hospital)] == [waiting["id"]]
    assert _queue(client, stranger) == []

    # A preview, then its approval: the crisis request has the earliest slot.
    assert client.post(f"{HELP}/runs", headers=hospital.headers).status_code == 403
    preview = client.post(f"{HELP}/runs", headers=office.headers)
    assert preview.status_code == 201, preview.get_json()
    run = preview.get_json()
    assert run["status"] == "preview"
    planned = {a["request_id"]: a for a in run["assignments"]}
    assert set(planned) == {crisis["id"], routine["id"]}
    assert planned[crisis["id"]]["starts_at"] < planned[routine["id"]]["starts_at"]
    assert planned[crisis["id"]]["reason"].startswith("crisis")
    assert [(u["request_id"], u["reason"]) for u in run["unassigned"]] == [
        (waiting["id"], "no-helper-for-topic")
    ]
    rival = client.post(f"{HELP}/runs", headers=office.headers).get_json()
    approved = client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers)
    assert approved.status_code == 200, approved.get_json()
    sessions = {s["request_id"]: s for s in approved.get_json()["items"]}
    assert set(sessions) == {crisis["id"], routine["id"]}
    assert all(s["status"] == "booked" for s in sessions.values())
    assert (
        client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers).status_code == 409
    )
    # A second preview of the same queue is stale once the first is approved.
    assert (
        client.post(f"{HELP}/runs/{rival['id']}/approve", headers=office.headers).status_code == 409
    )
    assert _queue(client, office)[0]["id"] == waiting["id"]

    # The helper sees their sessions, without the seeker's contact; nobody else does.
    mine = client.get(f"{HELP}/sessions", headers=hospital.headers).get_json()["items"]
    assert [s["request_id"] for s in mine] == [crisis["id"], routine["id"]]
    assert all("contact" not in s for s in mine)
    # Bounded to a window, as the helper's page asks: the sessions that end at or
    # after one moment and start before another.
    first_ends, second_starts = mine[0]["ends_at"], mine[1]["starts_at"]

    def window(**bounds: str) -> list[str]:
        answer = client.get(f"{HELP}/sessions", query_string=bounds, headers=hospital.headers)
        assert answer.status_code == 200, answer.get_json()
        return [s["request_id"] for s in answer.get_json()["items"]]

    assert window(ends_after=first_ends) == [crisis["id"], routine["id"]]
    assert window(starts_before=second_starts) == [crisis["id"]]
    later = window(ends_after=mine[1]["ends_at"], starts_before=mine[1]["ends_at"])
    assert later == [routine["id"]]
    bad = client.get(f"{HELP}/sessions?ends_after=tomorrow", headers=hospital.headers)
    assert bad.status_code == 422 and "ends_after" in str(bad.get_json()["errors"])
    assert client.get(f"{HELP}/sessions", headers=stranger.headers).get_json()["items"] == []
    first = sessions[crisis["id"]]
    assert client.get(f"{HELP}/sessions/{first['id']}", headers=stranger.headers).status_code == 404
    seen = client.get(f"{HELP}/sessions/{first['id']}", headers=office.headers)
    assert seen.status_code == 200 and "contact" not in seen.get_json()
    for verb in ("confirm", "decline"):
        assert (
            client.post(
                f"{HELP}/sessions/{first['id']}/{verb}", headers=stranger.headers
            ).status_code
            == 404
        )
        assert (
            client.post(f"{HELP}/sessions/{first['id']}/{verb}", headers=office.headers).status_code
            == 404
        )
    assert (
        client.get(f"{HELP}/sessions/{first['id']}/contact", headers=office.headers).status_code
        == 404
    )

    # The contact: not before the session is confirmed, nor outside its window.
    contact = f"{HELP}/sessions/{first['id']}/contact"
    assert client.get(contact, headers=hospital.headers).status_code == 403
    confirmed = client.post(f"{HELP}/sessions/{first['id']}/confirm", headers=hospital.headers)
    assert confirmed.status_code == 200 and confirmed.get_json()["status"] == "confirmed"
    window_from = datetime.fromisoformat(first["contact_visible_from"])
    assert window_from == datetime.fromisoformat(first["starts_at"]) - timedelta(minutes=15)
    rt = stack.runtime("community")
    now = datetime.now(UTC)
    # Two hours ahead, whatever the hour the test runs at (a crisis takes the next
    # slot, which may already be within its window).
    with rt.unit_of_work() as session:
        row = session.get(HelpSession, uuid.UUID(first["id"]))
        assert row is not None
        row.starts_at, row.ends_at = now + timedelta(hours=2), now + timedelta(hours=2, minutes=50)
        row.held_start = row.starts_at
    early = client.get(contact, headers=hospital.headers)
    assert early.status_code == 403 and early.get_json()["type"].endswith("contact-not-visible")
    with rt.unit_of_work() as session:
        row = session.get(HelpSession, uuid.UUID(first["id"]))
        assert row is not None
        row.starts_at, row.ends_at = now - timedelta(minutes=5), now + timedelta(minutes=45)
        row.held_start = row.starts_at
    shown = client.get(contact, headers=hospital.headers)
    assert shown.status_code == 200, shown.get_json()
    assert shown.get_json()["contact"] == CONTACT and shown.get_json()["text"] == CRISIS_TEXT
    assert client.get(contact, headers=stranger.headers).status_code == 404
    with rt.session_factory() as session:
        reveals = session.scalar(
            select(func.count())
            .select_from(AccessRecord)
            .where(AccessRecord.what == f"help request contact, session {first['id']}")
        )
        assert reveals == 1
    # No slot is held twice, whoever writes.
    with rt.unit_of_work() as session:
        held = session.get(HelpSession, uuid.UUID(sessions[routine["id"]]["id"]))
        assert held is not None
        session.add(
            HelpSession(
                id=uuid.uuid4(),
                helper_id=held.helper_id,
                request_id=held.request_id,
                starts_at=held.starts_at,
                ends_at=held.ends_at,
                held_start=held.held_start,
                status="booked",
            )
        )
        try:
            session.flush()
            raise AssertionError("a slot was booked twice")
        except IntegrityError:
            session.rollback()

    # The helper declines the other: its request is back, first in line.
    second = sessions[routine["id"]]
    declined = client.post(f"{HELP}/sessions/{second['id']}/decline", headers=hospital.headers)
    assert declined.status_code == 200 and declined.get_json()["status"] == "declined"
    assert [r["id"] for r in _queue(client, office)] == [routine["id"], waiting["id"]]
    again_run = client.post(f"{HELP}/runs", headers=office.headers).get_json()
    assert [a["request_id"] for a in again_run["assignments"]] == [routine["id"]]
    approved_again = client.post(f"{HELP}/runs/{again_run['id']}/approve", headers=office.headers)
    assert approved_again.status_code == 200, approved_again.get_json()


def test_fifty_approvals_at_once_book_each_slot_once(stack: Stack) -> None:
    """Fifty previews of one queue approved at the same moment, each from a client of
    its own: one wins, the others are refused whole (409), and no slot holds two
    sessions."""
    from concurrent.futures import ThreadPoolExecutor

    from services.community.models import HelpSession

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    helper = client.post(f"{HELP}/helpers", json=_helper_body(), headers=hospital.headers)
    assert helper.status_code == 201, helper.get_json()
    verify = client.post(
        f"{HELP}/helpers/{helper.get_json()['id']}/verify",
        json={"decision": "verified"},
        headers=office.headers,
    )
    assert verify.status_code == 200
    for n in range(6):
        _ask(client, {"topic": "anxiety", "languages": ["zh"], "contact": f"+86 138 0000 000{n}"})
    runs = [client.post(f"{HELP}/runs", headers=office.headers).get_json()["id"] for _ in range(50)]

    def approve(run_id: str) -> int:
        return int(
            stack.client().post(f"{HELP}/runs/{run_id}/approve", headers=office.headers).status_code
        )

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        statuses = sorted(pool.map(approve, runs))
    assert statuses == [200] + [409] * (len(runs) - 1)
    with stack.runtime("community").session_factory() as session:
        held = [
            (s.helper_id, s.held_start)
            for s in session.scalars(select(HelpSession).where(HelpSession.held_start.is_not(None)))
        ]
    assert len(held) == 6 and len(set(held)) == 6


def test_coordinators_set_who_is_served_first(stack: Stack) -> None:
    """Until the coordinators set a rule the setting's groups are served first within
    an urgency; a rule they set takes over from the next queue on; anyone else is
    refused, a group that does not exist is named, and a change based on an old
    version is refused rather than overwriting another coordinator's."""
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    rule = f"{HELP}/rule"
    first = client.get(rule, headers=hospital.headers)
    assert first.status_code == 200 and first.headers["ETag"] == '"0"'
    assert first.get_json()["set_by"] == "setting"
    assert first.get_json()["priority_groups"] == ["medical_staff", "patient", "patient_family"]
    # A medical worker's request, then a patient's: the worker's first, by the setting.
    body = {"topic": "anxiety", "languages": ["zh"], "contact": CONTACT}
    staff = _ask(client, {**body, "priority_group": "medical_staff"})
    patient = _ask(client, {**body, "priority_group": "patient"})
    assert [r["id"] for r in _queue(client, office)] == [staff["id"], patient["id"]]

    refused = client.put(rule, json={"priority_groups": ["patient"]}, headers=hospital.headers)
    assert refused.status_code == 403
    unknown = client.put(rule, json={"priority_groups": ["vip"]}, headers=office.headers)
    assert unknown.status_code == 422
    assert list(unknown.get_json()["errors"]) == ["priority_groups.0"]
    done = client.put(
        rule, json={"priority_groups": ["patient"]}, headers={**office.headers, "If-Match": '"0"'}
    )
    assert done.status_code == 200 and done.headers["ETag"] == '"1"'
    assert done.get_json()["set_by"] == "coordinators"
    # Only the patient is served first now; the worker waits their turn by age.
    queued = _queue(client, office)
    assert [r["id"] for r in queued] == [patient["id"], staff["id"]]
    stale = client.put(
        rule, json={"priority_groups": []}, headers={**office.headers, "If-Match": '"0"'}
    )
    assert stale.status_code == 412
    assert client.get(rule, headers=office.headers).get_json()["priority_groups"] == ["patient"]
