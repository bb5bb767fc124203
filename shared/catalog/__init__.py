"""The item catalogue: kinds of relief supply, their units and how they convert.

Reference data, versioned as ``CATALOG_VERSION``, with no I/O. Every line of a
pledge, need or shipment names an item by its stable code and holds its quantity as
a whole number of the item's base unit; what people enter ("1.5 吨", "3 箱 of 50",
"20 瓶 of 500 ml") is converted exactly by ``to_base``.

Items (catalogue 2020.1)
------------------------

=================  ==============  ===========  =====================================
code               names           base unit    units accepted; standards
=================  ==============  ===========  =====================================
mask               口罩 Mask        piece        piece, box, case; GB19083-2010
                                                 (医用防护口罩), YY0469-2011 (医用外科口罩),
                                                 GB2626-2006 (KN95), YY/T0969-2013
                                                 (一次性使用医用口罩)
gloves_exam        医用检查手套      pair         pair, box, case; nitrile, latex
protective_suit    防护服           set          set, box, case; GB19082-2009
goggles            护目镜           piece        piece, box, case; GB14866-2006
face_shield        防护面屏         piece        piece, box, case
disinfectant_84    84消毒液         ml           ml, l, bottle, box, case, g, kg, t, jin
alcohol_75         75%酒精          ml           ml, l, bottle, box, case, g, kg, t, jin
hand_sanitiser     免洗洗手液       ml           ml, l, bottle, box, case, g, kg, t, jin
air_purifier       空气净化器       unit         unit
thermometer        体温计           unit         unit, box, case
test_kit           检测试剂盒       kit          kit, case
fruit              水果             g            g, kg, t, jin; perishable, 14 days
vegetables         蔬菜             g            g, kg, t, jin; perishable, 7 days
rice               大米             g            g, kg, t, jin
cooking_oil        食用油           ml           ml, l, bottle, box, case, g, kg, t, jin
=================  ==============  ===========  =====================================

Conversion rules
----------------

* Mass is held in grams: g = 1, kg = 1 000, t (tonne) = 1 000 000, jin (斤) = 500.
  Volume is held in millilitres: ml = 1, l = 1 000. Counts (piece, pair, set,
  unit, kit) do not convert into one another; each item is counted in one.
* A box or case of a counted item needs ``pack_size``, the number of base units
  in it: a box of 50 masks is 50 pieces; a glove box marked "100只" is 50 pairs.
* Liquids are entered as ml, l, a bottle (needs ``bottle_volume_ml``) or a box or
  case of bottles (needs ``pack_size`` bottles and ``bottle_volume_ml`` each), or
  by mass (g, kg, t, jin) with ``density_g_per_l``, the grams in a litre as the label
  states (it differs between products, so the catalogue assumes none): 1 kg of a
  liquid of 800 g/l is 1 250 ml; 1 kg at 1 100 g/l would be 909.09... ml and is refused.
* Quantities are exact: an int, a Decimal or a decimal string ("1.5", "1,000",
  also in full-width digits); floats are refused. A conversion that does not come to a whole number
  of base units (1.5 pieces, 0.0005 g) is an error, never rounded. Quantities must
  be positive and convert to at most ``MAX_BASE_QUANTITY`` (10**12) base units.
* Refusals raise ``CatalogError``, a ValueError whose ``field`` names the input at
  fault: "item", "unit", "quantity", "pack_size", "bottle_volume_ml",
  "density_g_per_l", "standard".

Names people write
------------------

``resolve`` finds an item, and a standard if one is named, from a code, a Chinese or
English name or alias, or a standard's code or name, ignoring case, spaces, hyphens,
full-width forms and an English plural: "医用外科口罩" and "Surgical masks" are a mask
to YY0469-2011. ``normalise_unit`` reads unit spellings: pcs/piece/个/只/件/片/支,
pair/副/双, set/套, unit/台, kit, box/盒, case/carton/箱, bottle/瓶, g/克,
kg/公斤/千克, t/tonne/ton/吨, jin/斤, ml/毫升, l/L/升. Some mean another unit for a
given item: a piece (件) of protective suits is a set, a pair (副) of goggles is a
piece, a piece of thermometers or air purifiers is a unit, a box (盒) or set (套) of
test kits is a kit. "ton" is read as a metric tonne.

Versions
--------

Codes are stable: a later version may add items, units, standards and names, but
never renames or removes a code or changes an item's base unit.
"""

from __future__ import annotations

from shared.catalog.convert import (
    exact_decimal,
    from_base,
    parse_quantity,
    to_base,
    unit_factor,
)
from shared.catalog.export import catalog_as_dict, item_as_dict, unit_as_dict
from shared.catalog.items import CATALOG_VERSION, CATEGORIES, MAX_BASE_QUANTITY
from shared.catalog.lookup import (
    check_standard,
    get_item,
    get_unit,
    items,
    normalise_unit,
    resolve,
    resolve_item,
    units,
)
from shared.catalog.model import CatalogError, Item, Names, Standard, Unit, UnitKind

__all__ = [
    "CATALOG_VERSION",
    "CATEGORIES",
    "MAX_BASE_QUANTITY",
    "CatalogError",
    "Item",
    "Names",
    "Standard",
    "Unit",
    "UnitKind",
    "catalog_as_dict",
    "check_standard",
    "exact_decimal",
    "from_base",
    "get_item",
    "get_unit",
    "item_as_dict",
    "items",
    "normalise_unit",
    "parse_quantity",
    "resolve",
    "resolve_item",
    "to_base",
    "unit_as_dict",
    "unit_factor",
    "units",
]
