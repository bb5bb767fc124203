"""The catalogue's data: units, categories and items of version ``CATALOG_VERSION``.

Codes here are stable: a later version may add items, units, standards and names, but
never renames or removes a code and never changes an item's base unit, since stored
quantities are whole numbers of it. The data is checked when the module is imported.
"""

from __future__ import annotations

import re

from shared.catalog.model import Item, Names, Standard, Unit

# 2020.2: liquids may be entered by mass with the density on the label.
CATALOG_VERSION = "2020.2"

# A quantity converted to more base units than this is refused: 10**12 grams is a
# million tonnes, 10**12 millilitres a billion litres.
MAX_BASE_QUANTITY = 10**12

GRAMS_PER_JIN = 500

UNITS: tuple[Unit, ...] = (
    # Counts: each is the base unit of some items and converts into no other.
    Unit(
        "piece",
        Names("个", "piece"),
        "count",
        aliases=("pcs", "pc", "pieces", "ea", "each", "只", "件", "片", "枚", "支"),
    ),
    Unit("pair", Names("副", "pair"), "count", aliases=("pairs", "pr", "prs", "双", "对")),
    Unit("set", Names("套", "set"), "count", aliases=("sets",)),
    Unit("unit", Names("台", "unit"), "count", aliases=("units",)),
    Unit("kit", Names("盒", "kit"), "count", aliases=("kits", "试剂盒")),
    # Packs: a box or case holds a stated number of base units (or of bottles); a
    # bottle holds a stated volume.
    Unit("box", Names("盒", "box"), "pack", aliases=("boxes", "bx", "盒")),
    Unit(
        "case", Names("箱", "case"), "pack", aliases=("cases", "carton", "cartons", "ctn", "ctns")
    ),
    Unit("bottle", Names("瓶", "bottle"), "pack", aliases=("bottles", "btl")),
    # Mass, in grams.
    Unit("g", Names("克", "gram"), "mass", 1, aliases=("gram", "grams", "gramme", "grammes")),
    Unit(
        "kg",
        Names("千克", "kilogram"),
        "mass",
        1000,
        aliases=("kgs", "kilogram", "kilograms", "kilo", "kilos", "公斤"),
    ),
    Unit(
        "t",
        Names("吨", "tonne"),
        "mass",
        1_000_000,
        aliases=("tonne", "tonnes", "ton", "tons", "metric ton", "metric tons", "公吨"),
    ),
    Unit("jin", Names("斤", "jin (500 g)"), "mass", GRAMS_PER_JIN, aliases=("市斤",)),
    # Volume, in millilitres.
    Unit(
        "ml",
        Names("毫升", "millilitre"),
        "volume",
        1,
        aliases=("millilitre", "millilitres", "milliliter", "milliliters"),
    ),
    Unit(
        "l",
        Names("升", "litre"),
        "volume",
        1000,
        aliases=("litre", "litres", "liter", "liters", "公升"),
    ),
)

CATEGORIES: dict[str, Names] = {
    "ppe": Names("防护用品", "personal protective equipment"),
    "disinfection": Names("消毒用品", "disinfection"),
    "equipment": Names("设备", "equipment"),
    "testing": Names("检测", "testing"),
    "produce": Names("生鲜", "fresh produce"),
    "staples": Names("粮油", "staples"),
}

_COUNTED = ("box", "case")
_WEIGHED = ("g", "kg", "t", "jin")
# Liquids are held in millilitres; by mass only with the density on the label.
_BOTTLED = ("ml", "l", "bottle", "box", "case", *_WEIGHED)

