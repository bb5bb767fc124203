"""Hostile input through the gateway: oversized and deeply nested bodies, wrong content
types, unicode edge cases and injection attempts in every text field. Each is a clear
4xx naming the field, and nothing is stored; ordinary text that merely looks like SQL
is stored as text and harms nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from services.dispatch.models import Need
from services.donations.models import Pledge
from services.gateway.models import Organisation
from shared.input_guard import MAX_DEPTH, problems_in
from tests.support.auth import Account, register
from tests.support.stack import Stack

NASTY = {
    "nul": "Wuhan\x00Union Hospital",
    "escape": "ward \x1b[31m3",
    "c1 control": "ward \x85 3",
    "script": "<script>alert(1)</script>",
    "image": "Union <img src=x onerror=alert(1)>",
    "comment": "<!-- hidden -->",
    "closing tag": "ward 3</td><td>",
}
FINE = {
    "sql": "St. Mary's'; DROP TABLE pledges; --",
    "emoji and cjk": "口罩🙂 武汉协和医院",
    "combining": "Cafe\u0301 de\u0301po\u0302t",
    "full width": "\uff2b\uff2e\uff19\uff15 口罩",
    "zero width joiner": "👩\u200d⚕️ team",
    "right to left": "مستشفى ووهان",
    "comparison": "a < b and c > d",
    "lines": "line one\nline two\ttabbed",
}


def _pledge(text: str) -> dict[str, Any]:
    return {
        "lines": [
            {
                "item": "mask",
                "quantity": "10",
                "unit": "piece",
                "restrictions": {"note": text},
            }
        ],
        "origin": {"region": "4403", "address": text},
        "notes": text,
    }


def _need(text: str) -> dict[str, Any]:
    return {
        "lines": [{"item": "mask", "quantity": "10", "unit": "piece", "urgency": "high"}],
        "location": {"region": "420103", "address": text},
        "notes": text,
    }


def _registration(text: str) -> dict[str, Any]:
    return {
        "organisation": {"name": text, "kind": "hospital", "region": "420103", "address": text},
        "user": {
            "email": f"u-{uuid.uuid4().hex[:8]}@example.org",
            "password": "a <b>password</b> \x01 may hold anything",
            "name": text,
        },
    }


def _count(stack: Stack, service: str, model: Any) -> int:
    with stack.runtime(service).session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# (endpoint, who posts, body from text, the text fields' paths, service and table)
FORMS: list[tuple[str, str, Callable[[str], dict[str, Any]], set[str], str, Any]] = [
    (
        "/api/v1/pledges",
        "donor",
        _pledge,
        {"notes", "origin.address", "lines.0.restrictions.note"},
        "donations",
        Pledge,
    ),
    ("/api/v1/needs", "hospital", _need, {"notes", "location.address"}, "dispatch", Need),
    (
        "/api/v1/auth/register",
        "anonymous",
        _registration,
        {"organisation.name", "organisation.address", "user.name"},
        "gateway",
        Organisation,
    ),
]


@pytest.fixture
def people(stack: Stack) -> dict[str, Account]:
    client = stack.client()
    return {
        "donor": register(client, kind="foundation", region="4403"),
        "hospital": register(client, kind="hospital"),
    }


def _headers(people: dict[str, Account], who: str) -> dict[str, str]:
    return {} if who == "anonymous" else dict(people[who].headers)


def test_every_text_field_refuses_control_characters_and_markup(
    stack: Stack, people: dict[str, Account]
) -> None:
    client = stack.client()
    for url, who, body, paths, service, model in FORMS:
        before = _count(stack, service, model)
        for label, text in NASTY.items():
            answer = client.post(url, json=body(text), headers=_headers(people, who))
            assert answer.status_code == 422, (url, label, answer.json)
            assert answer.mimetype == "application/problem+json"
            assert set(answer.json["errors"]) == paths, (url, label, answer.json)
        assert _count(stack, service, model) == before, url


def test_lone_surrogates_and_bad_encodings_are_refused(
    stack: Stack, people: dict[str, Account]
) -> None:
    client = stack.client()
    raw = json.dumps(_pledge("x")).replace('"notes": "x"', '"notes": "ward \\ud800 3"')
    answer = client.post(
        "/api/v1/pledges",
        data=raw,
        content_type="application/json",
        headers=people["donor"].headers,
    )
    assert answer.status_code == 422
    assert "notes" in answer.json["errors"]
    utf8 = json.dumps(_pledge("Café"), ensure_ascii=False).encode("utf-8")
    latin1 = utf8.replace(b"Caf\xc3\xa9", b"Caf\xe9")
    answer = client.post(
        "/api/v1/pledges",
        data=latin1,
        content_type="application/json",
        headers=people["donor"].headers,
    )
    assert answer.status_code == 400
    assert answer.json["type"].endswith("bad-encoding")
    assert _count(stack, "donations", Pledge) == 0


def test_ordinary_text_that_looks_like_code_is_stored_as_text(
    stack: Stack, people: dict[str, Account]
) -> None:
    client = stack.client()
    for label, text in FINE.items():
        created = client.post(
            "/api/v1/pledges", json=_pledge(text), headers=people["donor"].headers
        )
        assert created.status_code == 201, (label, created.json)
        shown = client.get(
            f"/api/v1/pledges/{created.json['id']}", headers=people["donor"].headers
        ).json
        assert shown["notes"] == text
        assert shown["origin"]["address"] == text
        assert shown["lines"][0]["restrictions"]["note"] == text
    # The table the SQL-looking text named is still there, with every pledge in it.
    assert _count(stack, "donations", Pledge) == len(FINE)


def test_oversized_deep_and_mistyped_bodies_get_a_clear_4xx(
    stack: Stack, people: dict[str, Account]
) -> None:
    client = stack.client()
    headers = people["donor"].headers
    huge = json.dumps(_pledge("x" * (26 * 1024 * 1024)))
    answer = client.post(
        "/api/v1/pledges", data=huge, content_type="application/json", headers=headers
    )
    assert answer.status_code == 413
    assert answer.mimetype == "application/problem+json"

    deep = "[" * 100_000 + "]" * 100_000
    answer = client.post(
        "/api/v1/pledges", data=deep, content_type="application/json", headers=headers
    )
    assert answer.status_code == 400
    assert answer.json["type"].endswith("json-too-deep")
    nested: Any = "x"
    for _ in range(MAX_DEPTH + 1):
        nested = {"n": nested}
    answer = client.post("/api/v1/pledges", json={**_pledge("x"), "notes": nested}, headers=headers)
    assert answer.status_code == 400

    broken = client.post(
        "/api/v1/pledges", data='{"lines": [', content_type="application/json", headers=headers
    )
    assert broken.status_code == 400
    assert broken.mimetype == "application/problem+json"

    for content_type in ("text/plain", "application/xml", "application/x-www-form-urlencoded"):
        answer = client.post(
            "/api/v1/pledges",
            data=json.dumps(_pledge("x")),
            content_type=content_type,
            headers=headers,
        )
        assert 400 <= answer.status_code < 500, (content_type, answer.status_code)
        assert answer.mimetype == "application/problem+json"
    assert _count(stack, "donations", Pledge) == 0


def test_the_guard_names_nested_fields_and_spares_passwords() -> None:
    found = problems_in(
        {
            "lines": [{"note": "fine"}, {"note": "<b>bold</b>"}],
            "password": "<anything>\x00",
            "refresh_token": "<x>",
            "name": "ok",
        }
    )
    assert found == {
        "lines.1.note": ["Text may not hold HTML or other markup; write it as plain text."]
    }
