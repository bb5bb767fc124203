"""Languages of the web UI: English and Simplified Chinese.

The language is the ``aidlink_lang`` cookie the switch sets, else the browser's
Accept-Language. The API answers in English (the spreadsheet importer excepted), so
its messages are translated here: each known message is a msgid of the UI's own
catalogue, and messages with numbers in them are matched by pattern first.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request
from flask_babel import gettext, lazy_gettext

from services.gateway.web.times import local_time
from shared.catalog.export import item_as_dict
from shared.catalog.items import ITEMS

LANGUAGE_COOKIE = "aidlink_lang"
# The UI's language codes and the Babel locale each one renders with.
LOCALES = {"en": "en", "zh": "zh_Hans"}
HTML_LANG = {"en": "en", "zh": "zh-Hans"}


def current_language() -> str:
    chosen = request.cookies.get(LANGUAGE_COOKIE)
    if chosen in LOCALES:
        return chosen
    return request.accept_languages.best_match(("zh", "en"), default="en") or "en"


def select_locale() -> str:
    return LOCALES[current_language()]


# Catalogue ---------------------------------------------------------------------------

CATALOG: dict[str, dict[str, Any]] = {item.code: item_as_dict(item) for item in ITEMS}


def item_name(code: str | None) -> str:
    item = CATALOG.get(code or "")
    if item is None:
        return code or ""
    return str(item["names"][current_language()])


def org_name(org: dict[str, Any]) -> str:
    """An organisation's name in the page's language where it registered one."""
    own = org.get("name_zh") if current_language() == "zh" else org.get("name_en")
    return str(own or org.get("name") or "")


def standard_name(item: str | None, code: str | None) -> str:
    """A standard as people know it: "GB19083-2010 医用防护口罩" / "... medical protective"."""
    if not code:
        return ""
    for standard in (CATALOG.get(item or "") or {}).get("standards", []):
        if standard["code"] == code:
            return f"{code} {standard['names'][current_language()]}"
    return code


def base_unit(code: str | None) -> str | None:
    """The base unit of a catalogue item: quantities from the API are in it."""
    item = CATALOG.get(code or "")
    return str(item["base_unit"]) if item else None


def unit_name(code: str | None) -> str:
    for item in CATALOG.values():
        for unit in item["units"]:
            if unit["code"] == code:
                return str(unit["names"][current_language()])
    return code or ""


def catalog_items() -> list[dict[str, Any]]:
    """Items with their names in the page's language, for pickers."""
    language = current_language()
    return [
        {
            "code": code,
            "name": item["names"][language],
            "base_unit": item["base_unit"],
            "units": [{"code": u["code"], "name": u["names"][language]} for u in item["units"]],
            "standards": [
                {"code": s["code"], "name": s["names"][language]} for s in item["standards"]
            ],
        }
        for code, item in CATALOG.items()
    ]


def line_options() -> dict[str, list[tuple[str, str]]]:
    """Choices for a pledge or need line: items, units and standards by name."""
    language = current_language()
    units: dict[str, str] = {}
    standards: dict[str, str] = {}
    for item in CATALOG.values():
        for unit in item["units"]:
            units.setdefault(unit["code"], unit["names"][language])
        for standard in item["standards"]:
            name = standard["names"][language]
            standards.setdefault(
                standard["code"], f"{name} ({standard['code']})" if name else standard["code"]
            )
    return {
        "item_options": [(code, item["names"][language]) for code, item in CATALOG.items()],
        "unit_options": list(units.items()),
        "standard_options": list(standards.items()),
        "urgency_options": [(u, word(u)) for u in ("critical", "high", "normal")],
    }


# Words the API answers with: statuses, kinds, urgencies ----------------------------------

