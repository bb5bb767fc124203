"""The web UI's form handling through Flask's test client: CSRF on every form,
problems from the API shown next to the field they name (in the page's language),
the language switch, and sign-in state kept in an HttpOnly cookie."""

from __future__ import annotations

import re
from typing import Any

from tests.support.auth import PASSWORD, register
from tests.support.stack import Stack

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


def _token(client: Any, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = CSRF.search(page.data)
    assert found, page.data[:300]
    return found.group(1).decode()


def _field_error(html: bytes, name: str) -> str:
    found = re.search(rb'id="f-' + name.replace(".", "-").encode() + rb'-error">([^<]*)<', html)
    return found.group(1).decode() if found else ""


def test_forms_need_the_csrf_token(stack: Stack) -> None:
    client = stack.client()
    refused = client.post("/signin", data={"email": "a@b.org", "password": PASSWORD})
    assert refused.status_code == 400
    assert b"<html" in refused.data  # a page, not an API problem
    forged = client.post(
        "/signin", data={"email": "a@b.org", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert forged.status_code == 400
    # The API itself keeps taking bearer tokens without any CSRF token.
    assert client.get("/api/v1/catalog/items").status_code == 200


def test_api_errors_land_next_to_their_fields_in_the_users_language(stack: Stack) -> None:
    client = stack.client()
    token = _token(client, "/register")
    body = {
        "csrf_token": token,
        "organisation.name": "Test Foundation",
        "organisation.kind": "foundation",
        "organisation.region": "42x",
        "user.name": "Test",
        "user.email": "not-an-email",
        "user.password": "short",
    }
    page = client.post("/register", data=body)
    assert page.status_code == 422
    assert _field_error(page.data, "organisation.region") == "Use a 2, 4 or 6 digit region code."
    assert _field_error(page.data, "user.email") == "Not a valid email address."
    assert _field_error(page.data, "user.password") == "Use between 10 and 256 characters."
    # What was typed stays, but never the password.
    assert b'value="Test Foundation"' in page.data
    assert b"short" not in page.data
    client.set_cookie("aidlink_lang", "zh")
    page = client.post("/register", data=body)
    assert _field_error(page.data, "organisation.region") == "请填写 2、4 或 6 位行政区划代码。"
    assert _field_error(page.data, "user.password") == "请填写 10 到 256 个字符。"
    # Nothing was written: the corrected form registers at once.
    again = dict(
        body,
        **{
            "organisation.region": "420103",
            "user.email": "t@example.org",
            "user.password": PASSWORD,
        },
    )
    assert client.post("/register", data=again).status_code == 302


def test_sign_in_keeps_tokens_in_an_httponly_cookie_and_sign_out_revokes(stack: Stack) -> None:
    client = stack.client()
    donor = register(client, kind="foundation", region="4403")
    token = _token(client, "/signin")
    wrong = client.post(
        "/signin", data={"csrf_token": token, "email": donor.email, "password": "x" * 12}
    )
    assert wrong.status_code == 401
    assert b"The email or the password is wrong." in wrong.data
    signed = client.post(
        "/signin", data={"csrf_token": token, "email": donor.email, "password": PASSWORD}
    )
    assert signed.status_code == 302
    cookie = signed.headers["Set-Cookie"]
    assert "aidlink_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    pending = client.get("/pending")
    assert pending.status_code == 200 and b"waiting for a coordinator" in pending.data
    # A donor is not a coordinator: the page says so, and the API would refuse anyway.
    assert client.get("/coordinator/verification").status_code == 403
    # Pledges posted from the page go through the API as the donor.
    token = _token(client, "/pledges/new")
    bad = client.post(
        "/pledges/new",
        data={
            "csrf_token": token,
            "lines.0.item": "mask",
            "lines.0.quantity": "1.5",
            "lines.0.unit": "piece",
            "origin.region": "4403",
        },
    )
    assert bad.status_code == 422
    assert _field_error(bad.data, "lines.0.quantity")
    listed = client.get("/api/v1/pledges", headers=donor.headers).get_json()
    assert listed["items"] == []
    key = "form-key-1"
    for _ in range(2):  # a double submission is answered once
        done = client.post(
            "/pledges/new",
            data={
                "csrf_token": token,
                "idempotency_key": key,
                "lines.0.item": "mask",
                "lines.0.quantity": "100",
                "lines.0.unit": "piece",
                "origin.region": "4403",
            },
        )
        assert done.status_code == 302
    listed = client.get("/api/v1/pledges", headers=donor.headers).get_json()
    assert len(listed["items"]) == 1
    token = _token(client, "/pledges")
    out = client.post("/signout", data={"csrf_token": token})
    assert out.status_code == 302
    assert client.get("/pledges").status_code == 302  # back to sign-in
