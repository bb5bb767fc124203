"""Beijing time everywhere, marked (README: "How things read"): a time the web UI shows
reads in Beijing time and says so, in both languages; a day is Beijing's day; no
template shows a time as the API answers it (UTC), and a page showing times unmarked
says beside them what they are in."""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask_babel import Babel

from services.gateway.web import TRANSLATIONS
from services.gateway.web.i18n import api_message
from services.gateway.web.times import clock_time, local_date, local_time

TEMPLATES = Path(TRANSLATIONS).parent / "templates"
# A time or day from the API: a field ending in _at, or an ETA.
TIME_FIELD = re.compile(r"\b\w+_at\b|\.eta\b|\[\"eta\"\]")
CONVERTED = re.compile(r"\b(local_time|local_date|clock_time)\(")
EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
# Quoted text inside an expression (a form field's name, a hint) is not a time.
QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


@pytest.fixture(params=["en", "zh"])
def language(request: pytest.FixtureRequest) -> Iterator[str]:
    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    Babel(app, locale_selector=lambda: "zh_Hans" if request.param == "zh" else "en")
    with app.test_request_context():
        yield request.param


def test_a_time_reads_in_beijing_time_and_says_so(language: str) -> None:
    # 09:20 UTC is 17:20 in Beijing.
    shown = local_time("2020-02-03T09:20:00Z")
    assert (
        shown
        == {
            "en": "2020-02-03 17:20 (Beijing time)",
            "zh": "2020-02-03 17:20（北京时间）",
        }[language]
    )
    assert local_time("2020-02-03T17:20:00+08:00") == shown
    # Without a zone the API's times are UTC.
    assert local_time("2020-02-03T09:20:00") == shown
    assert clock_time("2020-02-03T09:20:00Z") == "2020-02-03 17:20"
    assert local_time(None) == local_time("") == ""


def test_a_day_is_the_day_in_beijing(language: str) -> None:
    # A need posted at 20:00 UTC on the 3rd is the 4th's in Wuhan.
    assert local_date("2020-02-03T20:00:00Z") == "2020-02-04"
    assert local_date("2020-02-03T10:00:00Z") == "2020-02-03"
    assert local_date(None) == ""


def test_no_template_shows_a_time_as_the_api_answers_it() -> None:
    raw = []
    for template in sorted(TEMPLATES.rglob("*.html")):
        text = template.read_text()
        for expression in EXPRESSION.findall(text):
            code = QUOTED.sub("", expression)
            if TIME_FIELD.search(code) and not CONVERTED.search(code):
                raw.append(f"{template.relative_to(TEMPLATES)}: {{{{{expression.strip()}}}}}")
        if "clock_time(" in text:
            # Times shown unmarked have the page's word for them beside them.
            assert "Beijing time (UTC+8)" in text, template.name
    assert raw == []


def test_times_in_the_apis_messages_read_in_beijing_time(language: str) -> None:
    ahead = api_message("2020-02-03T18:00:00+08:00 is ahead of 2020-02-03T09:20:00Z.")
    before = api_message(
        "2020-02-03T08:00:00Z is before the shipment was created (2020-02-03T17:00:00+08:00)."
    )
    if language == "zh":
        assert ahead == "2020-02-03 18:00（北京时间） 晚于当前时间。"
        assert (
            before
            == "2020-02-03 16:00（北京时间） 早于货运的创建时间（2020-02-03 17:00（北京时间））。"
        )
    else:
        assert ahead == "2020-02-03 18:00 (Beijing time) is later than now."
        assert before == (
            "2020-02-03 16:00 (Beijing time) is before the shipment was created "
            "(2020-02-03 17:00 (Beijing time))."
        )