ITEMS: tuple[Item, ...] = (
    Item(
        "mask",
        Names("口罩", "Mask"),
        "ppe",
        "piece",
        ("piece", *_COUNTED),
        standards=(
            Standard(
                "GB19083-2010",
                Names("医用防护口罩", "Medical protective mask"),
                aliases=("医用防护型口罩",),
            ),
            Standard(
                "YY0469-2011",
                Names("医用外科口罩", "Surgical mask"),
                aliases=("外科口罩", "medical surgical mask"),
            ),
            Standard(
                "GB2626-2006",
                Names("KN95口罩", "KN95 respirator"),
                aliases=("KN95", "KN95 mask", "KN95防护口罩"),
            ),
            Standard(
                "YY/T0969-2013",
                Names("一次性使用医用口罩", "Disposable medical mask"),
                aliases=("一次性医用口罩",),
            ),
        ),
        aliases=("masks", "face mask", "医用口罩"),
    ),
    Item(
        "gloves_exam",
        Names("医用检查手套", "Examination gloves"),
        "ppe",
        "pair",
        ("pair", *_COUNTED),
        standards=(
            Standard(
                "nitrile",
                Names("丁腈手套", "Nitrile gloves"),
                aliases=("nitrile examination gloves", "丁腈检查手套"),
            ),
            Standard(
                "latex",
                Names("乳胶手套", "Latex gloves"),
                aliases=("latex examination gloves", "乳胶检查手套"),
            ),
        ),
        aliases=(
            "examination glove",
            "exam gloves",
            "medical gloves",
            "检查手套",
            "医用手套",
            "一次性医用检查手套",
        ),
    ),
    Item(
        "protective_suit",
        Names("防护服", "Protective suit"),
        "ppe",
        "set",
        ("set", *_COUNTED),
        standards=(
            Standard(
                "GB19082-2009",
                Names("医用一次性防护服", "Medical disposable protective clothing"),
                aliases=("一次性医用防护服",),
            ),
        ),
        aliases=(
            "医用防护服",
            "medical protective suit",
            "protective clothing",
            "protective coverall",
            "coverall",
        ),
        unit_remap=(("piece", "set"),),
    ),
    Item(
        "goggles",
        Names("护目镜", "Goggles"),
        "ppe",
        "piece",
        ("piece", *_COUNTED),
        standards=(Standard("GB14866-2006", Names("个人用眼护具", "Personal eye-protectors")),),
        aliases=("goggle", "safety goggles", "医用护目镜", "防护眼镜"),
        unit_remap=(("pair", "piece"),),
    ),
    Item(
        "face_shield",
        Names("防护面屏", "Face shield"),
        "ppe",
        "piece",
        ("piece", *_COUNTED),
        aliases=("面屏", "face visor"),
    ),
    Item(
        "disinfectant_84",
        Names("84消毒液", "84 disinfectant"),
        "disinfection",
        "ml",
        _BOTTLED,
        aliases=("84消毒水", "84 disinfectant liquid"),
    ),
    Item(
        "alcohol_75",
        Names("75%酒精", "75% alcohol"),
        "disinfection",
        "ml",
        _BOTTLED,
        aliases=("75%乙醇", "75%医用酒精", "75%酒精消毒液", "alcohol 75%", "75% ethanol"),
    ),
    Item(
        "hand_sanitiser",
        Names("免洗洗手液", "Hand sanitiser"),
        "disinfection",
        "ml",
        _BOTTLED,
        aliases=("hand sanitizer", "免洗手消毒液", "手消毒液", "速干手消毒剂", "hand rub"),
    ),
    Item(
        "air_purifier",
        Names("空气净化器", "Air purifier"),
        "equipment",
        "unit",
        ("unit",),
        aliases=("air cleaner",),
        unit_remap=(("piece", "unit"),),
    ),
    Item(
        "thermometer",
        Names("体温计", "Thermometer"),
        "equipment",
        "unit",
        ("unit", *_COUNTED),
        aliases=(
            "额温枪",
            "体温枪",
            "红外体温计",
            "infrared thermometer",
            "forehead thermometer",
        ),
        unit_remap=(("piece", "unit"),),
    ),
    Item(
        "test_kit",
        Names("检测试剂盒", "Test kit"),
        "testing",
        "kit",
        ("kit", "case"),
        aliases=(
            "试剂盒",
            "核酸检测试剂盒",
            "新冠病毒检测试剂盒",
            "testing kit",
            "nucleic acid test kit",
            "covid-19 test kit",
        ),
        # A 盒 or 套 of reagent is one kit.
        unit_remap=(("box", "kit"), ("set", "kit")),
    ),
    Item(
        "fruit",
        Names("水果", "Fruit"),
        "produce",
        "g",
        _WEIGHED,
        perishable=True,
        shelf_life_days=14,
        aliases=("fresh fruit", "新鲜水果"),
    ),
    Item(
        "vegetables",
        Names("蔬菜", "Vegetables"),
        "produce",
        "g",
        _WEIGHED,
        perishable=True,
        shelf_life_days=7,
        aliases=("vegetable", "fresh vegetables", "新鲜蔬菜", "veg"),
    ),
    Item(
        "rice",
        Names("大米", "Rice"),
        "staples",
        "g",
        _WEIGHED,
        aliases=("稻米",),
    ),
    Item(
        "cooking_oil",
        Names("食用油", "Cooking oil"),
        "staples",
        "ml",
        _BOTTLED,
        aliases=("edible oil", "食用植物油"),
    ),
)