WORDS: dict[str, Any] = {
    # organisations
    "pending": lazy_gettext("pending verification"),
    "verified": lazy_gettext("verified"),
    "suspended": lazy_gettext("suspended"),
    "merged": lazy_gettext("merged"),
    "foundation": lazy_gettext("foundation"),
    "company": lazy_gettext("company"),
    "fund": lazy_gettext("fund"),
    "hospital": lazy_gettext("hospital"),
    "field_hospital": lazy_gettext("field hospital"),
    "community_committee": lazy_gettext("community committee"),
    "civil_affairs_bureau": lazy_gettext("civil affairs bureau"),
    "care_home": lazy_gettext("care home"),
    "logistics_company": lazy_gettext("logistics company"),
    "coordinator_office": lazy_gettext("coordinator office"),
    # pledges, lines and needs
    "open": lazy_gettext("open"),
    "draft": lazy_gettext("draft"),
    "available": lazy_gettext("available"),
    "partially_reserved": lazy_gettext("partially reserved"),
    "partially_shipped": lazy_gettext("partially shipped"),
    # kinds of place
    "place_warehouse": lazy_gettext("warehouse"),
    "place_loading_bay": lazy_gettext("loading bay"),
    "place_collection_point": lazy_gettext("collection point"),
    "place_office": lazy_gettext("office"),
    "place_other": lazy_gettext("other place"),
    "partially_delivered": lazy_gettext("partially delivered"),
    "reserved": lazy_gettext("reserved"),
    "shipped": lazy_gettext("shipped"),
    "delivered": lazy_gettext("delivered"),
    "cancelled": lazy_gettext("cancelled"),
    "expired": lazy_gettext("expired"),
    "partially_allocated": lazy_gettext("partially allocated"),
    "allocated": lazy_gettext("allocated"),
    "fulfilled": lazy_gettext("fulfilled"),
    "active": lazy_gettext("active"),
    # urgency
    "critical": lazy_gettext("critical"),
    "high": lazy_gettext("high"),
    "normal": lazy_gettext("normal"),
    # import jobs and matching runs
    "queued": lazy_gettext("queued"),
    "running": lazy_gettext("running"),
    "succeeded": lazy_gettext("succeeded"),
    "failed": lazy_gettext("failed"),
    "preview": lazy_gettext("preview"),
    "applied": lazy_gettext("applied"),
    "superseded": lazy_gettext("superseded"),
    "empty": lazy_gettext("nothing to match"),
    "all_or_nothing": lazy_gettext("all or nothing"),
    "valid_rows": lazy_gettext("only the valid rows"),
    # shipments
    "planned": lazy_gettext("planned"),
    "ready_for_pickup": lazy_gettext("ready for pickup"),
    "picked_up": lazy_gettext("picked up"),
    "in_transit": lazy_gettext("in transit"),
    "out_for_delivery": lazy_gettext("out for delivery"),
    "received": lazy_gettext("received"),
    "held": lazy_gettext("held at a checkpoint"),
    "delayed": lazy_gettext("delayed"),
    "damaged": lazy_gettext("damaged"),
    "lost": lazy_gettext("lost"),
    "returned": lazy_gettext("returned"),
    "source_api": lazy_gettext("entered"),
    "source_batch": lazy_gettext("scanned"),
    "source_receipt": lazy_gettext("by the receipt"),
    "source_system": lazy_gettext("by the system"),
    "batch_applied": lazy_gettext("applied"),
    "batch_late": lazy_gettext("late, kept for the record"),
    "batch_duplicate": lazy_gettext("duplicate"),
    "batch_refused": lazy_gettext("refused"),
}

# A receipt's state: "pending" means something else for an organisation.
RECEIPT_WORDS: dict[str, Any] = {
    "pending": lazy_gettext("not yet confirmed"),
    "confirmed": lazy_gettext("confirmed"),
    "corrected": lazy_gettext("corrected"),
}


def receipt_word(value: Any) -> str:
    found = RECEIPT_WORDS.get(str(value))
    return str(found) if found is not None else str(value or "")


# Why two registrations look alike, as the duplicate check says it.
_LOOK_ALIKE = re.compile(
    r"^(same normalised name|similar name \((\S+)\))(?: and| in the same) "
    r"(region|city|province)$"
)
_SAME_PLACE = {
    "region": lazy_gettext("same region"),
    "city": lazy_gettext("same city"),
    "province": lazy_gettext("same province"),
}


def duplicate_reason(reason: str | None) -> str:
    """Why a registration looks like another ("similar name (0.91) in the same city") in
    the page's language."""
    found = _LOOK_ALIKE.match(reason or "")
    if not found:
        return reason or ""
    place = str(_SAME_PLACE[found.group(3)])
    if found.group(2):
        return gettext("Similar name (%(score)s), %(place)s", score=found.group(2), place=place)
    return gettext("Same name, %(place)s", place=place)


