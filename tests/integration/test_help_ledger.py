"""Help from people's time on the public ledger: sessions a helper closed as held reach
dispatch as counts (``community.help_session_held``) and the ledger shows sessions held,
people helped and hours given by week and city, a person's follow-up counted as one
more session of the same person; an event delivered again counts once; nothing on the
ledger or its page names a person."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from tests.support.auth import Account, admin, coordinator, verified
from tests.support.orgs import read_model_org
from tests.support.stack import Stack, eventually

HELP = "/api/v1/community/help"
LEDGER = "/api/v1/transparency/ledger"
PHONES = ("+86 137 5555 0101", "+86 137 5555 0102")
TEXT = "Night shifts in the fever clinic for a month"


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _held(stack: Stack, client: Any, office: Account, helper: Account, minutes: int) -> str:
    """Schedule the queue, then the helper confirms and closes its one session as held
    (put in the past first: the test cannot wait for the clock)."""
    from services.community.models import HelpSession

    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    [made] = _ok(client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers))["items"]
    _ok(client.post(f"{HELP}/sessions/{made['id']}/confirm", headers=helper.headers))
    with stack.runtime("community").unit_of_work() as session:
        row = session.get(HelpSession, uuid.UUID(made["id"]))
        assert row is not None
        starts = datetime.now(UTC) - timedelta(hours=1)
        row.starts_at, row.ends_at, row.held_start = starts, starts + timedelta(minutes=50), starts
    closed = _ok(
        client.post(
            f"{HELP}/sessions/{made['id']}/close",
            json={"note": "private note", "follow_up": True, "minutes": minutes},
            headers=helper.headers,
        )
    )
    assert closed["status"] == "held"
    return str(made["id"])


def test_sessions_held_reach_the_ledger_as_counts_once(stack: Stack) -> None:
    from services.dispatch.models import HelpGiven

    for service in ("gateway", "community", "dispatch"):
        stack.start_worker(service)
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital", region="420106")
    made = client.post(
        f"{HELP}/helpers",
        json={
            "kinds": ["counsellor"],
            "topics": ["medical_worker"],
            "languages": ["zh"],
            "daily_limit": 8,
            "availability": [{"weekday": d, "start": "00:00", "end": "23:00"} for d in range(7)],
            "qualifications": [{"kind": "counsellor certificate", "evidence": "No. 12"}],
        },
        headers=hospital.headers,
    )
    helper_id = _ok(made, 201)["id"]
    _ok(
        client.post(
            f"{HELP}/helpers/{helper_id}/verify",
            json={"decision": "verified"},
            headers=office.headers,
        )
    )
    # The community service knows the helper's organisation (and so its region) by
    # the time a session is closed, as it would in use.
    eventually(lambda: read_model_org(stack.runtime("community"), hospital.org_id), timeout=60)
    # One person's session, then their follow-up (closed with none after it: the
    # follow-up request is left open), then another person's.
    body = {"topic": "medical_worker", "languages": ["zh"], "text": TEXT}
    _ok(client.post(f"{HELP}/requests", json={**body, "contact": PHONES[0]}), 201)
    first = _held(stack, client, office, hospital, 45)
    _held(stack, client, office, hospital, 50)
    _ok(client.post(f"{HELP}/requests", json={**body, "contact": PHONES[1]}), 201)
    # The second person's request and the first one's new follow-up are both open.
    run = _ok(client.post(f"{HELP}/runs", headers=office.headers), 201)
    assert len(run["assignments"]) == 2

    def counted() -> dict[str, Any] | None:
        answer = client.get(LEDGER).get_json()["help_given"]
        return answer if answer["sessions_held"] == 2 else None

    held = eventually(counted, timeout=60)
    assert held["people_helped"] == 1 and held["hours_given"] == round(95 / 60, 1)
    [week] = held["by_week"]
    # The sessions started an hour ago: their week's Monday in Beijing time.
    started = (datetime.now(UTC) + timedelta(hours=8) - timedelta(hours=1)).date()
    assert week["week"] == (started - timedelta(days=started.weekday())).isoformat()
    assert week["region"] == "4201"
    assert (week["sessions_held"], week["people_helped"]) == (2, 1)

    # Delivered again through the broker, as it is and as a copy under a new id (a
    # producer that sent one session twice): still two sessions.
    from services.community.models import messaging as community_messages
    from services.dispatch.models import messaging as dispatch_messages

    with stack.runtime("community").session_factory() as session:
        messages = [
            row.message
            for row in session.scalars(
                select(community_messages.outbox).where(
                    community_messages.outbox.type == "community.help_session_held"
                )
            )
        ]
    assert len(messages) == 2
    copy = {**messages[0], "id": str(uuid.uuid4())}
    again = [(uuid.UUID(m["id"]), m) for m in (*messages, copy)]
    assert stack.runtime("community").outbox.send_to("dispatch", again) == []
    dispatch = stack.runtime("dispatch")

    def taken_in() -> bool:
        with dispatch.session_factory() as session:
            return session.get(dispatch_messages.inbox, uuid.UUID(copy["id"])) is not None

    eventually(taken_in, timeout=60)
    with dispatch.session_factory() as session:
        assert len(session.scalars(select(HelpGiven)).all()) == 2
        row = session.get(HelpGiven, uuid.UUID(first))
        assert row is not None and row.region == "4201"
    assert client.get(LEDGER).get_json()["help_given"]["sessions_held"] == 2

    # Filters: another city has none; a week before the sessions has none.
    assert (
        client.get(LEDGER, query_string={"region": "4403"}).get_json()["help_given"][
            "sessions_held"
        ]
        == 0
    )
    earlier = (date.today() - timedelta(days=30)).isoformat()
    before = client.get(LEDGER, query_string={"from": earlier, "to": earlier}).get_json()
    assert before["help_given"]["sessions_held"] == 0
    # From the calendar's first days: every week, no error.
    since = client.get(LEDGER, query_string={"from": "0001-01-01"})
    assert since.status_code == 200 and since.get_json()["help_given"]["sessions_held"] == 2

    # What the public reads names no one: no contact, text, note, helper or session.
    public = client.get(LEDGER).get_data(as_text=True)
    for secret in (*PHONES, TEXT, "private note", helper_id, first):
        assert secret not in public
    for language in ("en", "zh"):
        page = client.get("/transparency", headers={"Accept-Language": language})
        text = page.get_data(as_text=True)
        assert page.status_code == 200 and 'class="help-given"' in text
        assert "武汉市" in text if language == "zh" else "Wuhan" in text
        for secret in (*PHONES, TEXT, "private note", helper_id):
            assert secret not in text
