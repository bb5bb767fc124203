"""The community catalogue: the everyday goods and medicines a building leader orders
for a household, beside the relief catalogue (``shared.catalog``).

Households order in the units people buy in (斤 of vegetables, a 5-litre bottle of oil,
a box of tablets). An item that relief supplies also carry names its relief item and
how many of that item's base units one ordered unit is, so that a community's confirmed
orders become a need's lines exactly; the others (eggs, fish, medicines) the committee
buys or fetches itself.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from shared.catalog.model import Names

COMMUNITY_CATALOG_VERSION = "2020.1"


@dataclass(frozen=True)
class CommunityItem:
    """One thing a household may order, in ``unit``; ``relief_item`` and
    ``base_per_unit`` (that item's base units in one ``unit``) when relief supplies
    carry it. A medicine names its ``dose``."""

    code: str
    names: Names
    unit: Names
    relief_item: str | None = None
    base_per_unit: int = 1
    dose: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def donated(self) -> bool:
        """Whether a community need may ask relief supplies for it."""
        return self.relief_item is not None


COMMUNITY_ITEMS: tuple[CommunityItem, ...] = (
    CommunityItem(
        "vegetables",
        Names("蔬菜", "Vegetables"),
        Names("斤", "jin"),
        relief_item="vegetables",
        base_per_unit=500,
        aliases=("veg", "青菜"),
    ),
    CommunityItem(
        "rice",
        Names("大米", "Rice"),
        Names("公斤", "kg"),
        relief_item="rice",
        base_per_unit=1000,
        aliases=("米",),
    ),
    CommunityItem(
        "cooking_oil",
        Names("食用油", "Cooking oil"),
        Names("5升桶", "5-litre bottle"),
        relief_item="cooking_oil",
        base_per_unit=5000,
        aliases=("oil", "油"),
    ),
    CommunityItem("eggs", Names("鸡蛋", "Eggs"), Names("个", "egg"), aliases=("egg", "蛋")),
    CommunityItem("fish", Names("鱼", "Fish"), Names("斤", "jin"), aliases=("鲫鱼", "carp")),
    CommunityItem(
        "metformin_500mg",
        Names("二甲双胍片", "Metformin tablets"),
        Names("盒", "box"),
        dose="0.5 g, 60 tablets",
        aliases=("metformin", "二甲双胍"),
    ),
    CommunityItem(
        "amlodipine_5mg",
        Names("苯磺酸氨氯地平片", "Amlodipine tablets"),
        Names("盒", "box"),
        dose="5 mg, 28 tablets",
        aliases=("amlodipine", "氨氯地平"),
    ),
    CommunityItem(
        "insulin_glargine",
        Names("甘精胰岛素注射液", "Insulin glargine"),
        Names("支", "pen"),
        dose="300 IU / 3 ml",
        aliases=("insulin", "胰岛素"),
    ),
)

_BY_CODE = {item.code: item for item in COMMUNITY_ITEMS}


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


_BY_NAME = {
    _key(name): item
    for item in COMMUNITY_ITEMS
    for name in (item.code, item.names.zh, item.names.en, *item.aliases)
}


def community_item(name: str) -> CommunityItem | None:
    """The item a code, name (either language) or alias stands for, else None."""
    return _BY_CODE.get(name) or _BY_NAME.get(_key(name))
