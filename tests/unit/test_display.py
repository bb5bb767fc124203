"""Quantities and places as people read them (shared.catalog.display, regions): exact
round trips, the scales in both languages, packed units, region names and codes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from marshmallow import ValidationError

from shared.catalog import display, regions


@pytest.mark.parametrize(
    ("amount", "unit", "zh", "en"),
    [
        (40_000_000, "g", "40 吨", "40 t"),
        (1_500_000, "ml", "1,500 升", "1,500 l"),
        (1_500_500, "ml", "1,500.5 升", "1,500.5 l"),  # never rounded to 1,500
        (1_234_567, "g", "1,234.567 千克", "1,234.567 kg"),
        (1_234_567_8, "g", "12,345.678 千克", "12,345.678 kg"),
        (999, "g", "999 克", "999 g"),
        (460_000, "piece", "46万 个", "460,000 pieces"),
        (461_234, "piece", "461,234 个", "461,234 pieces"),
        (1, "piece", "1 个", "1 piece"),
        (81_000, "pair", "81,000 副", "81,000 pairs"),
    ],
)
def test_quantities_scale_without_changing_their_meaning(
    amount: int, unit: str, zh: str, en: str
) -> None:
    assert display.quantity(amount, unit, "zh") == zh
    assert display.quantity(amount, unit, "en") == en
    value, code = display.scaled(amount, unit)
    factor = {"t": 1_000_000, "kg": 1_000, "l": 1_000}.get(code or "", 1)
    assert value * factor == Decimal(amount)  # the figure shown is the exact amount


def test_the_exact_figure_and_packed_units() -> None:
    assert display.exact(40_000_000, "g", "zh") == "40,000,000 克"
    assert display.packed(1230, "case", 50, "piece", "zh") == "24 箱（每箱 50 个） + 30 个"  # noqa: RUF001
    assert display.packed(1230, "case", 50, "piece", "en") == "24 cases of 50 pieces + 30 pieces"
    assert display.packed(40, "case", 50, "piece", "en") == "40 pieces"  # less than a case
    assert display.packed(1200, None, None, "piece", "en") == "1,200 pieces"


@pytest.mark.parametrize(
    ("code", "zh", "en"),
    [
        ("42", "湖北省", "Hubei"),
        ("4201", "湖北省武汉市", "Wuhan, Hubei"),
        ("420106", "武汉市武昌区", "Wuchang District, Wuhan"),
        ("440304", "深圳市福田区", "Futian District, Shenzhen"),
        ("1101", "北京市", "Beijing"),
        ("110105", "北京市朝阳区", "Chaoyang District, Beijing"),
    ],
)
def test_region_codes_read_as_names(code: str, zh: str, en: str) -> None:
    assert regions.name(code, "zh") == zh
    assert regions.name(code, "en") == en
    assert regions.point(code) is not None


def test_unknown_codes_are_refused_and_names_are_searchable() -> None:
    check = regions.RegionCode()
    assert check("420106") == "420106"
    for bad in ("4299", "990000", "4", "abc"):
        with pytest.raises(ValidationError):
            check(bad)
    assert regions.name("4299") == "4299"
    # The administration's organisation covers the whole country.
    assert (regions.name("00", "zh"), regions.name("00", "en")) == ("全国", "All of China")
    assert ("420106", "武汉市武昌区") in regions.search("武昌")
    assert regions.search("Wuchang District", "en")[0][0] == "420106"


def test_every_region_code_in_the_demo_and_test_data_reads_as_a_name() -> None:
    """Demo organisations, pledges and needs and the tests' own data name regions the
    table knows (the administration's whole country aside); the tests that check a
    refusal use codes no region has, and are not data."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    given = re.compile(
        r"""(?:["'](?:region|origin_region)["']\s*:\s*|region\s*=\s*)["'](\d{2,6})["']"""
    )
    found: dict[str, set[str]] = {}
    for folder in ("services", "tests", "bench"):
        for path in (root / folder).rglob("*.py"):
            for code in given.findall(path.read_text(encoding="utf-8")):
                found.setdefault(code, set()).add(str(path.relative_to(root)))
    assert len(found) >= 5
    unnamed = {
        code: where
        for code, where in found.items()
        if code != regions.WHOLE_COUNTRY and not regions.known(code)
    }
    assert unnamed == {}
    for code in found:
        assert not regions.name(code, "en").isdigit(), code
