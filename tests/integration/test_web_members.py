"""The Members page for an organisation's admins, in both languages, and the page an
invited person opens to join."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.support.auth import PASSWORD, Account, admin, verified
from tests.support.community import member
from tests.support.stack import Stack

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')
IDEMPOTENCY = re.compile(rb'name="idempotency_key" value="([^"]+)"')


def _signed_in(stack: Stack, email: str, language: str = "en") -> Any:
    client = stack.client()
    client.set_cookie("aidlink_lang", language)
    page = client.get("/signin")
    token = CSRF.search(page.data).group(1).decode()  # type: ignore[union-attr]
    done = client.post("/signin", data={"csrf_token": token, "email": email, "password": PASSWORD})
    assert done.status_code == 302
    return client


def _form(page: Any) -> dict[str, str]:
    assert page.status_code in (200, 201), page.data[:800]
    csrf = CSRF.search(page.data)
    key = IDEMPOTENCY.search(page.data)
    assert csrf
    found = {"csrf_token": csrf.group(1).decode()}
    if key:
        found["idempotency_key"] = key.group(1).decode()
    return found


def _invite(browser: Any, email: str) -> str:
    page = browser.get("/org/members")
    done = browser.post(
        "/org/members", data={**_form(page), "email": email, "name": "Volunteer Wang"}
    )
    assert done.status_code == 201, done.data[:1500]
    found = re.search(rb'value="(https?://[^"]+/join/[^"]+)"', done.data)
    assert found, done.data
    return html.unescape(found.group(1).decode())


def test_an_admin_invites_changes_and_removes_members_on_the_members_page(
    stack: Stack,
) -> None:
    client = stack.client()
    boss = admin(stack.apps["gateway"], client)
    committee: Account = verified(client, boss, kind="community_committee", region="420102")

    for language, email, joined_text in (
        ("en", "wang@example.org", b"You have joined"),
        ("zh", "zhao@example.org", "你已加入".encode()),
    ):
        browser = _signed_in(stack, committee.email, language)
        page = browser.get("/org/members")
        assert page.status_code == 200
        heading = b"Members" if language == "en" else "成员".encode()
        assert heading in page.data and committee.email.encode() in page.data
        link = _invite(browser, email)
        token = link.rsplit("/join/", 1)[1]
        listed = browser.get("/org/members").data
        assert email.encode() in listed and token.encode() not in listed

        # The invited person opens the link, sets a password and joins.
        person = stack.client()
        person.set_cookie("aidlink_lang", language)
        join = person.get(f"/join/{token}")
        assert join.status_code == 200 and email.encode() in join.data
        short = person.post(
            f"/join/{token}", data={**_form(join), "name": "Wang", "password": "short"}
        )
        assert short.status_code == 422 and b'id="f-password-error"' in short.data
        done = person.post(
            f"/join/{token}", data={**_form(join), "name": "Wang", "password": PASSWORD}
        )
        assert done.status_code == 302, done.data[:800]
        assert joined_text in person.get(done.headers["Location"]).data
        assert person.get(f"/join/{token}").status_code == 404

        # The member is listed; the admin lets them manage members, then removes them.
        members = client.get(
            f"/api/v1/orgs/{committee.org_id}/members", headers=committee.headers
        ).json["items"]
        new = next(m for m in members if m["email"] == email)
        page = browser.get("/org/members")
        promoted = browser.post(
            f"/org/members/{new['user_id']}/roles", data={**_form(page), "manages": "yes"}
        )
        assert promoted.status_code == 302
        member_api = client.get(
            f"/api/v1/orgs/{committee.org_id}/members", headers=committee.headers
        ).json["items"]
        assert next(m for m in member_api if m["email"] == email)["roles"] == [
            "org_admin",
            "recipient",
        ]
        removed = browser.post(f"/org/members/{new['user_id']}/remove", data=_form(page))
        assert removed.status_code == 302
        left = client.get(
            f"/api/v1/orgs/{committee.org_id}/members", headers=committee.headers
        ).json["items"]
        assert email not in {m["email"] for m in left}

    # The last admin is not removed: the page says why.
    browser = _signed_in(stack, committee.email)
    page = browser.get("/org/members")
    last = browser.post(f"/org/members/{committee.user_id}/remove", data=_form(page))
    assert last.status_code == 409 and b"last admin" in last.data

    # A member who does not manage members is refused the page.
    plain = member(stack, client, committee, "Plain member")
    refused = _signed_in(stack, plain.email).get("/org/members")
    assert refused.status_code == 403 and b"admins" in refused.data
