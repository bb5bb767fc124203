"""The README's catalogue table is the catalogue: its version, each item's names, base
unit, the unit codes a line may be entered in (``jin``, not 斤), its standards and its
shelf life."""

from __future__ import annotations

import re
from pathlib import Path

from shared.catalog.items import CATALOG_VERSION, ITEMS

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(\w+)` \|(.*)\|$", re.M)


def _table() -> tuple[str, dict[str, list[str]]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("**The catalogue**", 1)[1].split("\n\n", 2)
    found = re.search(r"version `([^`]+)`", section[0])
    assert found, "the catalogue's version is not stated"
    rows = {
        m.group(1): [c.strip() for c in m.group(2).split("|")] for m in ROW.finditer(section[1])
    }
    return found.group(1), rows


def test_the_readme_states_the_catalogues_version() -> None:
    version, _rows = _table()
    assert version == CATALOG_VERSION


def test_each_item_has_its_row_as_the_catalogue_has_it() -> None:
    _version, rows = _table()
    assert set(rows) == {item.code for item in ITEMS}
    for item in ITEMS:
        zh, en, base, units, standards, shelf = rows[item.code]
        assert (zh, en, base) == (item.names.zh, item.names.en, item.base_unit), item.code
        assert units.split(", ") == list(item.units), item.code
        codes = [part.split(" (")[0] for part in standards.split(", ")] if standards else []
        assert codes == [s.code for s in item.standards], item.code
        days = f"{item.shelf_life_days} days" if item.shelf_life_days else ""
        assert shelf == days, item.code