class CatalogDataError(Exception):
    """The catalogue's own data is inconsistent (a bug in this module, not an input)."""


_CODE = re.compile(r"[a-z][a-z0-9_]*")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CatalogDataError(message)


def validate(units: tuple[Unit, ...], items: tuple[Item, ...]) -> None:
    """Raise CatalogDataError unless ``units`` and ``items`` make a usable catalogue."""
    by_code = {u.code: u for u in units}
    _check(len(by_code) == len(units), "unit codes are not unique")
    for u in units:
        _check(bool(_CODE.fullmatch(u.code)), f"unit code {u.code!r} is not snake ASCII")
        _check(bool(u.names.zh and u.names.en), f"unit {u.code} lacks a name")
        if u.kind in ("mass", "volume"):
            _check(u.factor is not None and u.factor > 0, f"unit {u.code} lacks a factor")
        else:
            _check(u.factor is None, f"unit {u.code} is a {u.kind} and takes no factor")
    _check(len({i.code for i in items}) == len(items), "item codes are not unique")
    for item in items:
        where = f"item {item.code}"
        _check(bool(_CODE.fullmatch(item.code)), f"{where}: code is not snake ASCII")
        _check(bool(item.names.zh and item.names.en), f"{where}: lacks a name")
        _check(item.category in CATEGORIES, f"{where}: unknown category {item.category}")
        _check(item.base_unit in item.units, f"{where}: base unit is not among its units")
        _check(len(set(item.units)) == len(item.units), f"{where}: a unit is listed twice")
        _check(all(u in by_code for u in item.units), f"{where}: unknown unit")
        base = by_code[item.base_unit]
        _check(base.kind != "pack", f"{where}: a pack cannot be the base unit")
        _check(base.factor in (None, 1), f"{where}: base unit must be a g, ml or a count")
        for code in item.units:
            unit = by_code[code]
            if unit.kind == "count":
                _check(code == item.base_unit, f"{where}: {code} is a count but not the base")
            elif unit.kind in ("mass", "volume"):
                # A liquid may be entered by mass, through the density each line states.
                _check(
                    unit.kind == base.kind or (unit.kind, base.kind) == ("mass", "volume"),
                    f"{where}: {code} is not a {base.kind}",
                )
            elif code == "bottle":
                _check(base.kind == "volume", f"{where}: bottles hold volumes")
            else:
                _check(base.kind in ("count", "volume"), f"{where}: {code} holds counts")
        if item.perishable:
            _check(
                item.shelf_life_days is not None and item.shelf_life_days > 0,
                f"{where}: a perishable item needs a shelf life",
            )
        else:
            _check(item.shelf_life_days is None, f"{where}: only perishables have a shelf life")
        codes = [s.code for s in item.standards]
        _check(len(set(codes)) == len(codes), f"{where}: a standard is listed twice")
        for s in item.standards:
            _check(bool(s.names.zh and s.names.en), f"{where}: standard {s.code} lacks a name")
        for source, target in item.unit_remap:
            _check(source in by_code, f"{where}: remaps unknown unit {source}")
            _check(target in item.units, f"{where}: remaps onto a unit it does not accept")


validate(UNITS, ITEMS)
