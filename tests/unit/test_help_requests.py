"""The rules of requests for help that need no database: a request that speaks of
self-harm, in either language, is a crisis; the contact's window around a session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.community.sessions.domain import (
    contact_window,
    in_priority_group,
    speaks_of_self_harm,
)


@pytest.mark.parametrize(
    "text",
    [
        "我不想活了",
        "最近总想自杀",
        "有时候想死",
        "I want to KILL   myself",
        "thinking about suicide",
        "I don\u2019t want to live anymore",
    ],
)
def test_words_of_self_harm_make_a_crisis(text: str) -> None:
    assert speaks_of_self_harm(text)


@pytest.mark.parametrize(
    "text", [None, "", "夜班太多\uff0c睡不着", "My mother is in hospital and I am scared"]
)
def test_other_words_do_not(text: str | None) -> None:
    assert not speaks_of_self_harm(text)


def test_the_contact_is_visible_a_quarter_hour_either_side_of_the_session() -> None:
    start = datetime(2026, 12, 7, 2, tzinfo=UTC)
    end = start + timedelta(minutes=50)
    assert contact_window(start, end) == (
        start - timedelta(minutes=15),
        end + timedelta(minutes=15),
    )


def test_the_priority_group_follows_the_rule() -> None:
    assert in_priority_group("patient", ("medical_staff", "patient"))
    assert not in_priority_group("patient_family", ("medical_staff",))
    assert not in_priority_group(None, ("medical_staff",))
