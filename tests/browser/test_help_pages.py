"""Help from people's time in headless Chromium: someone books a session through the
public form on a phone, in Chinese, and is shown the crisis line at once; a helper's
day on a phone, in English (confirm a session, then close it with a short note once it
has started); and a hotline operator's call log by keyboard alone, in Chinese (the
category by its number, Tab, the community, Tab, the minutes, Enter, and the cursor is
back at the category)."""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.browser.conftest import Shots
from tests.browser.test_community_pages import _phone
from tests.browser.test_flows import _sign_in
from tests.support.auth import admin, coordinator, verified
from tests.support.community import hotline
from tests.support.stack import Stack

HELP = "/api/v1/community/help"
BIG = 44


def _thumb_sized(locator: Any) -> None:
    box = locator.bounding_box()
    assert box is not None and box["height"] >= BIG and box["width"] >= BIG


def test_someone_books_a_session_on_a_phone_and_is_shown_the_crisis_line(
    stack: Stack, live: str, browser: Any, shots: Shots
) -> None:
    stack.start_worker("community")
    page = _phone(browser, live, "zh")
    page.goto("/")
    page.get_by_role("link", name="寻求帮助").tap()
    page.wait_for_url("**/help")
    assert "12356" in page.locator(".crisis-note").inner_text()
    page.get_by_label("担忧和焦虑").check()
    page.fill('[name="text"]', "最近每天都睡不着，我不想活了")
    page.fill('[name="contact"]', "+86 138 0000 0000")
    page.select_option('[name="urgency"]', "soon")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    page.fill('[name="preferred_times.0.day"]', tomorrow)
    page.fill('[name="preferred_times.0.from"]', "19:00")
    page.fill('[name="preferred_times.0.to"]', "21:00")
    shots.take(page, "ask-zh")
    send = page.get_by_role("button", name="提交我的请求")
    _thumb_sized(send)
    with page.expect_navigation():
        send.tap()
    line = page.locator("[data-crisis-line]")
    assert line.get_attribute("role") == "alert"
    assert "请现在就拨打 12356" in line.inner_text()
    assert page.locator('a[href="tel:12356"]').is_visible()
    shots.take(page, "asked-crisis-zh")
    page.context.close()


def test_a_helpers_day_on_a_phone_confirm_then_close_with_a_note(
    stack: Stack, live: str, browser: Any, shots: Shots
) -> None:
    from services.community.models import HelpSession

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    hospital = verified(client, boss, kind="hospital")
    helper = client.post(
        f"{HELP}/helpers",
        json={
            "name": "Wang Li",
            "kinds": ["counsellor"],
            "topics": ["medical_worker"],
            "languages": ["zh", "en"],
            "daily_limit": 4,
            "availability": [{"weekday": d, "start": "00:00", "end": "23:59"} for d in range(7)],
            "qualifications": [{"kind": "counsellor certificate", "evidence": "No. 2020-4471"}],
        },
        headers=hospital.headers,
    ).get_json()
    client.post(
        f"{HELP}/helpers/{helper['id']}/verify",
        json={"decision": "verified"},
        headers=office.headers,
    )
    asked = client.post(
        f"{HELP}/requests",
        json={"topic": "medical_worker", "languages": ["en"], "contact": "+86 137 2222 2222"},
    )
    assert asked.status_code == 201
    run = client.post(f"{HELP}/runs", headers=office.headers).get_json()
    booked = client.post(f"{HELP}/runs/{run['id']}/approve", headers=office.headers).get_json()
    session_id = booked["items"][0]["id"]

    page = _phone(browser, live, "en")
    _sign_in(page, hospital.email)
    page.get_by_role("link", name="My sessions").tap()
    page.wait_for_url("**/help/sessions")
    card = page.locator(f'li[data-session="{session_id}"]')
    assert "a medical worker under strain" in card.inner_text()
    assert "waiting for your answer" in card.inner_text()
    confirm = card.get_by_role("button", name="Confirm")
    _thumb_sized(confirm)
    shots.take(page, "day-en")
    with page.expect_navigation():
        confirm.tap()
    assert "Confirmed: the session is yours." in page.locator(".flash").inner_text()
    assert card.get_attribute("data-status") == "confirmed"

    # The session has begun: the helper closes it with a short note.
    now = datetime.now(UTC)
    with stack.runtime("community").unit_of_work() as session:
        row = session.get(HelpSession, uuid.UUID(session_id))
        assert row is not None
        row.starts_at, row.ends_at = now - timedelta(minutes=45), now + timedelta(minutes=5)
        row.held_start = row.starts_at
    page.reload()
    card.locator('[name="note"]').fill("Talked through the night shifts; sleeping better.")
    close = card.get_by_role("button", name="Close the session")
    _thumb_sized(close)
    with page.expect_navigation():
        close.tap()
    assert "Closed. Thank you." in page.locator(".flash").inner_text()
    assert card.get_attribute("data-status") == "held"
    shots.take(page, "day-closed-en")
    page.context.close()


def test_an_operator_logs_calls_by_keyboard_alone(
    stack: Stack, live: str, browser: Any, shots: Shots
) -> None:
    from tests.browser.conftest import new_page

    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    line = hotline(stack, client, boss, name="武昌求助热线", community={"name_zh": "中南社区"})
    station = line.station

    page = new_page(browser, live, "zh")
    _sign_in(page, station.email)
    page.get_by_role("link", name="来电登记").click()
    page.wait_for_url(f"**/hotlines/{line.id}")
    assert page.evaluate("document.activeElement.id") == "f-category"
    shots.take(page, "call-log-zh")
    # An emergency call from 中南社区, six minutes: number, Tab, the community's number
    # (a Chinese name cannot be typed into a list), Tab, minutes.
    option = page.locator("#f-community_org_id option", has_text="中南社区").inner_text()
    page.keyboard.press("3")
    page.keyboard.press("Tab")
    page.keyboard.press(option.split(" · ")[0])
    page.keyboard.press("Tab")
    page.keyboard.type("6")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "已登记：紧急求助，6 分钟。" in page.locator(".flash").inner_text()
    assert page.evaluate("document.activeElement.id") == "f-category"
    # The next call straight away: information, community not known, two minutes.
    page.keyboard.press("1")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.type("2")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    rows = page.locator("tr[data-call]")
    assert rows.count() == 2
    assert rows.first.get_attribute("data-category") == "information"
    assert "不详" in rows.first.inner_text()
    assert "中南社区" in rows.nth(1).inner_text()
    assert page.locator('[data-figure="calls"]').inner_text() == "2"
    assert page.locator('[data-figure="emergency"]').inner_text() == "1"
    assert page.locator('[data-figure="fulfilled"]').inner_text() == "1 个中已办结 0 个"
    shots.take(page, "call-log-logged-zh")
    page.context.close()