def overdue_reason(reason: str | None) -> str:
    """The API's overdue reason (``past_eta: expected by ...``, ``stale: no update
    since ...``) in the page's language, with times in Beijing time."""
    if not reason:
        return ""
    kind, _sep, rest = reason.partition(": ")
    if kind == "past_eta":
        found = re.match(r"^expected by (\S+), still (\w+)$", rest)
        if found:
            return gettext(
                "expected by %(when)s, still %(status)s",
                when=local_time(found.group(1).rstrip(",")),
                status=word(found.group(2)),
            )
    if kind == "stale":
        found = re.match(r"^no update since (\S+)$", rest)
        if found:
            return gettext("no update since %(when)s", when=local_time(found.group(1)))
    return reason


def word(value: Any) -> str:
    """A status, kind or urgency in the page's language."""
    if value is None:
        return ""
    found = WORDS.get(str(value))
    return str(found) if found is not None else str(value)


# API messages ---------------------------------------------------------------------------


def N_(message: str) -> str:  # the name message extractors look for
    """Marks a msgid for extraction; it is translated where it is used."""
    return message


# Messages the API builds with numbers in them, and the msgid each becomes.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^Use between (\d+) and (\d+) characters\.$"),
        N_("Use between %(min)s and %(max)s characters."),
    ),
    (re.compile(r"^Longer than maximum length (\d+)\.$"), N_("At most %(max)s characters.")),
    (re.compile(r"^Shorter than minimum length (\d+)\.$"), N_("At least %(min)s characters.")),
    (
        re.compile(r"^Length must be between (\d+) and (\d+)\.$"),
        N_("Must be between %(min)s and %(max)s long."),
    ),
    (
        re.compile(r"^Must be greater than or equal to (\S+) and less than or equal to (\S+)\.$"),
        N_("Between %(min)s and %(max)s."),
    ),
    (re.compile(r"^Must be greater than or equal to (\S+)\.$"), N_("At least %(min)s.")),
    (
        re.compile(r"^(\d+) is not a region code of GB/T 2260 \(province, city or county\)\.$"),
        N_("%(code)s is not a region code of GB/T 2260 (province, city or county)."),
    ),
    (re.compile(r"^Must be one of: .*\.$"), N_("Choose one of the offered values.")),
    (re.compile(r"^Use one of: .*\.$"), N_("Choose one of the offered values.")),
    (
        re.compile(r"^A shipment that is (\w+) cannot become (\w+)\.$"),
        N_("A shipment that is %(current)s cannot become %(requested)s."),
    ),
    (
        re.compile(r"^The shipment is (\w+); nothing follows that\.$"),
        N_("The shipment is %(current)s; nothing follows that."),
    ),
    (
        re.compile(
            r"^The shipment is (\w+); only a shipment not yet picked up can be cancelled\.$"
        ),
        N_("The shipment is %(current)s; only a shipment not yet picked up can be cancelled."),
    ),
    (
        re.compile(r"^The shipment is (\w+); its receipt is confirmed once it is delivered\.$"),
        N_("The shipment is %(current)s; its receipt is confirmed once it is delivered."),
    ),
    (
        re.compile(r"^The shipment is (\w+); it cannot be changed\.$"),
        N_("The shipment is %(current)s; it cannot be changed."),
    ),
    (
        re.compile(r"^The shipment is (\w+); only a received shipment's receipt is corrected\.$"),
        N_("The shipment is %(current)s; only a received shipment's receipt is corrected."),
    ),
    (
        re.compile(r"^The run is (\w+); only a preview can be approved\.$"),
        N_("The plan is %(current)s; only a preview can be approved."),
    ),
    (
        re.compile(r"^The run is (\w+); only a preview can be edited\.$"),
        N_("The plan is %(current)s; only a preview can be edited."),
    ),
    (
        re.compile(r"^The need is (\w+); it cannot be changed\.$"),
        N_("The need is %(current)s; it cannot be changed."),
    ),
    (
        re.compile(r"^The need is (\w+); it cannot be reconfirmed\.$"),
        N_("The need is %(current)s; it cannot be reconfirmed."),
    ),
    (
        re.compile(r"^The need is (\w+); it cannot be cancelled\.$"),
        N_("The need is %(current)s; it cannot be cancelled."),
    ),
    (
        re.compile(r"^The pledge is (\w+); it cannot be changed\.$"),
        N_("The pledge is %(current)s; it cannot be changed."),
    ),
    (
        re.compile(r"^(.+) \(current status: (\w+); requested: (\w+)\)$"),
        N_("%(why)s (now %(current)s; asked for %(requested)s)"),
    ),
    (re.compile(r"^No shipment (\S+)\.$"), N_("No such shipment: %(id)s.")),
    (re.compile(r"^(\S+) is ahead of (\S+)\.$"), N_("%(when)s is later than now.")),
    (
        re.compile(r"^(\S+) is before the shipment was created \((\S+)\)\.$"),
        N_("%(when)s is before the shipment was created (%(created)s)."),
    ),
    (
        re.compile(r"^accepted \+ damaged \+ short is (\d+); the line carried (\d+)\.$"),
        N_("Accepted, damaged and short add up to %(total)s; the line carried %(quantity)s."),
    ),
    (
        re.compile(r"^Report every line of the shipment; missing: (.*)$"),
        N_("Report every line of the shipment."),
    ),
    (
        re.compile(r"^This shipment's receipt is already confirmed.*$"),
        N_("This shipment's receipt is already confirmed."),
    ),
    (
        re.compile(r"^A (\w+) is not a logistics company\.$"),
        N_("A %(kind)s is not a logistics company."),
    ),
    (re.compile(r"^The organisation is (\w+)\.$"), N_("The organisation is %(status)s.")),
    (
        re.compile(r"^its allocations were consolidated into shipment (\S+)$"),
        N_("its allocations were consolidated into shipment %(shipment)s"),
    ),
    (re.compile(r"^Missing column (\w+)\.$"), N_("The column %(column)s is missing.")),
    (re.compile(r"^The CSV needs the header .*$"), N_("The first row must name the columns.")),
    (
        re.compile(r"^A batch holds at most (\d+) rows; split it\.$"),
        N_("A batch holds at most %(max)s rows; split it."),
    ),
    (re.compile(r"^More than (\d+) rows\.$"), N_("More than %(max)s rows.")),
    (re.compile(r"^Your organisation is (\w+); .*$"), N_("Your organisation is %(status)s.")),
]
_NAMES = {
    "its allocations were consolidated into shipment %(shipment)s": ("shipment",),
    "%(code)s is not a region code of GB/T 2260 (province, city or county).": ("code",),
    "Use between %(min)s and %(max)s characters.": ("min", "max"),
    "At most %(max)s characters.": ("max",),
    "At least %(min)s characters.": ("min",),
    "Must be between %(min)s and %(max)s long.": ("min", "max"),
    "Between %(min)s and %(max)s.": ("min", "max"),
    "At least %(min)s.": ("min",),
    "Choose one of the offered values.": (),
    "A shipment that is %(current)s cannot become %(requested)s.": ("current", "requested"),
    "The shipment is %(current)s; nothing follows that.": ("current",),
    "The shipment is %(current)s; only a shipment not yet picked up can be cancelled.": (
        "current",
    ),
    "The shipment is %(current)s; its receipt is confirmed once it is delivered.": ("current",),
    "The shipment is %(current)s; it cannot be changed.": ("current",),
    "The shipment is %(current)s; only a received shipment's receipt is corrected.": ("current",),
    "The plan is %(current)s; only a preview can be approved.": ("current",),
    "The plan is %(current)s; only a preview can be edited.": ("current",),
    "The need is %(current)s; it cannot be changed.": ("current",),
    "The need is %(current)s; it cannot be reconfirmed.": ("current",),
    "The need is %(current)s; it cannot be cancelled.": ("current",),
    "The pledge is %(current)s; it cannot be changed.": ("current",),
    "%(why)s (now %(current)s; asked for %(requested)s)": ("why", "current", "requested"),
    "No such shipment: %(id)s.": ("id",),
    "%(when)s is later than now.": ("when", "now"),
    "%(when)s is before the shipment was created (%(created)s).": ("when", "created"),
    "Accepted, damaged and short add up to %(total)s; the line carried %(quantity)s.": (
        "total",
        "quantity",
    ),
    "Report every line of the shipment.": (),
    "This shipment's receipt is already confirmed.": (),
    "A %(kind)s is not a logistics company.": ("kind",),
    "The organisation is %(status)s.": ("status",),
    "The column %(column)s is missing.": ("column",),
    "The first row must name the columns.": (),
    "A batch holds at most %(max)s rows; split it.": ("max",),
    "More than %(max)s rows.": ("max",),
    "Your organisation is %(status)s.": ("status",),
}

