"""Exact conversion of entered quantities to whole base units, and back."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from fractions import Fraction

from shared.catalog.items import MAX_BASE_QUANTITY
from shared.catalog.lookup import accepted_units, describe, get_item, get_unit, normalise_unit
from shared.catalog.model import CatalogError, CatalogField, Item, Unit

PACKS = ("box", "case")

# A decimal as people write it: "12", "1.5", ".5", "+3", "1,000", "2.5e3".
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?", re.IGNORECASE)
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MAX_DIGITS = 30
_MAX_PLACES = 30
_MAX_TEXT = 60


def parse_quantity(value: int | Decimal | str) -> Decimal:
    """``value`` as an exact Decimal, refusing what cannot be taken exactly.

    Accepted: an int, a finite Decimal, or a decimal string such as "12", "1.5",
    the same in full-width digits, "1,000" (commas only as thousands separators) or "2.5e3".
    A float is refused: 0.1 has no exact binary form, so whoever holds one should
    decide how it was meant and pass ``Decimal(repr(x))`` or the text as read.
    The sign is kept; ``to_base`` refuses what is not positive.
    """
    if isinstance(value, bool):
        raise CatalogError("quantity", "the quantity must be a number, not a boolean")
    if isinstance(value, float):
        raise CatalogError(
            "quantity",
            f"the quantity {value!r} is a float, which cannot hold decimals exactly; "
            "pass an int, a Decimal or a decimal string such as '1.5'",
        )
    if isinstance(value, int):
        if value.bit_length() > 64:
            raise CatalogError("quantity", "the quantity is too large")
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        number = _parse_text(value)
    else:
        raise CatalogError(
            "quantity",
            "the quantity must be an int, a Decimal or a decimal string, "
            f"not {type(value).__name__}",
        )
    if not number.is_finite():
        raise CatalogError("quantity", f"the quantity {value!r} is not a finite number")
    _sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite, so not "n", "N" or "F"
    if number.adjusted() > 15 or len(digits) > _MAX_DIGITS:
        raise CatalogError("quantity", f"the quantity {value!r} is too large")
    if exponent < -_MAX_PLACES:
        raise CatalogError("quantity", f"the quantity {value!r} has too many decimal places")
    return number


def _parse_text(value: str) -> Decimal:
    text = unicodedata.normalize("NFKC", value).strip()
    if len(text) > _MAX_TEXT:
        raise CatalogError("quantity", "the quantity is too long to be a number")
    if _GROUPED.fullmatch(text):
        text = text.replace(",", "")
    if not _NUMBER.fullmatch(text):
        raise CatalogError(
            "quantity",
            f"the quantity {value!r} is not a decimal number (write e.g. 1500 or 1.5)",
        )
    return Decimal(text)


def _positive_whole(value: object, field: CatalogField, missing: str) -> int:
    if value is None:
        raise CatalogError(field, f"{missing} ({field})")
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise CatalogError(field, f"{field} must be a whole number, not {type(value).__name__}")
    if isinstance(value, int):
        number = value
    else:
        try:
            parsed = parse_quantity(value)
        except CatalogError as exc:
            raise CatalogError(field, exc.message.replace("the quantity", field)) from None
        if parsed != parsed.to_integral_value():
            raise CatalogError(field, f"{field} must be a whole number, not {value}")
        number = int(parsed)
    if number <= 0:
        raise CatalogError(field, f"{field} must be positive, not {number}")
    if number > MAX_BASE_QUANTITY:
        raise CatalogError(field, f"{field} {number} is too large")
    return number


def _plural(unit: Unit) -> str:
    """The English plural of a base unit's name (pieces, pairs, grams, millilitres)."""
    return f"{unit.names.en}s"


def _how_held(base: Unit) -> str:
    if base.kind == "mass":
        return "measured by mass, in grams"
    if base.kind == "volume":
        return "measured by volume, in millilitres"
    return f"counted by the {base.names.en}"


def _unit_of(item: Item, unit: str) -> Unit:
    code = normalise_unit(unit, item.code)
    if code not in item.units:
        base = get_unit(item.base_unit)
        raise CatalogError(
            "unit",
            f"{unit.strip()!r} is not a unit for {describe(item)}: it is {_how_held(base)}; "
            f"use {accepted_units(item)}",
        )
    return get_unit(code)


