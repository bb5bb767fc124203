"""The pages of help from people's time through Flask's test client, over the real
community service: anyone asks for help without signing in and a text that speaks of
self-harm shows the crisis line at once; a coordinator verifies a helper, previews a
schedule (each session's reason and each request left out in words, not codes) and
approves it; the helper confirms one session and declines the other on their day's
page, and sees the seeker's contact within the window only; a helper of another
organisation sees no one's sessions. Both languages."""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.gateway.web.times import LOCAL
from tests.support.auth import PASSWORD, Account, admin, coordinator, verified
from tests.support.community import hotline as a_hotline
from tests.support.stack import Stack

HELP = "/api/v1/community/help"
CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
CRISIS_TEXT = "最近每天都睡不着，我不想活了"


def _client(stack: Stack, language: str) -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    return client


def _signed_in(stack: Stack, who: Account, language: str = "en") -> Any:
    client = _client(stack, language)
    token = _token(client.get("/signin"))
    done = client.post(
        "/signin", data={"csrf_token": token, "email": who.email, "password": PASSWORD}
    )
    assert done.status_code == 302
    return client


def _token(page: Any) -> str:
    assert page.status_code == 200, page.data[:800]
    found = CSRF.search(page.data)
    assert found
    return found.group(1).decode()


def _text(page: Any) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.get_data(True)))


def _helper_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "kinds": ["counsellor"],
        "topics": ["anxiety", "grief"],
        "languages": ["zh", "en"],
        "daily_limit": 4,
        "availability": [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)],
        "qualifications": [{"kind": "counsellor certificate", "evidence": "No. 2020-4471"}],
    }


def test_anyone_asks_for_help_and_a_crisis_shows_the_line_at_once(stack: Stack) -> None:
    stack.start_worker("community")
    words = {
        "en": ("Ask for help", "worry and anxiety", "Please call 12356 now", "Missing data"),
        "zh": ("寻求帮助", "担忧和焦虑", "请现在就拨打 12356", "此项为必填项"),
    }
    waiting_words = {"en": "waiting in line", "zh": "排队等候中"}
    for language, (title, topic, crisis, missing) in words.items():
        waiting = waiting_words[language]
        public = _client(stack, language)
        page = public.get("/help")
        token = _token(page)
        text = _text(page)
        assert title in text and topic in text
        assert "medical_worker" not in text and "child_care" not in text
        # A contact left out is named at its input; nothing is asked.
        wrong = public.post(
            "/help", data={"csrf_token": token, "topic": "anxiety", "languages": "zh"}
        )
        assert wrong.status_code == 422
        assert missing in _text(wrong) and 'id="f-contact-error"' in wrong.get_data(True)
        # A text that speaks of self-harm: the crisis line, at once, above all else.
        asked = public.post(
            "/help",
            data={
                "csrf_token": token,
                "topic": "anxiety",
                "languages": "zh",
                "urgency": "routine",
                "text": CRISIS_TEXT,
                "contact": "+86 138 0000 0000",
                "preferred_times.0.day": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(),
                "preferred_times.0.from": "19:00",
                "preferred_times.0.to": "21:00",
            },
        )
        assert asked.status_code == 200, asked.data[:800]
        body = asked.get_data(True)
        assert 'data-crisis-line="12356"' in body and crisis in _text(asked)
        assert body.index("data-crisis-line") < body.index("data-request")
        # Asked without signing in: a link to follow the request, and no one else's.
        follow = re.search(r"data-follow>([^<]+)<", body)
        assert follow
        status = public.get(html.unescape(follow.group(1)))
        assert status.status_code == 200 and waiting in _text(status)
        assert public.get(html.unescape(follow.group(1))[:-3] + "xyz").status_code == 404