# The fixed messages the pages may meet, marked so they are extracted into the
# catalogue; the API's English text is the msgid.
KNOWN_MESSAGES = (
    lazy_gettext("Missing data for required field."),
    lazy_gettext("Field may not be null."),
    lazy_gettext("Not a valid email address."),
    lazy_gettext("Not a valid integer."),
    lazy_gettext("Not a valid number."),
    lazy_gettext("Not a valid date."),
    lazy_gettext("Not a valid URL."),
    lazy_gettext("Not a valid UUID."),
    lazy_gettext("Not a valid string."),
    lazy_gettext("Must not be your email address."),
    lazy_gettext("Already registered."),
    lazy_gettext("Use a 2, 4 or 6 digit region code."),
    lazy_gettext("Digits only."),
    lazy_gettext("The request has invalid fields."),
    lazy_gettext("The email or the password is wrong."),
    lazy_gettext("An account with this email already exists; sign in instead."),
    lazy_gettext("Unknown field."),
    lazy_gettext("Not a catalogue item."),
    lazy_gettext("Only coordinators may do this."),
    lazy_gettext("Not a valid datetime."),
    lazy_gettext("Not a valid aware datetime."),
    lazy_gettext("Not a valid boolean."),
    lazy_gettext("Text may not hold HTML or other markup; write it as plain text."),
    lazy_gettext("The request has invalid fields."),
    lazy_gettext("The time has no zone."),
    lazy_gettext("The update cannot have happened in the future."),
    lazy_gettext("The update is dated before the shipment existed."),
    lazy_gettext("A shipment is received only through the recipient's receipt."),
    lazy_gettext("A shipment is planned only by consolidation."),
    lazy_gettext("The shipment carries nothing; it cannot leave."),
    lazy_gettext("The row is not valid."),
    lazy_gettext("This shipment is not yours to update."),
    lazy_gettext("Only the logistics company assigned, or a coordinator, updates it."),
    lazy_gettext("Must be 0 or more."),
    lazy_gettext("Not a line of this shipment."),
    lazy_gettext("This line is already reported above; report each line once."),
    lazy_gettext("The receipt does not match the shipment."),
    lazy_gettext("Only the recipient organisation confirms what it received."),
    lazy_gettext("The logistics company cannot be assigned."),
    lazy_gettext("The dispatch service does not know this organisation (yet)."),
    lazy_gettext("Only coordinators assign shipments."),
    lazy_gettext("The CSV is not UTF-8."),
    lazy_gettext("Send UTF-8 text."),
    lazy_gettext("Digits only: a region code or its prefix."),
    lazy_gettext("Must not be before 'from'."),
    # Notes the system writes in a shipment's history.
    lazy_gettext("consolidated on reservation"),
    lazy_gettext("consolidated by a coordinator"),
    lazy_gettext(
        "The quantity reported damaged or short has been allocated again since; "
        "it cannot be taken back now."
    ),
)


def api_message(message: str) -> str:
    """``message`` from the API in the page's language (as is when unknown)."""
    for pattern, msgid in _PATTERNS:
        found = pattern.match(message)
        if found:
            values = {
                name: _part(value)
                for name, value in zip(_NAMES[msgid], found.groups(), strict=False)
            }
            return gettext(msgid, **values)
    return gettext(message)


# A time in an API message, as the API writes it (ISO 8601 with its offset).
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")


def _part(value: str) -> str:
    """A part of an API message: a status or kind as a word, a time in Beijing time
    (marked), a sentence translated."""
    if value in WORDS:
        return word(value)
    if _ISO_TIME.match(value):
        return local_time(value)
    if value.endswith("."):
        return api_message(value)
    return value


def field_errors(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """The API's errors per field, translated."""
    return {name: [api_message(m) for m in messages] for name, messages in errors.items()}
