"""The community's pages in headless Chromium on a phone (390x844, touch), in both
languages: a building leader fills their building's order sheet by keyboard alone
(tab from cell to cell, Enter saves), meets an over-limit error at its cell, and pastes
rows from a spreadsheet; a volunteer carries the delivery list door to door, marking
one household delivered and the next not at home. One community serves both
languages."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Shots
from tests.browser.test_flows import LANGUAGES, _sign_in
from tests.support.auth import admin
from tests.support.community import Community, add_households, community, order_round, post
from tests.support.community_stock import receive
from tests.support.stack import Stack

TEXT = {
    "en": {
        "saved": "Orders saved for 6 household(s).",
        "pasted": "Orders saved for 2 household(s).",
        "over": "12 is more than the 10 a household may order.",
        "over_named": "1-101 · Vegetables",
        "enter": "Enter orders: Building 1",
        "vegetables": "4 jin (2 kg)",
        "delivered": "{door}: delivered.",
        "not_home": "{door}: not home.",
        "Delivered": "Delivered",
        "Not home": "Not home",
        "header": "Household\tVegetables\tRice\tEggs",
    },
    "zh": {
        "saved": "已保存 6 户的订购。",
        "pasted": "已保存 2 户的订购。",
        "over": "12 超过了每户限购的 10。",
        "over_named": "1-101 · 蔬菜",
        "enter": "录入订购：Building 1",  # noqa: RUF001 - the page's own full-width colon
        "vegetables": "8 斤 (4 千克)",
        "delivered": "{door}：已送达。",  # noqa: RUF001
        "not_home": "{door}：不在家。",  # noqa: RUF001
        "Delivered": "已送达",
        "Not home": "不在家",
        "header": "户\t蔬菜\t大米\t鸡蛋",
    },
}


HTML_LANG = {"en": "en", "zh": "zh-Hans"}


def _phone(browser: Any, base_url: str, language: str) -> Any:
    """A phone's screen and touch, in ``language`` (the phone's own language picks the
    page's)."""
    context = browser.new_context(
        base_url=base_url,
        locale="zh-CN" if language == "zh" else "en-GB",
        viewport={"width": 390, "height": 844},
        has_touch=True,
        is_mobile=True,
    )
    context.set_default_timeout(30_000)
    return context.new_page()


def _place(stack: Stack) -> tuple[Any, Community, dict[str, Any]]:
    stack.start_worker("gateway")
    stack.start_worker("community")
    client = stack.client()
    place = community(stack, client, admin(stack.apps["gateway"], client))
    add_households(client, place)
    return client, place, order_round(client, place)


def _sheet(client: Any, place: Community, round_id: str) -> list[dict[str, Any]]:
    answer = client.get(
        f"{place.base}/rounds/{round_id}/orders?building_id={place.buildings[0]}",
        headers=place.committee.headers,
    )
    return list(answer.json["items"])


