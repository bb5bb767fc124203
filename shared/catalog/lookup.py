"""Finding items, standards and units from codes and from what people write."""

from __future__ import annotations

import re
import unicodedata

from shared.catalog.items import ITEMS, UNITS, CatalogDataError
from shared.catalog.model import CatalogError, CatalogField, Item, Standard, Unit

# Hyphens and dashes people type between a standard's number and its year.
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"), "-")
_NAME_NOISE = re.compile(r"[\s_\-]+")
_SPACES = re.compile(r"\s+")
_YEAR = re.compile(r"-(?:19|20)\d\d$")

MAX_TEXT_LENGTH = 200


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_DASHES).casefold().strip()


def name_key(text: str) -> str:
    """``text`` as compared against names: NFKC (so full-width letters, digits and
    punctuation become ASCII), case-folded, without spaces, hyphens or underscores."""
    return _NAME_NOISE.sub("", _fold(text))


def unit_key(text: str) -> str:
    """``text`` as compared against unit spellings: NFKC, case-folded, single-spaced,
    without a trailing full stop ("Pcs." is "pcs")."""
    return _SPACES.sub(" ", _fold(text)).rstrip(".").strip()


def standard_key(text: str) -> str:
    """A standard code as compared: NFKC, upper case, without spaces, dashes as "-"."""
    return _SPACES.sub("", _fold(text)).upper()


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _text(value: object, field: CatalogField) -> str:
    if not isinstance(value, str):
        raise CatalogError(field, f"the {field} must be text, not {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise CatalogError(field, f"the {field} is longer than {MAX_TEXT_LENGTH} characters")
    return value


# Indexes -------------------------------------------------------------------------------

_ITEMS: dict[str, Item] = {i.code: i for i in ITEMS}
_UNITS: dict[str, Unit] = {u.code: u for u in UNITS}


def _build_unit_index() -> dict[str, str]:
    index: dict[str, str] = {}
    # Codes and aliases must each mean one unit.
    for unit in UNITS:
        for spelling in (unit.code, *unit.aliases):
            key = unit_key(spelling)
            if index.setdefault(key, unit.code) != unit.code:
                raise CatalogDataError(f"unit spelling {spelling!r} means two units")
    # Display names yield to those: a kit and a box are both 盒 in Chinese, and 盒 is
    # listed as a box, which test kits remap to a kit.
    for unit in UNITS:
        for spelling in (unit.names.zh, unit.names.en):
            index.setdefault(unit_key(spelling), unit.code)
    return index


def _build_name_index() -> dict[str, tuple[str, str | None]]:
    index: dict[str, tuple[str, str | None]] = {}

    def add(spelling: str, target: tuple[str, str | None]) -> None:
        key = name_key(spelling)
        if not key:
            raise CatalogDataError(f"empty name for {target}")
        if index.setdefault(key, target) != target:
            raise CatalogDataError(f"name {spelling!r} means both {index[key]} and {target}")

    for item in ITEMS:
        for spelling in (item.code, item.names.zh, item.names.en, *item.aliases):
            add(spelling, (item.code, None))
        for s in item.standards:
            target = (item.code, s.code)
            for spelling in (s.code, _YEAR.sub("", s.code), s.names.zh, s.names.en, *s.aliases):
                add(spelling, target)
    return index


_UNIT_INDEX = _build_unit_index()
_NAME_INDEX = _build_name_index()


def describe(item: Item) -> str:
    """How messages name an item: its English name and its code."""
    return f"{item.names.en} ({item.code})"


# Items ---------------------------------------------------------------------------------


def items() -> tuple[Item, ...]:
    """Every item, in catalogue order (by category, as listed in the module docs)."""
    return ITEMS


def get_item(code: str) -> Item:
    """The item with ``code`` (case and surrounding spaces ignored)."""
    text = _text(code, "item")
    item = _ITEMS.get(text.strip().casefold())
    if item is None:
        raise CatalogError(
            "item", f"unknown item {_shown(text)}; the items are {', '.join(_ITEMS)}"
        )
    return item


def _find_name(text: str) -> tuple[str, str | None] | None:
    key = name_key(text)
    found = _NAME_INDEX.get(key)
    if found is None and key.endswith("s"):
        found = _NAME_INDEX.get(key[:-1])
    return found


def resolve(text: str) -> tuple[Item, Standard | None]:
    """The item, and the standard if the text names one, that ``text`` refers to.

    ``text`` may be an item code, an item's Chinese or English name or a known
    alias of it, or a standard's code or name: "医用外科口罩", "Surgical masks" and
    "YY 0469-2011" all give (mask, YY0469-2011); "口罩" gives (mask, None). Case,
    spaces, hyphens, full-width forms and an English plural "s" are ignored.
    """
    value = _text(text, "item")
    found = _find_name(value)
    if found is None:
        raise CatalogError("item", f"no item in catalogue is called {_shown(value.strip())}")
    item = _ITEMS[found[0]]
    if found[1] is None:
        return item, None
    return item, next(s for s in item.standards if s.code == found[1])


def resolve_item(text: str) -> Item:
    """The item ``text`` refers to (see ``resolve``)."""
    return resolve(text)[0]


def check_standard(item_code: str, standard_code: str) -> Standard:
    """The standard of ``item_code`` that ``standard_code`` names.

    Codes compare leniently: case, spaces and the kind of dash are ignored
    ("gb 19083—2010" is GB19083-2010), and a code without its year matches
    ("YY 0469" is YY0469-2011); a different year does not. A standard's name or
    alias ("医用外科口罩", "KN95") is accepted too.
    """
    item = get_item(item_code)
    text = _text(standard_code, "standard")
    key = standard_key(text)
    for s in item.standards:
        code = standard_key(s.code)
        if key in (code, _YEAR.sub("", code)):
            return s
    found = _find_name(text)
    if found is not None and found[0] == item.code and found[1] is not None:
        return next(s for s in item.standards if s.code == found[1])
    if not item.standards:
        raise CatalogError(
            "standard",
            f"{describe(item)} has no standards in this catalogue; {_shown(text)} is not one",
        )
    known = ", ".join(f"{s.code} ({s.names.en})" for s in item.standards)
    raise CatalogError(
        "standard", f"{_shown(text)} is not a standard of {describe(item)}; known: {known}"
    )


# Units ---------------------------------------------------------------------------------


def units() -> tuple[Unit, ...]:
    """Every unit, in catalogue order."""
    return UNITS


def get_unit(code: str) -> Unit:
    """The unit with exactly ``code`` (see ``normalise_unit`` for what people write)."""
    unit = _UNITS.get(code) if isinstance(code, str) else None
    if unit is None:
        raise CatalogError("unit", f"unknown unit code {code!r}; use normalise_unit for text")
    return unit


def accepted_units(item: Item) -> str:
    """The units of ``item``, for messages: "piece, box or case"."""
    names = list(item.units)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def normalise_unit(text: str, item_code: str | None = None) -> str:
    """The code of the unit ``text`` spells: "pcs", "只" and "个" are "piece", "公斤"
    is "kg", "L" and "升" are "l", "斤" is "jin", and so on.

    With ``item_code``, spellings that mean something else for that item are mapped
    onto it ("件" of protective suits is a set, "盒" of test kits a kit). Whether the
    item accepts the unit is checked by ``to_base``, not here.
    """
    item = get_item(item_code) if item_code is not None else None
    value = _text(text, "unit")
    code = _UNIT_INDEX.get(unit_key(value))
    if code is None:
        hint = f" for {describe(item)}; use {accepted_units(item)}" if item else ""
        raise CatalogError("unit", f"unknown unit {_shown(value.strip())}{hint}")
    if item is not None:
        code = dict(item.unit_remap).get(code, code)
    return code