def test_a_coordinator_plans_sessions_and_a_helper_confirms_their_day(stack: Stack) -> None:
    from services.community.models import HelpSession

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    other = verified(client, boss, kind="hospital")
    made = client.post(f"{HELP}/helpers", json=_helper_body("Wang Li"), headers=hospital.headers)
    assert made.status_code == 201, made.get_json()
    theirs = client.post(f"{HELP}/helpers", json=_helper_body("Zhao Min"), headers=other.headers)
    assert theirs.status_code == 201
    for body in (
        {"topic": "anxiety", "languages": ["zh"], "contact": "+86 139 1111 1111"},
        {"topic": "grief", "languages": ["en"], "contact": "+86 137 2222 2222", "text": "Mum"},
        {"topic": "child_care", "languages": ["zh"], "contact": "+86 136 3333 3333"},
        {"topic": "anxiety", "languages": ["zh"], "contact": "+86 135 4444 4444"},
    ):
        assert client.post(f"{HELP}/requests", json=body).status_code == 201

    # The queue is the coordinators': words, not codes, and no one's text or contact.
    desk = _signed_in(stack, office, "zh")
    assert 'href="/help/queue"' in desk.get("/").get_data(True)
    queue = desk.get("/help/queue")
    token = _token(queue)
    text = _text(queue)
    assert "担忧和焦虑" in text and "常规" in text and "Wang Li" in text
    assert "+86" not in text and "Mum" not in text
    # Who is served first: the installation's setting until a coordinator ticks groups.
    assert "优先服务" in text and 'value="patient_family" checked' in queue.get_data(True)
    ticked = desk.post(
        "/help/rule",
        data={"csrf_token": token, "version": "0", "priority_groups": ["patient"]},
    )
    assert ticked.status_code == 302
    rule = client.get(f"{HELP}/rule", headers=office.headers).get_json()
    assert (rule["priority_groups"], rule["set_by"], rule["version"]) == (
        ["patient"],
        "coordinators",
        1,
    )
    stale = desk.post(
        "/help/rule", data={"csrf_token": token, "version": "0", "priority_groups": ["patient"]}
    )
    assert stale.status_code == 412
    helper_id = made.get_json()["id"]
    no_reason = desk.post(
        f"/help/helpers/{helper_id}/verify", data={"csrf_token": token, "decision": "rejected"}
    )
    assert no_reason.status_code == 422 and "请说明" in _text(no_reason)
    done = desk.post(
        f"/help/helpers/{helper_id}/verify", data={"csrf_token": token, "decision": "verified"}
    )
    assert done.status_code == 302
    # A preview: each session's reason and each request left out, in the page's words.
    preview = desk.post("/help/runs", data={"csrf_token": token})
    assert preview.status_code == 302
    plan = desk.get(preview.location)
    text = _text(plan)
    assert "没有能处理该主题的合格帮助者" in text  # the child's care: no helper for it
    assert "提出请求后" in text and "routine" not in text
    # A change that breaks a rule is refused at its row; one that keeps them is saved.
    run = client.get(
        f"{HELP}/runs/{preview.location.rsplit('/', 1)[-1]}", headers=office.headers
    ).get_json()
    revision = re.search(r'name="revision" value="([^"]+)"', plan.get_data(True))
    assert revision
    rows: dict[str, str] = {"csrf_token": _token(plan), "revision": html.unescape(revision[1])}
    for n, a in enumerate(run["assignments"]):
        starts = datetime.fromisoformat(a["starts_at"]).astimezone(LOCAL)
        rows |= {
            f"rows.{n}.request_id": a["request_id"],
            f"rows.{n}.keep": "yes",
            f"rows.{n}.helper_id": a["helper_id"],
            f"rows.{n}.starts_at": starts.strftime("%Y-%m-%dT%H:%M"),
        }
    past = (datetime.now(LOCAL) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:00")
    wrong = desk.post(preview.location + "/edit", data=rows | {"rows.0.starts_at": past})
    assert wrong.status_code == 422
    assert "时间已经过去。" in _text(wrong) and 'id="f-rows-0-error"' in wrong.get_data(True)
    saved = desk.post(preview.location + "/edit", data=rows)
    assert saved.status_code == 302, _text(saved)[:2000]
    # Sent again from the page as it was: another change came first, so it is shown.
    stale = desk.post(preview.location + "/edit", data=rows)
    assert stale.status_code == 302
    assert "有人刚刚修改了这个预览" in _text(desk.get(stale.location))
    approved = desk.post(preview.location + "/approve", data={"csrf_token": _token(plan)})
    assert approved.status_code == 302
    assert "已预约 3 次会谈" in _text(desk.get(approved.location))

    # The helper's day, in each language: every session is theirs to confirm.
    ours = [
        a["request_id"]
        for a in client.get(
            f"{HELP}/runs/{preview.location.rsplit('/', 1)[-1]}", headers=office.headers
        ).get_json()["assignments"]
    ]
    assert len(ours) == 3
    helper = _signed_in(stack, hospital, "zh")
    for language, (title, waiting) in {
        "zh": ("我的会谈", "等待你的答复"),
        "en": ("My sessions", "waiting for your answer"),
    }.items():
        helper.set_cookie("aidlink_lang", language)
        assert 'href="/help/sessions"' in helper.get("/").get_data(True)
        day = helper.get("/help/sessions")
        text = _text(day)
        assert title in text and waiting in text and "booked" not in text
    assert helper.get("/help/queue").status_code == 403
    token = _token(day)
    first, second, third = re.findall(r'data-session="([^"]+)"', day.get_data(True))
    confirmed = helper.post(f"/help/sessions/{first}/confirm", data={"csrf_token": token})
    assert confirmed.status_code == 302
    assert "Confirmed: the session is yours." in _text(helper.get(confirmed.location))
    declined = helper.post(f"/help/sessions/{third}/decline", data={"csrf_token": token})
    assert declined.status_code == 302

    # Within the window the helper joins; without a contact provider the page shows
    # how to reach the person, and only that once.
    rt = stack.runtime("community")
    now = datetime.now(UTC)
    with rt.unit_of_work() as session:
        for moved, start in (
            (first, now - timedelta(minutes=5)),
            (second, now - timedelta(minutes=20)),
        ):
            row = session.get(HelpSession, uuid.UUID(moved))
            assert row is not None
            row.starts_at, row.ends_at = start, start + timedelta(minutes=50)
            row.held_start = row.starts_at
    day = helper.get("/help/sessions")
    assert f'data-session="{first}"' in day.get_data(True) and "data-join" in day.get_data(True)
    shown = helper.post(f"/help/sessions/{first}/join", data={"csrf_token": _token(day)})
    assert shown.status_code == 200 and "+86 13" in _text(shown)
    assert "+86" not in _text(helper.get("/help/sessions"))
    # Closed with a short note and a follow-up; the earlier one missed by the seeker.
    closed = helper.post(
        f"/help/sessions/{first}/close",
        data={"csrf_token": token, "note": "Sleeping better", "follow_up": "yes"},
    )
    assert closed.status_code == 302
    assert "A follow-up session with you is asked for." in _text(helper.get(closed.location))
    missed = helper.post(
        f"/help/sessions/{second}/missed", data={"csrf_token": token, "who": "seeker"}
    )
    assert missed.status_code == 302
    statuses = dict(
        re.findall(
            r'data-session="([^"]+)" data-status="(\w+)"',
            helper.get("/help/sessions").get_data(True),
        )
    )
    assert statuses[first] == "held" and statuses[second] == "missed"

    # A helper of another organisation sees none of these sessions, nor can act on one.
    stranger = _signed_in(stack, other)
    page = stranger.get("/help/sessions")
    assert 'data-session="' not in page.get_data(True)
    assert "Your registration as a helper: waiting for verification." in _text(page)
    refused = stranger.post(f"/help/sessions/{third}/confirm", data={"csrf_token": _token(page)})
    assert refused.status_code == 404


def test_an_operator_logs_calls_a_row_at_a_time_and_reads_the_days_figures(
    stack: Stack,
) -> None:
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    line = a_hotline(
        stack, client, boss, name="Wuchang help line", community={"name": "Zhongnan Community"}
    )
    station, wuchang, hotline = line.station, line.community, line.id

    operator = _signed_in(stack, station)
    for language, (emergency, served) in {
        "en": ("emergency help", "Callers served"),
        "zh": ("紧急求助", "来电人数"),
    }.items():
        operator.set_cookie("aidlink_lang", language)
        start = operator.get("/hotlines")
        assert start.status_code == 302 and start.location.endswith(f"/hotlines/{hotline}")
        page = operator.get(start.location)
        token = _token(page)
        body = page.get_data(True)
        assert 'href="/hotlines"' in body and "autofocus" in body
        assert "Zhongnan Community" in body and emergency in _text(page)
        # Minutes left out: named at the input, what was typed is kept.
        wrong = operator.post(
            start.location,
            data={"csrf_token": token, "category": "emergency", "community_org_id": wuchang.org_id},
        )
        assert wrong.status_code == 422 and 'id="f-minutes-error"' in wrong.get_data(True)
        assert f'value="{wuchang.org_id}" selected' in wrong.get_data(True)
        logged = operator.post(
            start.location,
            data={
                "csrf_token": token,
                "category": "emergency",
                "community_org_id": wuchang.org_id,
                "minutes": "6",
            },
        )
        assert logged.status_code == 302
        operator.post(
            start.location, data={"csrf_token": token, "category": "information", "minutes": "2"}
        )
        page = operator.get(start.location)
        assert served in _text(page)
        assert len(re.findall(r'data-call="', page.get_data(True))) == (
            2 if language == "en" else 4
        )
    report = client.get(f"/api/v1/community/hotlines/{hotline}/report", headers=station.headers)
    assert report.get_json()["by_category"]["emergency"] == 2

    # Taken further from the log: an emergency call becomes an urgent case in the
    # caller's community; a counselling call is booked, and a caller who speaks of
    # harming themselves is given the crisis line at once.
    calls = f"/api/v1/community/hotlines/{hotline}/calls"
    emergency = next(
        c
        for c in client.get(calls, headers=station.headers).get_json()["items"]
        if c["category"] == "emergency"
    )
    counselling = client.post(
        calls, json={"category": "counselling", "minutes": 12}, headers=station.headers
    ).get_json()
    page = operator.get(f"/hotlines/{hotline}")
    assert f'id="call-{counselling["id"]}"' in page.get_data(True)
    token = _token(page)
    case = operator.post(
        f"/hotlines/{hotline}/calls/{emergency['id']}/case",
        data={"csrf_token": token, "kind": "medicine_pickup", "summary": "Insulin, 3-402"},
    )
    assert case.status_code == 302
    booked = operator.post(
        f"/hotlines/{hotline}/calls/{counselling['id']}/booking",
        data={
            "csrf_token": token,
            "topic": "anxiety",
            "languages": "zh",
            "contact": "+86 139 0271 5566",
            "text": CRISIS_TEXT,
        },
    )
    assert booked.status_code == 302
    page = operator.get(booked.location)
    assert "12356" in _text(page) and "已转为个案" in _text(page)
    assert "Insulin" not in _text(page) and "+86 139" not in _text(page)
    # Goods to the door come from the community's stock: none yet, so nothing is made
    # and the refusal names what is lacking.
    second = next(
        c["id"]
        for c in client.get(calls, headers=station.headers).get_json()["items"]
        if c["category"] == "emergency" and c["id"] != emergency["id"]
    )
    refused = operator.post(
        f"/hotlines/{hotline}/calls/{second}/delivery",
        data={"csrf_token": token, "household.room": "101", "items.vegetables": "4"},
    )
    assert refused.status_code == 302
    assert "社区库存中的蔬菜不够：要 4 斤，库存 0 斤。" in _text(operator.get(refused.location))
    # Nobody else's call log: another organisation is answered as if it did not exist.
    other = _signed_in(stack, verified(client, boss, kind="hospital"))
    assert 'href="/hotlines"' not in other.get("/").get_data(True)
    assert other.get(f"/hotlines/{hotline}").status_code == 404
