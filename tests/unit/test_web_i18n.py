"""The web UI's Chinese catalogue: every message translated, the committed .mo the
compiled form of the .po, and the API's messages with numbers matched by pattern."""

# ruff: noqa: RUF001 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask_babel import Babel

from services.gateway.web import TRANSLATIONS
from services.gateway.web.i18n import api_message

CATALOGUE = Path(TRANSLATIONS) / "zh_Hans" / "LC_MESSAGES"


def test_every_message_is_translated_and_the_mo_is_up_to_date() -> None:
    with (CATALOGUE / "messages.po").open("rb") as f:
        po = read_po(f)
    with (CATALOGUE / "messages.mo").open("rb") as f:
        mo = read_mo(f)
    untranslated = [m.id for m in po if m.id and not m.string]
    assert untranslated == []
    assert {m.id: m.string for m in po if m.id} == {m.id: m.string for m in mo if m.id}


def test_api_messages_in_chinese() -> None:
    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    Babel(app, locale_selector=lambda: "zh_Hans")
    with app.test_request_context(headers={"Cookie": "aidlink_lang=zh"}):
        assert api_message("Missing data for required field.") == "此项为必填项。"
        assert api_message("Use between 10 and 256 characters.") == "请填写 10 到 256 个字符。"
        assert api_message("Length must be between 3 and 2000.") == "长度应在 3 到 2000 之间。"
        # Unknown messages are shown as the API wrote them.
        assert api_message("Something new.") == "Something new."


def test_the_template_line_row_is_labelled_like_the_numbered_rows() -> None:
    from services.gateway.web.labels import label

    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    Babel(app, locale_selector=lambda: "zh_Hans")
    with app.test_request_context():
        for field in ("item", "quantity", "unit", "density_g_per_l"):
            numbered = label(f"lines.0.{field}")
            assert numbered != f"lines.0.{field}"
            assert label(f"lines.__N__.{field}") == numbered


def test_a_refusal_names_the_status_in_the_pages_language() -> None:
    """A 409 that names a status (a plan superseded, a need fulfilled) reads the status
    in Chinese on a Chinese page, never the API's word for it."""
    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    Babel(app, locale_selector=lambda: "zh_Hans")
    refusals = {
        "The run is superseded; only a preview can be approved.": "已被取代",
        "The run is applied; only a preview can be edited.": None,
        "The need is fulfilled; it cannot be reconfirmed.": "已满足",
        "The need is cancelled; it cannot be changed.": None,
        "The need is fulfilled; it cannot be cancelled.": "已满足",
        "The pledge is cancelled; it cannot be changed.": None,
        "The shipment is delivered; only a received shipment's receipt is corrected.": None,
        "The shipment is received; it cannot be changed.": None,
        "A shipment that is delivered cannot become in_transit.": None,
    }
    with app.test_request_context(headers={"Cookie": "aidlink_lang=zh"}):
        for english, status in refusals.items():
            shown = api_message(english)
            assert not re.search(r"[A-Za-z]", shown), (english, shown)
            if status:
                assert f"“{status}”" in shown, (english, shown)


def test_why_two_registrations_look_alike_reads_in_the_pages_language() -> None:
    from services.gateway.web.i18n import duplicate_reason

    app = Flask(__name__)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = TRANSLATIONS
    Babel(app, locale_selector=lambda: "zh_Hans")
    with app.test_request_context():
        assert duplicate_reason("similar name (0.91) in the same city") == (
            "名称相似（0.91），同一城市"
        )
        assert duplicate_reason("same normalised name and region") == "名称相同，同一地区"
        assert duplicate_reason("same normalised name in the same province") == (
            "名称相同，同一省份"
        )
        # Anything else is shown as the check wrote it.
        assert duplicate_reason("something new") == "something new"
