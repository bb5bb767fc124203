"""The shapes of the catalogue: names, units, standards, items, and its one error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UnitKind = Literal["count", "mass", "volume", "pack"]

# Catalogue inputs a CatalogError may name.
CatalogField = Literal[
    "item", "unit", "quantity", "pack_size", "bottle_volume_ml", "density_g_per_l", "standard"
]


class CatalogError(ValueError):
    """An input the catalogue refuses; ``field`` names the offending input.

    ``field`` is one of ``"item"``, ``"unit"``, ``"quantity"``, ``"pack_size"``,
    ``"bottle_volume_ml"``, ``"density_g_per_l"`` or ``"standard"``, so an API or
    import can point at the right column; ``message`` says what is wrong in terms of
    the item and unit.
    """

    def __init__(self, field: CatalogField, message: str) -> None:
        super().__init__(message)
        self.field: CatalogField = field
        self.message = message

    def __repr__(self) -> str:
        return f"CatalogError({self.field!r}, {self.message!r})"


@dataclass(frozen=True)
class Names:
    """A name in Chinese and in English."""

    zh: str
    en: str


@dataclass(frozen=True)
class Unit:
    """A unit a quantity may be entered in.

    ``factor`` is the number of grams (``kind == "mass"``) or millilitres
    (``kind == "volume"``) in one of this unit; it is None for counts, whose units do
    not convert into one another, and for packs, whose size is stated per line.
    ``aliases`` are further spellings people write in spreadsheets.
    """

    code: str
    names: Names
    kind: UnitKind
    factor: int | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Standard:
    """A specification a line of an item meets: a national or industry standard, or
    for gloves the material. ``aliases`` are further names it is written as."""

    code: str
    names: Names
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """A kind of supply.

    Quantities of an item are held as whole numbers of ``base_unit``; ``units`` are
    the unit codes a line may be entered in (the base unit among them). ``aliases``
    are further names the item is written as; ``unit_remap`` maps a unit code a
    spelling normalises to onto the unit it means for this item (e.g. "件" is a
    piece in general, a set of protective clothing).
    """

    code: str
    names: Names
    category: str
    base_unit: str
    units: tuple[str, ...]
    standards: tuple[Standard, ...] = ()
    perishable: bool = False
    shelf_life_days: int | None = None
    aliases: tuple[str, ...] = ()
    unit_remap: tuple[tuple[str, str], ...] = ()
