"""The item catalogue: names, units and exact conversion to base units, without any I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.catalog import (
    CATALOG_VERSION,
    CATEGORIES,
    MAX_BASE_QUANTITY,
    CatalogError,
    Item,
    Names,
    catalog_as_dict,
    check_standard,
    from_base,
    get_item,
    get_unit,
    item_as_dict,
    items,
    normalise_unit,
    parse_quantity,
    resolve,
    resolve_item,
    to_base,
    unit_factor,
    units,
)
from shared.catalog.items import ITEMS, UNITS, CatalogDataError, validate

# Grams or millilitres in one of each fixed unit, written out independently of the data.
FIXED = {"g": 1, "kg": 1000, "t": 1_000_000, "jin": 500, "ml": 1, "l": 1000}


def _full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


# Conversions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "quantity", "unit", "kwargs", "expected"),
    [
        ("fruit", "1.5", "t", {}, 1_500_000),
        ("rice", 2, "吨", {}, 2_000_000),
        ("rice", "0.001", "tonne", {}, 1000),
        ("fruit", Decimal("1.5"), "kg", {}, 1500),
        ("fruit", "1.5", "公斤", {}, 1500),
        ("vegetables", 3, "斤", {}, 1500),
        ("vegetables", "0.5", "jin", {}, 250),
        ("vegetables", 250, "克", {}, 250),
        ("disinfectant_84", 2, "l", {}, 2000),
        ("alcohol_75", "0.5", "L", {}, 500),
        ("alcohol_75", "1.25", "升", {}, 1250),
        ("hand_sanitiser", 300, "毫升", {}, 300),
        ("mask", 3, "box", {"pack_size": 50}, 150),
        ("mask", 2, "箱", {"pack_size": 2000}, 4000),
        ("mask", "1,000", "pcs", {}, 1000),
        ("mask", 20, "只", {}, 20),
        ("gloves_exam", 4, "盒", {"pack_size": 50}, 200),
        ("gloves_exam", 10, "双", {}, 10),
        ("protective_suit", 500, "件", {}, 500),
        ("protective_suit", 2, "case", {"pack_size": "25"}, 50),
        ("goggles", 30, "副", {}, 30),
        ("thermometer", 12, "支", {}, 12),
        ("air_purifier", 5, "台", {}, 5),
        ("test_kit", 100, "盒", {}, 100),
        ("test_kit", 3, "箱", {"pack_size": 20}, 60),
        ("hand_sanitiser", 20, "瓶", {"bottle_volume_ml": 500}, 10_000),
        ("hand_sanitiser", 2, "case", {"pack_size": 24, "bottle_volume_ml": 500}, 24_000),
        ("cooking_oil", 10, "bottle", {"bottle_volume_ml": Decimal(5000)}, 50_000),
        ("cooking_oil", "0.5", "case", {"pack_size": 4, "bottle_volume_ml": 5000}, 10_000),
        ("fruit", _full_width("1.5"), _full_width("KG"), {}, 1500),
        ("fruit", "2.5e3", "g", {}, 2500),
        ("fruit", " +7 ", "kg", {}, 7000),
        ("mask", 2, "BOX", {"pack_size": 50}, 100),
        # Liquids by mass, through the density on the label.
        ("disinfectant_84", 1, "kg", {"density_g_per_l": 1000}, 1000),
        ("alcohol_75", 1, "kg", {"density_g_per_l": 800}, 1250),
        ("alcohol_75", "2", "t", {"density_g_per_l": "800"}, 2_500_000),
        ("disinfectant_84", 11, "公斤", {"density_g_per_l": 1100}, 10_000),
        ("hand_sanitiser", 4, "斤", {"density_g_per_l": 1000}, 2000),
        ("cooking_oil", "0.92", "t", {"density_g_per_l": 920}, 1_000_000),
    ],
)
def test_converts_to_whole_base_units(
    item: str, quantity: Any, unit: str, kwargs: dict[str, Any], expected: int
) -> None:
    result = to_base(item, quantity, unit, **kwargs)
    assert result == expected
    assert type(result) is int


def test_a_million_tonnes_is_the_most_one_line_may_hold() -> None:
    assert to_base("rice", 1_000_000, "t") == MAX_BASE_QUANTITY
    with pytest.raises(CatalogError) as exc:
        to_base("rice", "1000000.000001", "t")
    assert exc.value.field == "quantity"
    assert "more than" in exc.value.message


def test_from_base_gives_the_exact_decimal() -> None:
    assert from_base("fruit", 1500, "kg") == Decimal("1.5")
    assert str(from_base("fruit", 1500, "kg")) == "1.5"
    assert str(from_base("rice", 2_000_000, "t")) == "2"
    assert from_base("vegetables", 750, "斤") == Decimal("1.5")
    assert from_base("mask", 150, "box", pack_size=50) == 3
    with pytest.raises(CatalogError) as exc:
        from_base("mask", 100, "box", pack_size=3)
    assert exc.value.field == "quantity"
    assert "100/3" in exc.value.message


# Refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "quantity", "unit", "kwargs", "field", "fragment"),
    [
        ("mask", "1.5", "pcs", {}, "quantity", "would lose units: that is 1.5 pieces"),
        ("fruit", "0.0005", "g", {}, "quantity", "would lose units"),
        ("fruit", "0.0000001", "t", {}, "quantity", "0.1 grams"),
        ("mask", 1, "box", {"pack_size": 50, "bottle_volume_ml": 5}, "bottle_volume_ml", "mask"),
        ("mask", 3, "box", {}, "pack_size", "needs the number of pieces in it"),
        ("mask", 3, "case", {"pack_size": 0}, "pack_size", "positive"),
        ("mask", 3, "case", {"pack_size": -5}, "pack_size", "positive"),
        ("mask", 3, "case", {"pack_size": "2.5"}, "pack_size", "whole number"),
        ("mask", 3, "case", {"pack_size": True}, "pack_size", "whole number"),
        ("mask", 3, "case", {"pack_size": 2.0}, "pack_size", "whole number"),
        ("mask", 3, "pcs", {"pack_size": 50}, "pack_size", "only to a box or case"),
        ("alcohol_75", 3, "bottle", {}, "bottle_volume_ml", "volume of each bottle"),
        ("alcohol_75", 3, "case", {"pack_size": 12}, "bottle_volume_ml", "volume of each"),
        ("alcohol_75", 3, "case", {"bottle_volume_ml": 500}, "pack_size", "number of bottles"),
        ("alcohol_75", 3, "l", {"bottle_volume_ml": 500}, "bottle_volume_ml", "not to l"),
        ("mask", 1, "kg", {}, "unit", "'kg' is not a unit for Mask (mask)"),
        ("mask", 1, "kg", {}, "unit", "counted by the piece; use piece, box or case"),
        ("fruit", 10, "pcs", {}, "unit", "measured by mass"),
        ("disinfectant_84", 1, "kg", {}, "density_g_per_l", "density in grams per litre"),
        ("disinfectant_84", 1, "kg", {"density_g_per_l": 0}, "density_g_per_l", "positive"),
        ("disinfectant_84", 1, "kg", {"density_g_per_l": "1.1"}, "density_g_per_l", "whole"),
        ("alcohol_75", 1, "l", {"density_g_per_l": 877}, "density_g_per_l", "not to l"),
        ("rice", 1, "kg", {"density_g_per_l": 800}, "density_g_per_l", "not to kg"),
        (
            "disinfectant_84",
            1,
            "kg",
            {"density_g_per_l": 1100},
            "quantity",
            "909.09",
        ),
        ("alcohol_75", 1, "kg", {"density_g_per_l": 877}, "quantity", "check the density"),
        ("gloves_exam", 10, "只", {}, "unit", "counted by the pair"),
        ("air_purifier", 1, "box", {"pack_size": 1}, "unit", "use unit"),
        ("mask", 1, "furlong", {}, "unit", "unknown unit 'furlong' for Mask (mask)"),
        ("mask", 0, "pcs", {}, "quantity", "positive"),
        ("mask", -3, "pcs", {}, "quantity", "positive"),
        ("mask", "0.00", "pcs", {}, "quantity", "positive"),
        ("mask", Decimal("-1"), "pcs", {}, "quantity", "positive"),
        ("fruit", 1.5, "kg", {}, "quantity", "float"),
        ("fruit", 2.0, "kg", {}, "quantity", "float"),
        ("fruit", True, "kg", {}, "quantity", "boolean"),
        ("fruit", "1.5 kg", "kg", {}, "quantity", "not a decimal number"),
        ("fruit", "1,5", "kg", {}, "quantity", "not a decimal number"),
        ("fruit", "abc", "kg", {}, "quantity", "not a decimal number"),
        ("fruit", "", "kg", {}, "quantity", "not a decimal number"),
        ("fruit", "NaN", "kg", {}, "quantity", "not a decimal number"),
        ("fruit", Decimal("NaN"), "kg", {}, "quantity", "finite"),
        ("fruit", Decimal("Infinity"), "kg", {}, "quantity", "finite"),
        ("fruit", "1e999999999", "kg", {}, "quantity", "too large"),
        ("fruit", "1e-999999999", "kg", {}, "quantity", "decimal places"),
        ("fruit", 10**100, "kg", {}, "quantity", "too large"),
        ("fruit", 10**7, "t", {}, "quantity", "more than"),
        ("fruit", [1], "kg", {}, "quantity", "not list"),
        ("caviar", 1, "kg", {}, "item", "unknown item 'caviar'"),
    ],
)
def test_refuses_with_the_field_at_fault(
    item: str, quantity: Any, unit: str, kwargs: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(CatalogError) as exc:
        to_base(item, quantity, unit, **kwargs)
    assert exc.value.field == field
    assert fragment in exc.value.message
    assert str(exc.value) == exc.value.message


def test_catalog_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="would lose units"):
        to_base("mask", "0.5", "piece")


def test_parse_quantity_is_exact() -> None:
    assert parse_quantity("0.1") == Decimal("0.1")
    assert parse_quantity(_full_width("12.50")) == Decimal("12.50")
    assert parse_quantity("12,345,678.5") == Decimal("12345678.5")
    with pytest.raises(CatalogError, match="float"):
        parse_quantity(0.1)  # type: ignore[arg-type]


# Standards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "text", "code"),
    [
        ("mask", "GB19083-2010", "GB19083-2010"),
        ("mask", "GB 19083-2010", "GB19083-2010"),
        ("mask", "gb 19083—2010", "GB19083-2010"),
        ("mask", _full_width("GB19083-2010"), "GB19083-2010"),
        ("mask", "GB19083", "GB19083-2010"),
        ("mask", "YY 0469", "YY0469-2011"),
        ("mask", "yy0469-2011", "YY0469-2011"),
        ("mask", "GB 2626", "GB2626-2006"),
        ("mask", "KN95", "GB2626-2006"),
        ("mask", "YY/T 0969-2013", "YY/T0969-2013"),
        ("mask", "yy/t0969", "YY/T0969-2013"),
        ("mask", "医用外科口罩", "YY0469-2011"),
        ("mask", "Surgical mask", "YY0469-2011"),
        ("gloves_exam", "Nitrile", "nitrile"),
        ("gloves_exam", "乳胶手套", "latex"),
        ("protective_suit", "GB 19082-2009", "GB19082-2009"),
    ],
)
def test_standards_are_matched_leniently(item: str, text: str, code: str) -> None:
    assert check_standard(item, text).code == code


@pytest.mark.parametrize(
    ("item", "text", "fragment"),
    [
        ("mask", "GB2626-2019", "'GB2626-2019' is not a standard of Mask (mask); known: "),
        ("mask", "N95", "GB19083-2010 (Medical protective mask)"),
        ("mask", "nitrile", "is not a standard of Mask"),
        ("gloves_exam", "GB19083-2010", "is not a standard of Examination gloves"),
        ("face_shield", "GB19083-2010", "has no standards"),
    ],
)
def test_a_standard_the_item_does_not_have_is_refused(item: str, text: str, fragment: str) -> None:
    with pytest.raises(CatalogError) as exc:
        check_standard(item, text)
    assert exc.value.field == "standard"
    assert fragment in exc.value.message


def test_check_standard_of_an_unknown_item_blames_the_item() -> None:
    with pytest.raises(CatalogError) as exc:
        check_standard("caviar", "GB19083-2010")
    assert exc.value.field == "item"


# Resolving what people write ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "item", "standard"),
    [
        ("mask", "mask", None),
        ("口罩", "mask", None),
        ("Masks", "mask", None),
        ("医用外科口罩", "mask", "YY0469-2011"),
        ("Surgical mask", "mask", "YY0469-2011"),
        ("surgical masks", "mask", "YY0469-2011"),
        ("  SURGICAL   MASK ", "mask", "YY0469-2011"),
        (_full_width("Surgical") + "\u3000" + _full_width("Mask"), "mask", "YY0469-2011"),
        ("医用防护口罩", "mask", "GB19083-2010"),
        (_full_width("KN95") + "口罩", "mask", "GB2626-2006"),
        ("KN95", "mask", "GB2626-2006"),
        ("一次性使用医用口罩", "mask", "YY/T0969-2013"),
        ("GB 19083-2010", "mask", "GB19083-2010"),
        ("YY/T 0969", "mask", "YY/T0969-2013"),
        ("Examination gloves", "gloves_exam", None),
        ("丁腈手套", "gloves_exam", "nitrile"),
        ("latex gloves", "gloves_exam", "latex"),
        ("gloves_exam", "gloves_exam", None),
        ("防护服", "protective_suit", None),
        ("医用一次性防护服", "protective_suit", "GB19082-2009"),
        ("Goggles", "goggles", None),
        ("防护面屏", "face_shield", None),
        ("84消毒液", "disinfectant_84", None),
        ("75%酒精", "alcohol_75", None),
        (_full_width("75%") + "酒精", "alcohol_75", None),
        ("hand sanitizer", "hand_sanitiser", None),
        ("空气净化器", "air_purifier", None),
        ("额温枪", "thermometer", None),
        ("核酸检测试剂盒", "test_kit", None),
        ("Fruits", "fruit", None),
        ("蔬菜", "vegetables", None),
        ("大米", "rice", None),
        ("cooking-oil", "cooking_oil", None),
    ],
)
def test_resolves_codes_and_names(text: str, item: str, standard: str | None) -> None:
    found, found_standard = resolve(text)
    assert found.code == item
    assert (found_standard.code if found_standard else None) == standard
    assert resolve_item(text) is found


@pytest.mark.parametrize("text", ["", "   ", "caviar", "N95口罩", "口罩口罩", "x" * 500])
def test_unknown_names_are_refused(text: str) -> None:
    with pytest.raises(CatalogError) as exc:
        resolve(text)
    assert exc.value.field == "item"


def test_every_name_and_code_resolves_to_its_own_item() -> None:
    for item in items():
        for text in (item.code, item.names.zh, item.names.en, *item.aliases):
            assert resolve(text) == (item, None), text
        for standard in item.standards:
            for text in (standard.code, standard.names.zh, standard.names.en):
                assert resolve(text) == (item, standard), text
                assert check_standard(item.code, text) is standard


def test_get_item_takes_codes_only() -> None:
    assert get_item("mask").code == "mask"
    assert get_item(" Gloves_Exam ").code == "gloves_exam"
    with pytest.raises(CatalogError) as exc:
        get_item("口罩")
    assert exc.value.field == "item"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("pcs", "piece"),
        ("PCS.", "piece"),
        ("piece", "piece"),
        ("个", "piece"),
        ("只", "piece"),
        ("副", "pair"),
        ("双", "pair"),
        ("pair", "pair"),
        ("套", "set"),
        ("set", "set"),
        ("箱", "case"),
        ("carton", "case"),
        ("case", "case"),
        ("box", "box"),
        ("盒", "box"),
        ("瓶", "bottle"),
        ("bottles", "bottle"),
        ("kg", "kg"),
        ("KG", "kg"),
        ("公斤", "kg"),
        ("千克", "kg"),
        ("g", "g"),
        ("克", "g"),
        ("t", "t"),
        ("吨", "t"),
        ("tonne", "t"),
        ("斤", "jin"),
        ("l", "l"),
        ("L", "l"),
        ("升", "l"),
        ("ml", "ml"),
        ("mL", "ml"),
        ("毫升", "ml"),
        ("台", "unit"),
        ("unit", "unit"),
        ("kit", "kit"),
        (_full_width("kg"), "kg"),
    ],
)
def test_normalises_unit_spellings(text: str, code: str) -> None:
    assert normalise_unit(text) == code


@pytest.mark.parametrize(
    ("text", "item", "code"),
    [
        ("件", "protective_suit", "set"),
        ("pcs", "protective_suit", "set"),
        ("副", "goggles", "piece"),
        ("个", "thermometer", "unit"),
        ("盒", "test_kit", "kit"),
        ("套", "test_kit", "kit"),
        ("盒", "mask", "box"),
        ("只", "gloves_exam", "piece"),
    ],
)
def test_some_spellings_mean_another_unit_for_an_item(text: str, item: str, code: str) -> None:
    assert normalise_unit(text, item) == code


@pytest.mark.parametrize("text", ["", "furlong", "kgg", "bag"])
def test_unknown_unit_spellings_are_refused(text: str) -> None:
    with pytest.raises(CatalogError) as exc:
        normalise_unit(text)
    assert exc.value.field == "unit"


# The data and its API shape -----------------------------------------------------------


def test_every_item_is_named_in_both_languages_and_has_units() -> None:
    assert CATALOG_VERSION == "2020.2"
    codes = [i.code for i in items()]
    assert len(set(codes)) == len(codes)
    assert codes == [i.code for i in items()]  # a stable order
    for item in items():
        assert item.names.zh and item.names.en
        assert item.category in CATEGORIES
        assert item.units and item.base_unit in item.units
        assert all(get_unit(u).code == u for u in item.units)
        assert item.code.isascii() and item.code == item.code.lower()
        for standard in item.standards:
            assert standard.names.zh and standard.names.en
        for unit in item.units:  # the API's unit list needs these names too
            assert get_unit(unit).names.zh and get_unit(unit).names.en


def test_perishable_items_have_a_shelf_life() -> None:
    perishable = {i.code: i.shelf_life_days for i in items() if i.perishable}
    assert perishable == {"fruit": 14, "vegetables": 7}
    assert all(i.shelf_life_days is None for i in items() if not i.perishable)


def test_the_catalogue_covers_the_issue() -> None:
    assert {i.code for i in items()} == {
        "mask",
        "gloves_exam",
        "protective_suit",
        "goggles",
        "face_shield",
        "disinfectant_84",
        "alcohol_75",
        "hand_sanitiser",
        "air_purifier",
        "thermometer",
        "test_kit",
        "fruit",
        "vegetables",
        "rice",
        "cooking_oil",
    }
    assert [s.code for s in get_item("mask").standards] == [
        "GB19083-2010",
        "YY0469-2011",
        "GB2626-2006",
        "YY/T0969-2013",
    ]
    assert get_item("gloves_exam").base_unit == "pair"
    assert get_item("protective_suit").base_unit == "set"
    assert get_item("fruit").base_unit == "g"
    assert get_item("cooking_oil").base_unit == "ml"


def test_item_as_dict_has_the_api_shape() -> None:
    shown = item_as_dict(get_item("mask"))
    assert set(shown) == {
        "code",
        "names",
        "category",
        "base_unit",
        "units",
        "standards",
        "perishable",
        "shelf_life_days",
    }
    assert shown["code"] == "mask"
    assert shown["names"] == {"zh": "口罩", "en": "Mask"}
    assert shown["category"] == "ppe"
    assert shown["base_unit"] == "piece"
    assert shown["perishable"] is False
    assert shown["shelf_life_days"] is None
    assert shown["standards"][1] == {
        "code": "YY0469-2011",
        "names": {"zh": "医用外科口罩", "en": "Surgical mask"},
    }
    assert [u["code"] for u in shown["units"]] == ["piece", "box", "case"]
    assert shown["units"][0] == {
        "code": "piece",
        "names": {"zh": "个", "en": "piece"},
        "kind": "count",
        "base_units": 1,
        "requires": [],
    }
    assert shown["units"][1]["requires"] == ["pack_size"]
    assert shown["units"][1]["base_units"] is None


def test_item_as_dict_of_liquids_and_produce() -> None:
    oil = item_as_dict(get_item("cooking_oil"))
    by_code = {u["code"]: u for u in oil["units"]}
    assert by_code["l"]["base_units"] == 1000
    assert by_code["bottle"]["requires"] == ["bottle_volume_ml"]
    assert by_code["case"]["requires"] == ["pack_size", "bottle_volume_ml"]
    fruit = item_as_dict(get_item("fruit"))
    assert fruit["perishable"] is True
    assert fruit["shelf_life_days"] == 14
    assert {u["code"]: u["base_units"] for u in fruit["units"]} == {
        "g": 1,
        "kg": 1000,
        "t": 1_000_000,
        "jin": 500,
    }


def test_the_whole_catalogue_is_json() -> None:
    shown = catalog_as_dict()
    assert shown["version"] == CATALOG_VERSION
    assert [i["code"] for i in shown["items"]] == [i.code for i in items()]
    assert json.loads(json.dumps(shown, ensure_ascii=False)) == shown


def test_items_are_immutable() -> None:
    item = get_item("mask")
    with pytest.raises(AttributeError):
        item.code = "other"  # type: ignore[misc]


def test_inconsistent_data_is_caught_at_import() -> None:
    counted_in_kg = Item("bad", Names("坏", "Bad"), "ppe", "piece", ("piece", "kg"))
    with pytest.raises(CatalogDataError, match="kg is not a count"):
        validate(UNITS, (counted_in_kg,))
    no_shelf_life = Item("bad", Names("坏", "Bad"), "produce", "g", ("g",), perishable=True)
    with pytest.raises(CatalogDataError, match="shelf life"):
        validate(UNITS, (no_shelf_life,))
    twice = (ITEMS[0], ITEMS[0])
    with pytest.raises(CatalogDataError, match="not unique"):
        validate(UNITS, twice)


def test_the_catalogue_needs_no_web_queue_or_database() -> None:
    code = (
        "import sys, shared.catalog; "
        "print(sorted(m for m in ('flask', 'celery', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# Properties ---------------------------------------------------------------------------


def _by_density(item: Item, unit: str) -> bool:
    return get_unit(unit).kind == "mass" and get_unit(item.base_unit).kind == "volume"


ITEM_UNITS = [
    (item.code, unit) for item in ITEMS for unit in item.units if not _by_density(item, unit)
]
LIQUIDS_BY_MASS = [
    (item.code, unit) for item in ITEMS for unit in item.units if _by_density(item, unit)
]


def _expected_factor(
    item: Item, unit: str, pack_size: int, bottle_ml: int
) -> tuple[int, dict[str, int]]:
    base_kind = get_unit(item.base_unit).kind
    if unit in FIXED:
        return FIXED[unit], {}
    if unit == "bottle":
        return bottle_ml, {"bottle_volume_ml": bottle_ml}
    if unit in ("box", "case"):
        if base_kind == "volume":
            return pack_size * bottle_ml, {"pack_size": pack_size, "bottle_volume_ml": bottle_ml}
        return pack_size, {"pack_size": pack_size}
    assert unit == item.base_unit
    return 1, {}


@given(
    pair=st.sampled_from(ITEM_UNITS),
    n=st.integers(min_value=1, max_value=100_000),
    pack_size=st.integers(min_value=1, max_value=1000),
    bottle_ml=st.integers(min_value=1, max_value=5000),
)
def test_whole_quantities_convert_by_the_factor_and_back(
    pair: tuple[str, str], n: int, pack_size: int, bottle_ml: int
) -> None:
    item_code, unit = pair
    factor, kwargs = _expected_factor(get_item(item_code), unit, pack_size, bottle_ml)
    assert unit_factor(item_code, unit, **kwargs) == factor
    base = to_base(item_code, n, unit, **kwargs)
    assert base == n * factor
    assert to_base(item_code, str(n), unit, **kwargs) == base
    assert to_base(item_code, Decimal(n), unit, **kwargs) == base
    assert from_base(item_code, base, unit, **kwargs) == n


@given(
    pair=st.sampled_from(ITEM_UNITS),
    digits=st.integers(min_value=1, max_value=10**9),
    places=st.integers(min_value=0, max_value=9),
    pack_size=st.integers(min_value=1, max_value=1000),
    bottle_ml=st.integers(min_value=1, max_value=5000),
)
def test_decimal_quantities_convert_exactly_or_are_refused(
    pair: tuple[str, str], digits: int, places: int, pack_size: int, bottle_ml: int
) -> None:
    item_code, unit = pair
    factor, kwargs = _expected_factor(get_item(item_code), unit, pack_size, bottle_ml)
    quantity = Decimal(digits).scaleb(-places)
    exact = quantity * factor  # exact: at most 9 + 10 significant digits
    try:
        base = to_base(item_code, str(quantity), unit, **kwargs)
    except CatalogError as exc:
        assert exc.field == "quantity"
        assert exact != exact.to_integral_value() or exact > MAX_BASE_QUANTITY
    else:
        assert Decimal(base) == exact
        assert from_base(item_code, base, unit, **kwargs) == quantity


@given(
    pair=st.sampled_from(LIQUIDS_BY_MASS),
    digits=st.integers(min_value=1, max_value=10**6),
    places=st.integers(min_value=0, max_value=4),
    density=st.integers(min_value=500, max_value=2000),
)
def test_liquids_by_mass_convert_exactly_through_the_density_or_are_refused(
    pair: tuple[str, str], digits: int, places: int, density: int
) -> None:
    item_code, unit = pair
    grams = Fraction(FIXED[unit]) * Fraction(Decimal(digits).scaleb(-places))
    exact = grams * 1000 / density  # millilitres
    quantity = str(Decimal(digits).scaleb(-places))
    try:
        base = to_base(item_code, quantity, unit, density_g_per_l=density)
    except CatalogError as exc:
        assert exc.field == "quantity"
        assert exact.denominator != 1 or exact > MAX_BASE_QUANTITY
    else:
        assert base == exact
        assert from_base(item_code, base, unit, density_g_per_l=density) == Decimal(quantity)


def test_the_catalogue_says_a_liquid_by_mass_needs_its_density() -> None:
    alcohol = item_as_dict(get_item("alcohol_75"))
    kg = next(u for u in alcohol["units"] if u["code"] == "kg")
    assert kg["requires"] == ["density_g_per_l"]
    assert kg["base_units"] is None
    litre = next(u for u in alcohol["units"] if u["code"] == "l")
    assert litre == {**litre, "requires": [], "base_units": 1000}


def test_units_are_listed_once() -> None:
    codes = [u.code for u in units()]
    assert len(set(codes)) == len(codes)