def unit_factor(
    item_code: str,
    unit: str,
    *,
    pack_size: int | Decimal | str | None = None,
    bottle_volume_ml: int | Decimal | str | None = None,
    density_g_per_l: int | Decimal | str | None = None,
) -> Fraction:
    """How many base units of ``item_code`` one ``unit`` is, exactly.

    ``unit`` may be a code or any spelling ``normalise_unit`` knows. A box or case
    needs ``pack_size``: for counted items the number of base units in it (a box
    of 50 masks, a box of 50 pairs of gloves: glove boxes marked "100只" hold 50
    pairs); for liquids the number of bottles in it, with ``bottle_volume_ml``. A
    bottle needs ``bottle_volume_ml``. A liquid entered by mass (g, kg, t, jin) needs
    ``density_g_per_l``, the grams in a litre as the label states: a kilogram of a
    liquid of 800 g/l is 1250 ml. Giving any of these where it does not apply is an
    error rather than silently ignored.

    The factor is a whole number except for a liquid by mass, where a kilogram at
    1 100 g/l is 10000/11 ml; ``to_base`` decides whether a quantity comes out whole.
    """
    item = get_item(item_code)
    u = _unit_of(item, unit)
    base = get_unit(item.base_unit)
    takes_volume = u.code == "bottle" or (u.code in PACKS and base.kind == "volume")
    takes_density = u.kind == "mass" and base.kind == "volume"
    if pack_size is not None and u.code not in PACKS:
        raise CatalogError(
            "pack_size", f"a pack size applies only to a box or case, not to {u.code}"
        )
    if bottle_volume_ml is not None and not takes_volume:
        raise CatalogError(
            "bottle_volume_ml",
            "a bottle volume applies only to liquids entered as bottle, box or case, "
            f"not to {u.code} of {describe(item)}",
        )
    if density_g_per_l is not None and not takes_density:
        raise CatalogError(
            "density_g_per_l",
            "a density applies only to a liquid entered by mass (g, kg, t, jin), "
            f"not to {u.code} of {describe(item)}",
        )
    if u.kind == "count":
        return Fraction(1)
    if takes_density:
        assert u.factor is not None
        density = _positive_whole(
            density_g_per_l,
            "density_g_per_l",
            f"{describe(item)} is held in millilitres; entered by mass it needs the density "
            "in grams per litre, as on the label",
        )
        return Fraction(u.factor * 1000, density)
    if u.kind in ("mass", "volume"):
        assert u.factor is not None and base.factor is not None
        return Fraction(u.factor, base.factor)
    factor = 1
    if u.code in PACKS:
        inner = "bottles" if base.kind == "volume" else _plural(base)
        factor = _positive_whole(
            pack_size,
            "pack_size",
            f"a {u.code} of {describe(item)} needs the number of {inner} in it",
        )
    if takes_volume:
        factor *= _positive_whole(
            bottle_volume_ml,
            "bottle_volume_ml",
            f"a {u.code} of {describe(item)} needs the volume of each bottle in millilitres",
        )
    return Fraction(factor)


def _decimal_text(value: Fraction) -> str:
    exact = exact_decimal(value)
    if exact is not None:
        return str(exact)
    about = Decimal(value.numerator) / Decimal(value.denominator)
    return f"about {about:.2f} ({value.numerator}/{value.denominator})"


def exact_decimal(value: Fraction) -> Decimal | None:
    """``value`` as a Decimal if it has a finite decimal form, else None."""
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return None
    places = max(twos, fives)
    scaled = value.numerator * 10**places // value.denominator
    while places and scaled % 10 == 0:
        scaled //= 10
        places -= 1
    sign = 1 if scaled < 0 else 0
    return Decimal((sign, tuple(int(d) for d in str(abs(scaled))), -places))


def to_base(
    item_code: str,
    quantity: int | Decimal | str,
    unit: str,
    *,
    pack_size: int | Decimal | str | None = None,
    bottle_volume_ml: int | Decimal | str | None = None,
    density_g_per_l: int | Decimal | str | None = None,
) -> int:
    """``quantity`` ``unit`` of ``item_code`` as a whole number of its base unit.

    Exact: "1.5" kg of fruit is 1500 g; 1.5 pieces, or 0.0005 g, would lose units
    and is refused, never rounded. Raises CatalogError naming the offending input
    for an unknown item, a unit the item is not entered in, a quantity that is not
    a positive exact number (floats are refused, see ``parse_quantity``), a missing
    or bad pack size, bottle volume or density, or a result above ``MAX_BASE_QUANTITY``.
    """
    item = get_item(item_code)
    factor = unit_factor(
        item.code,
        unit,
        pack_size=pack_size,
        bottle_volume_ml=bottle_volume_ml,
        density_g_per_l=density_g_per_l,
    )
    code = normalise_unit(unit, item.code)
    base = get_unit(item.base_unit)
    number = parse_quantity(quantity)
    if number <= 0:
        raise CatalogError("quantity", f"the quantity must be positive, not {number}")
    numerator, denominator = number.as_integer_ratio()
    total = Fraction(numerator, denominator) * factor
    if total.denominator != 1:
        hint = ""
        if factor.denominator != 1:
            hint = "; enter it in litres or bottles, or check the density"
        raise CatalogError(
            "quantity",
            f"{number} {code} of {describe(item)} would lose units: that is "
            f"{_decimal_text(total)} {_plural(base)}, not a whole number of {_plural(base)}" + hint,
        )
    if total > MAX_BASE_QUANTITY:
        raise CatalogError(
            "quantity",
            f"{number} {code} of {describe(item)} is {total.numerator} {item.base_unit}, "
            f"more than the {MAX_BASE_QUANTITY} any one line may hold",
        )
    return total.numerator


def from_base(
    item_code: str,
    base_quantity: int,
    unit: str,
    *,
    pack_size: int | Decimal | str | None = None,
    bottle_volume_ml: int | Decimal | str | None = None,
    density_g_per_l: int | Decimal | str | None = None,
) -> Decimal:
    """``base_quantity`` base units of ``item_code`` expressed in ``unit``, exactly.

    The inverse of ``to_base`` (1500 g of fruit is Decimal("1.5") kg). Raises
    CatalogError("quantity", ...) when the amount has no finite decimal form in that
    unit (100 masks in boxes of 3).
    """
    item = get_item(item_code)
    if isinstance(base_quantity, bool) or not isinstance(base_quantity, int):
        raise CatalogError("quantity", "a base quantity must be an int")
    if base_quantity < 0:
        raise CatalogError("quantity", f"a base quantity cannot be negative: {base_quantity}")
    factor = unit_factor(
        item.code,
        unit,
        pack_size=pack_size,
        bottle_volume_ml=bottle_volume_ml,
        density_g_per_l=density_g_per_l,
    )
    value = base_quantity / factor
    exact = exact_decimal(value)
    if exact is None:
        raise CatalogError(
            "quantity",
            f"{base_quantity} {item.base_unit} of {describe(item)} is "
            f"{value.numerator}/{value.denominator} {normalise_unit(unit, item.code)}, "
            "which has no exact decimal form",
        )
    return exact