def test_a_building_leader_fills_the_order_sheet_by_keyboard_and_paste_on_a_phone(
    stack: Stack, live: str, browser: Any, shots: Shots
) -> None:
    client, place, made = _place(stack)
    for number, language in enumerate(LANGUAGES):
        text = TEXT[language]
        page = _phone(browser, live, language)
        _sign_in(page, place.leaders[0].email)
        page.goto("/community")
        assert page.locator("html").get_attribute("lang") == HTML_LANG[language]
        page.get_by_role("link", name=text["enter"]).tap()
        page.wait_for_url(f"**/orders/{place.buildings[0]}")
        assert page.locator("tr[data-household]").count() == 6
        shots.take(page, f"sheet-{language}")

        # Keyboard only: the first household's cells in turn, then Enter saves.
        first = page.locator('[name="rows.0.items.vegetables"]')
        first.focus()
        page.keyboard.press("Control+a")
        page.keyboard.type("12")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#f-rows-0-items-vegetables-error").inner_text() == text["over"]
        assert text["over_named"] in page.locator(".error-summary").inner_text()
        shots.take(page, f"sheet-error-{language}")
        page.locator('[name="rows.0.items.vegetables"]').focus()
        page.keyboard.press("Control+a")
        page.keyboard.type(str(5 + number))
        page.keyboard.press("Tab")  # rice
        page.keyboard.press("Control+a")
        page.keyboard.type("1")
        page.keyboard.press("Tab")  # cooking oil
        page.keyboard.type("1")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert text["saved"] in page.locator(".flash").inner_text()
        assert _sheet(client, place, made["id"])[0]["items"] == {
            "vegetables": 5 + number,
            "rice": 1,
            "cooking_oil": 1,
            "eggs": 10,
        }

        # Rows pasted from a spreadsheet, headed in the page's language.
        table = f"{text['header']}\n1-102\t{2 + number}\t\t6\n2-101\t3\t2\t\n"
        page.fill('[name="text"]', table)
        with page.expect_navigation():
            page.locator("form.paste-form button[type=submit]").tap()
        assert text["pasted"] in page.locator(".flash").inner_text()
        assert page.locator('[name="rows.1.items.vegetables"]').input_value() == str(2 + number)
        assert page.locator('[name="rows.3.items.rice"]').input_value() == "2"
        shots.take(page, f"sheet-pasted-{language}")
        page.context.close()
    sheet = _sheet(client, place, made["id"])
    assert sheet[1]["items"] == {"vegetables": 3, "eggs": 6}
    assert sheet[3]["items"] == {"vegetables": 3, "rice": 2}


def test_a_volunteer_marks_deliveries_door_to_door_on_a_phone(
    stack: Stack, live: str, browser: Any, shots: Shots
) -> None:
    client, place, made = _place(stack)
    post(client, f"{place.base}/rounds/{made['id']}/confirm", {}, place.committee, status=200)
    receive(stack, place, {"vegetables": 24_000, "rice": 22_000})
    post(client, f"{place.base}/distributions", {"rule": "as_ordered"}, place.committee)
    first = place.buildings[0]
    for number, language in enumerate(LANGUAGES):
        text = TEXT[language]
        page = _phone(browser, live, language)
        _sign_in(page, place.volunteer.email)
        page.goto("/community")
        assert page.locator("html").get_attribute("lang") == HTML_LANG[language]
        page.locator(f'a[data-deliveries="{first}"]').tap()
        page.wait_for_url("**/community/deliveries?building=*")
        pending = page.locator('li[data-status="pending"]')
        assert pending.count() == 5 - 2 * number
        door = pending.first
        if number == 0:
            assert "Call before knocking; deaf" in door.locator("[data-note]").inner_text()
        else:
            assert text["vegetables"] in door.inner_text()  # 1-201's 8 jin
        # Big enough for a thumb.
        for button in door.locator(".outcome-buttons button").all():
            box = button.bounding_box()
            assert box is not None and box["height"] >= 44 and box["width"] >= 44
        shots.take(page, f"deliveries-{language}")

        household = door.get_attribute("data-household")
        with page.expect_navigation():
            door.get_by_role("button", name=text["Delivered"], exact=True).tap()
        assert text["delivered"].format(door=household) in page.locator(".flash").inner_text()
        assert (
            page.locator(f'li[data-household="{household}"]').get_attribute("data-status")
            == "delivered"
        )

        door = page.locator('li[data-status="pending"]').first
        household = door.get_attribute("data-household")
        door.locator('[name="note"]').fill("Away at the clinic")
        with page.expect_navigation():
            door.get_by_role("button", name=text["Not home"], exact=True).tap()
        assert text["not_home"].format(door=household) in page.locator(".flash").inner_text()
        done = page.locator(f'li[data-household="{household}"]')
        assert done.get_attribute("data-status") == "not_home"
        assert "Away at the clinic" in done.inner_text()
        shots.take(page, f"deliveries-marked-{language}")
        page.context.close()
    statuses = sorted(
        d["status"]
        for d in client.get(
            f"{place.base}/deliveries?building_id={first}", headers=place.committee.headers
        ).json["items"]
    )
    assert statuses == ["delivered", "delivered", "not_home", "not_home", "pending"]
