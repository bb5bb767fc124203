"""Quantities as people read them, in Chinese and English: the one formatting rule for
every page, PDF and display field. Storage, exports and the API keep exact base units.

* Mass and volume scale up while the figure stays exact to three decimals: 40,000,000 g
  is "40 吨" / "40 t", 1,500,500 ml is "1,500.5 升" / "1,500.5 l", 1,234,567 g is
  "1,234.567 千克" (never rounded to a figure that means something else).
* Counts: thousands separators; in Chinese, 万 from 100,000 when it stays exact to two
  decimals (460,000 个 is "46万 个").
* Packed: "24 箱（每箱 50 个）+ 30 个" / "24 cases of 50 pieces + 30 pieces".
* ``exact`` is the base-unit figure with separators, for a title on hover.
"""

# ruff: noqa: RUF001, RUF002 (Chinese text is written with Chinese punctuation)

from __future__ import annotations

from decimal import Decimal

from shared.catalog.lookup import get_unit

# Larger units a base unit scales to, largest first: (base units in one, unit code).
SCALES: dict[str, tuple[tuple[int, str], ...]] = {
    "g": ((1_000_000, "t"), (1_000, "kg"), (1, "g")),
    "ml": ((1_000, "l"), (1, "ml")),
}
# English symbols of metric units; other units are words, with a plural.
SYMBOLS_EN = {"g": "g", "kg": "kg", "t": "t", "ml": "ml", "l": "l", "jin": "jin"}
PLURALS_EN = {"box": "boxes"}
WAN = 10_000


def number(value: Decimal | int, language: str = "en") -> str:
    """A figure with thousands separators, decimals only where it has them."""
    value = Decimal(value)
    if value == value.to_integral_value():
        return f"{int(value):,}"
    return f"{value.normalize():,f}"


def unit_label(code: str | None, value: Decimal | int, language: str) -> str:
    if not code:
        return ""
    try:
        unit = get_unit(code)
    except (KeyError, ValueError):
        return code
    if language == "zh":
        return unit.names.zh
    if code in SYMBOLS_EN:
        return SYMBOLS_EN[code]
    word = unit.names.en
    if Decimal(value) == 1:
        return word
    return PLURALS_EN.get(code, f"{word}s")


def scaled(amount: int, base_unit: str | None) -> tuple[Decimal, str | None]:
    """The largest unit in which ``amount`` base units is exact to three decimals."""
    for factor, code in SCALES.get(base_unit or "", ()):
        if amount >= factor:
            value = Decimal(amount) / factor
            if value == value.quantize(Decimal("0.001")):
                return value, code
    return Decimal(amount), base_unit


def quantity(amount: int | None, base_unit: str | None, language: str = "en") -> str:
    """``amount`` base units as people read it ("40 吨", "46万 个", "1,500.5 l")."""
    if amount is None:
        return ""
    value, code = scaled(int(amount), base_unit)
    if language == "zh" and code == base_unit and value >= 10 * WAN:
        wan = value / WAN
        if wan == wan.quantize(Decimal("0.01")):
            return f"{number(wan)}万 {unit_label(code, value, language)}".strip()
    return f"{number(value)} {unit_label(code, value, language)}".strip()


def exact(amount: int | None, base_unit: str | None, language: str = "en") -> str:
    """The base-unit figure itself, with separators: "40,000,000 克"."""
    if amount is None:
        return ""
    return f"{number(int(amount))} {unit_label(base_unit, int(amount), language)}".strip()


def packed(
    amount: int | None,
    pack_unit: str | None,
    pack_size: int | None,
    base_unit: str | None,
    language: str = "en",
) -> str:
    """``amount`` as packed in boxes or cases of ``pack_size`` base units, the rest
    loose; as ``quantity`` when it was not packed or is less than one pack."""
    if amount is None:
        return ""
    amount = int(amount)
    if not pack_unit or not pack_size or pack_size <= 0 or amount < pack_size:
        return quantity(amount, base_unit, language)
    packs, loose = divmod(amount, pack_size)
    size = quantity(pack_size, base_unit, language)
    if language == "zh":
        pack = unit_label(pack_unit, packs, language)
        text = f"{number(packs)} {pack}（每{pack} {size}）"
    else:
        text = f"{number(packs)} {unit_label(pack_unit, packs, language)} of {size}"
    if loose:
        text += " + " + quantity(loose, base_unit, language)
    return text


def axis(largest: int, base_unit: str | None, language: str = "en") -> tuple[int, str]:
    """The unit a chart's axis counts in when its largest figure is ``largest`` base
    units: (base units in one, the unit's name). Fruit up to 40,000,000 g is charted in
    吨 / t, 1,500 ml in 升 / l, 460,000 masks in 万个 in Chinese and pieces in English;
    each bar's own figure is still read with ``quantity``."""
    for factor, code in SCALES.get(base_unit or "", ()):
        if largest >= factor:
            return factor, unit_label(code, 2, language)
    if language == "zh" and largest >= 10 * WAN:
        return WAN, f"万{unit_label(base_unit, 2, language)}"
    return 1, unit_label(base_unit, 2, language)
