"""Each role's main flow in the web UI, in headless Chromium, in both languages:

- a donor registers, waits for verification, a coordinator verifies it in the queue
  (its look-alike side by side), the donor pledges two lines and uploads a
  spreadsheet whose progress runs to the end with its row errors shown in place;
- a hospital posts a need (an error shown next to its field first) and reconfirms it,
  and a coordinator previews a matching plan and approves it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from services.dispatch.models import Allocation
from tests.browser.conftest import Shots, new_page
from tests.support.auth import PASSWORD, admin, coordinator, register, verified
from tests.support.stack import Stack, eventually
from tests.support.world import supply_known

# What the pages say, per language, where a test checks the words themselves.
TEXT = {
    "en": {
        "pending": "waiting for a coordinator to verify it",
        "region_error": "Use a 2, 4 or 6 digit region code.",
        "number_error": "Not a valid number.",
        "evidence_error": "Must be between 3 and 2000 long.",
        "verified": "is verified.",
        "mask": "Mask",
        "fruit": "Fruit",
        "pledged": "Your pledge is recorded.",
        "succeeded": "succeeded",
        "posted": "Your need is posted.",
        "reconfirmed": "The need is reconfirmed",
        "urgency": "urgency critical",
        "approved": "The plan is approved",
        "applied": "applied",
        "changed": "The plan is changed.",
        "fill": "brings this need to 100%",
        "switch": "English",
    },
    "zh": {
        "pending": "正在等待协调员核验",
        "region_error": "请填写 2、4 或 6 位行政区划代码。",
        "number_error": "请输入数字。",
        "evidence_error": "长度应在 3 到 2000 之间。",
        "verified": "已通过核验。",
        "mask": "口罩",
        "fruit": "水果",
        "pledged": "您的认捐已记录。",
        "succeeded": "已完成",
        "posted": "您的需求已发布。",
        "reconfirmed": "需求已确认",
        "urgency": "紧急程度：紧急",  # noqa: RUF001 - the page's own full-width colon
        "approved": "方案已批准",
        "applied": "已执行",
        "changed": "方案已修改。",
        "fill": "使该需求满足至 100%",
        "switch": "中文",
    },
}
LANGUAGES = ["en", "zh"]


def _choose_language(page: Any, language: str) -> None:
    """The browser's language picks the page's; the switch changes it (and sticks)."""
    page.goto("/")
    if language == "zh" and page.locator("html").get_attribute("lang") != "zh-Hans":
        page.get_by_role("button", name="中文").click()
        page.wait_for_load_state()
    assert page.locator("html").get_attribute("lang") == ("zh-Hans" if language == "zh" else "en")


def _sign_in(page: Any, email: str) -> None:
    page.goto("/signin")
    page.fill('[name="email"]', email)
    page.fill('[name="password"]', PASSWORD)
    page.locator('form[action="/signin"] button[type="submit"]').click()
    page.wait_for_url(re.compile(r"/(\?.*)?$"))


def _error_of(page: Any, name: str) -> str:
    return str(page.locator(f"#f-{name.replace('.', '-')}-error").inner_text())


@pytest.mark.parametrize("language", LANGUAGES)
def test_donor_registers_is_verified_pledges_and_imports(
    stack: Stack, live: str, browser: Any, shots: Shots, language: str
) -> None:
    text = TEXT[language]
    stack.start_worker("donations")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    name = f"Wuhan Relief Foundation {uuid.uuid4().hex[:4]}"
    # A look-alike in the same city, so the queue shows a duplicate candidate.
    register(client, kind="foundation", name=name + " Co., Ltd.", region="420103")

    # The donor's browser is in English: a Chinese-speaking donor uses the switch.
    donor = new_page(browser, live, "en")
    _choose_language(donor, language)
    shots.take(donor, "home")
    donor.goto("/register")
    email = f"donor-{uuid.uuid4().hex[:8]}@example.org"
    donor.fill('[name="organisation.name"]', name)
    donor.select_option('[name="organisation.kind"]', "foundation")
    donor.fill('[name="organisation.region"]', "42x")
    donor.fill('[name="organisation.licence_number"]', "53420000MJH0000001")
    donor.fill('[name="user.name"]', "Li Wei")
    donor.fill('[name="user.email"]', email)
    donor.fill('[name="user.password"]', PASSWORD)
    donor.locator('form[action="/register"] button[type="submit"]').click()
    # The API's problem, in the page's language, next to the field it names.
    assert _error_of(donor, "organisation.region") == text["region_error"]
    assert donor.locator("#error-summary").is_visible()
    shots.take(donor, "register-error")
    donor.fill('[name="organisation.region"]', "420103")
    donor.fill('[name="user.password"]', PASSWORD)
    donor.locator('form[action="/register"] button[type="submit"]').click()
    donor.wait_for_url("**/pending")
    assert text["pending"] in donor.locator("main").inner_text()
    shots.take(donor, "pending")

    # The coordinator verifies it in the queue, its look-alike side by side.
    desk = new_page(browser, live, language)
    _choose_language(desk, language)
    _sign_in(desk, boss.email)
    desk.goto("/coordinator/verification")
    heading = desk.get_by_role("heading", name=name, exact=True)
    entry = desk.locator("section[data-org]", has=heading)
    assert entry.locator(".side-by-side").count() >= 1
    assert name + " Co., Ltd." in entry.locator(".side-by-side").first.inner_text()
    shots.take(desk, "verification-queue")
    entry.get_by_role("button", name=re.compile("Verify|通过核验")).click()
    heading = desk.get_by_role("heading", name=name, exact=True)
    entry = desk.locator("section[data-org]", has=heading)
    assert entry.locator("[id$='-evidence-error']").inner_text() == text["evidence_error"]
    entry.locator('[name="evidence"]').fill("licence 53420000MJH0000001 checked in the registry")
    entry.get_by_role("button", name=re.compile("Verify|通过核验")).click()
    assert text["verified"] in desk.locator(".flash").first.inner_text()
    assert desk.get_by_role("heading", name=name, exact=True).count() == 0
    shots.take(desk, "verified")

    # The donor, now verified, pledges two lines (a third added and removed again).
    donor.goto("/")
    assert donor.locator(".banner").count() == 0
    donor.goto("/pledges/new")
    donor.select_option('[name="lines.0.item"]', "mask")
    donor.select_option('[name="lines.0.standard"]', "GB19083-2010")
    donor.fill('[name="lines.0.quantity"]', "20")
    donor.select_option('[name="lines.0.unit"]', "box")
    donor.fill('[name="lines.0.pack_size"]', "50")
    add = donor.locator("[data-add-line]")
    add.click()
    add.click()
    assert donor.locator("[data-lines] [data-line]").count() == 3
    donor.locator("[data-lines] [data-line]").nth(2).locator("[data-remove-line]").click()
    assert donor.locator("[data-lines] [data-line]").count() == 2
    donor.select_option('[name="lines.1.item"]', "fruit")
    donor.fill('[name="lines.1.quantity"]', "1.5")
    donor.select_option('[name="lines.1.unit"]', "t")
    donor.fill('[name="origin.region"]', "420103")
    donor.fill('[name="origin.address"]', "Jiang'an District warehouse")
    shots.take(donor, "new-pledge")
    donor.locator('form[action="/pledges/new"] button[name="submit_pledge"]').click()
    donor.wait_for_url("**/pledges?created=*")
    assert text["pledged"] in donor.locator(".flash").inner_text()
    created = donor.locator("section.card.highlight")
    assert created.locator("tbody tr").count() == 2
    assert text["mask"] in created.inner_text() and text["fruit"] in created.inner_text()
    assert "1,000" in created.inner_text()  # 20 boxes of 50
    shots.take(donor, "my-pledges")

    # A spreadsheet with one bad row: the good rows go in, the bad one is shown.
    donor.goto("/pledges/import")
    content = (
        b"item,quantity,unit,origin_region,origin_address\n"
        b"mask,300,piece,420103,Jiang'an\n"
        b"gloves_exam,lots,pair,420103,Jiang'an\n"
        b"protective_suit,40,set,420103,Jiang'an\n"
    )
    donor.set_input_files(
        '[name="file"]', files=[{"name": "pledges.csv", "mimeType": "text/csv", "buffer": content}]
    )
    donor.select_option('[name="mode"]', "valid_rows")
    donor.select_option('main [name="language"]', language)
    shots.take(donor, "import-form")
    donor.locator('form[action="/pledges/import"] button[type="submit"]').click()
    donor.wait_for_url(re.compile(r"/pledges/imports/[0-9a-f-]+$"))
    # htmx polls the job until it is final; then the fragment stops asking.
    final = donor.locator('#import-progress[data-status="succeeded"]')
    final.wait_for(timeout=60_000)
    assert final.locator("progress").get_attribute("value") == "100"
    assert text["succeeded"] in final.locator(".job-status").inner_text()
    errors = final.locator("table.row-errors tbody tr")
    assert errors.count() == 1
    assert errors.first.locator("td").first.inner_text() == "3"
    assert final.get_attribute("hx-get") is None
    shots.take(donor, "import-done")
    donor.context.close()
    desk.context.close()


@pytest.mark.parametrize("language", LANGUAGES)
def test_hospital_posts_a_need_and_coordinator_approves_a_plan(
    stack: Stack, live: str, browser: Any, shots: Shots, language: str
) -> None:
    text = TEXT[language]
    stack.start_worker("donations")
    stack.start_worker("dispatch")
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    office = coordinator(client, boss)
    donor = verified(client, boss, kind="foundation", region="4403")
    hospital = verified(client, boss, kind="hospital", region="420103")
    response = client.post(
        "/api/v1/pledges",
        json={
            "lines": [{"item": "mask", "quantity": "1000", "unit": "piece"}],
            "origin": {"region": "440304", "address": "Futian"},
        },
        headers=donor.headers,
    )
    assert response.status_code == 201, response.json
    pledge = response.json
    eventually(lambda: supply_known(stack, pledge))

    # The hospital, on a phone, posts a need; a wrong quantity is shown at its field.
    ward = new_page(browser, live, language, mobile=True)
    _choose_language(ward, language)
    _sign_in(ward, hospital.email)
    ward.goto("/needs/new")
    ward.select_option('[name="lines.0.item"]', "mask")
    ward.fill('[name="lines.0.quantity"]', "many")
    ward.select_option('[name="lines.0.unit"]', "piece")
    ward.select_option('[name="lines.0.urgency"]', "critical")
    ward.fill('[name="location.region"]', "420103")
    ward.fill('[name="location.address"]', "Ward 3, Jiang'an")
    ward.locator('form[action="/needs/new"] button[name="submit_need"]').click()
    assert _error_of(ward, "lines.0.quantity") == text["number_error"]
    assert ward.locator('[name="lines.0.quantity"]').get_attribute("aria-invalid") == "true"
    shots.take(ward, "need-error")
    ward.fill('[name="lines.0.quantity"]', "300")
    ward.locator('form[action="/needs/new"] button[name="submit_need"]').click()
    ward.wait_for_url("**/needs?created=*")
    assert text["posted"] in ward.locator(".flash").inner_text()
    assert text["mask"] in ward.locator("section.card.highlight").inner_text()
    shots.take(ward, "my-needs")
    ward.locator("section.card.highlight form button").click()
    assert text["reconfirmed"] in ward.locator(".flash").inner_text()

    # The coordinator previews a plan for masks and approves it.
    desk = new_page(browser, live, language)
    _choose_language(desk, language)
    _sign_in(desk, office.email)
    desk.goto("/coordinator/matching")
    desk.check('input[name="items"][value="mask"]')
    shots.take(desk, "matching")
    desk.locator('form[action="/coordinator/matching"] button[type="submit"]').click()
    desk.wait_for_url(re.compile(r"/coordinator/matching/[0-9a-f-]+$"))
    plan = desk.locator("table.plan tbody tr")
    assert plan.count() == 1
    row = plan.first.inner_text()
    assert text["mask"] in row and "300" in row and text["urgency"] in row
    assert text["fill"] in row
    shots.take(desk, "matching-preview")
    # The coordinator sends 250 instead, then approves the edited plan.
    plan.first.locator('input[name="quantity"]').fill("250")
    plan.first.locator('form[action$="/edit"] button').click()
    assert text["changed"] in desk.locator(".flash").inner_text()
    assert "250" in desk.locator("table.plan tbody tr").first.inner_text()
    shots.take(desk, "matching-edited")
    desk.locator('form[action$="/approve"] button').click()
    assert text["approved"] in desk.locator(".flash").inner_text()
    assert text["applied"] in desk.locator("h1 .status").inner_text()
    shots.take(desk, "matching-approved")

    # The approval went through the saga: donations reserved the masks.
    def reserved() -> bool:
        with stack.runtime("dispatch").session_factory() as session:
            rows = session.query(Allocation).all()
            return len(rows) == 1 and rows[0].status == "reserved" and rows[0].quantity == 250

    eventually(reserved, timeout=60)
    ward.context.close()
    desk.context.close()
