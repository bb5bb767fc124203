"""The catalogue as plain dicts, in the shape the API returns."""

from __future__ import annotations

from typing import Any

from shared.catalog.convert import PACKS, unit_factor
from shared.catalog.items import CATALOG_VERSION, ITEMS
from shared.catalog.lookup import get_unit
from shared.catalog.model import Item, Names


def names_as_dict(names: Names) -> dict[str, str]:
    return {"zh": names.zh, "en": names.en}


def unit_as_dict(item: Item, code: str) -> dict[str, Any]:
    """Unit ``code`` as entered for ``item``.

    ``base_units`` is how many base units one of it is, or None when that is stated
    per line; ``requires`` lists the per-line inputs it needs ("pack_size",
    "bottle_volume_ml", "density_g_per_l").
    """
    unit = get_unit(code)
    base_kind = get_unit(item.base_unit).kind
    requires: list[str] = []
    if code in PACKS:
        requires.append("pack_size")
    if code == "bottle" or (code in PACKS and base_kind == "volume"):
        requires.append("bottle_volume_ml")
    if unit.kind == "mass" and base_kind == "volume":
        requires.append("density_g_per_l")
    return {
        "code": unit.code,
        "names": names_as_dict(unit.names),
        "kind": unit.kind,
        "base_units": None if requires else int(unit_factor(item.code, code)),
        "requires": requires,
    }


def item_as_dict(item: Item) -> dict[str, Any]:
    """``item`` as the API shows it: code, names (zh, en), category, base_unit,
    units, standards (code, names), perishable and shelf_life_days."""
    return {
        "code": item.code,
        "names": names_as_dict(item.names),
        "category": item.category,
        "base_unit": item.base_unit,
        "units": [unit_as_dict(item, code) for code in item.units],
        "standards": [{"code": s.code, "names": names_as_dict(s.names)} for s in item.standards],
        "perishable": item.perishable,
        "shelf_life_days": item.shelf_life_days,
    }


def catalog_as_dict() -> dict[str, Any]:
    """The whole catalogue: its version and every item, in catalogue order."""
    return {"version": CATALOG_VERSION, "items": [item_as_dict(i) for i in ITEMS]}
