"""The API's optional ``display`` fields: quantities as people read them, beside the
exact figures.

A request with ``?display=true`` gets, in each object of the answer that holds
quantities (pledge and need lines, allocations, shipment lines, the ledger's figures
and flows, the lines of traces), a ``display`` object giving each of those quantities
as people read it, "40 吨" / "40 t", "46万 个" / "460,000 pieces", in the language of
``Accept-Language`` (Chinese when it prefers zh, English otherwise). The text comes from
``shared.catalog.display``, the module the web UI and printed documents use. Without
the parameter the answer is unchanged: every quantity stays an exact whole number in
the item's base unit, and those stay in the answer with ``display`` too.

A response schema takes part by mixing in :class:`DisplayQuantities` and naming its
quantities in ``display_fields``; the unit is the ``base_unit`` the object answers with,
else its ``item``'s, else the one ``display_unit`` finds for it (a receipt line's, by
its shipment line). Objects nested in it that hold quantities of the same item without
naming it (a trace line's parties and their shipments) are named in
``display_nested`` and read in the unit of the object holding them. Each route
answering with such a schema documents the parameter with
``parameters=[DISPLAY_PARAMETER]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from flask import has_request_context, request
from marshmallow import fields, post_dump

from shared.catalog import CatalogError, display, get_item
from shared.errors import RuleBroken

# What marshmallow's Boolean takes, as the documented parameter's type says.
TRUE = frozenset(str(v).lower() for v in fields.Boolean.truthy)
FALSE = frozenset(str(v).lower() for v in fields.Boolean.falsy)
LANGUAGES = ("zh", "en")

DISPLAY_PARAMETER: dict[str, Any] = {
    "name": "display",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "true: each object holding quantities gets a `display` object with "
    'those quantities as people read them ("40 吨" / "40 t"), in the language of '
    "Accept-Language (zh: Chinese, otherwise English). The exact base-unit figures "
    "stay as they are.",
}


def check_parameter() -> None:
    """Refuse a ``display`` that is not a boolean, before the request does anything
    (run before every request of a service)."""
    value = request.args.get("display")
    if value is not None and value.strip().lower() not in TRUE | FALSE:
        raise RuleBroken(
            "The request has invalid fields.",
            slug="validation-error",
            errors={"display": ["Not a valid boolean: true or false."]},
        )


def requested_language() -> str | None:
    """The language the request asks ``display`` fields in, or None when it asks none."""
    if not has_request_context():
        return None
    if request.args.get("display", "").strip().lower() not in TRUE:
        return None
    return "zh" if request.accept_languages.best_match(LANGUAGES, default="en") == "zh" else "en"


class DisplayField:
    """The ``display`` field, declared for the OpenAPI document: mixed into a schema
    whose objects are given theirs by the schema holding them (``display_nested``)."""

    display = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        dump_only=True,
        metadata={
            "description": "Only with ?display=true: each quantity of this object as "
            'people read it ("40 吨" / "40 t"), by the quantity\'s name, in the '
            "language of Accept-Language (zh: Chinese, otherwise English)"
        },
    )


class DisplayQuantities(DisplayField):
    """Mixin for a response schema (before ``Schema`` in its bases): with
    ``?display=true`` the object gets ``display``, each of ``display_fields`` as people
    read it. ``display_packed`` names a quantity read as packed ("24 cases of 50
    pieces + 30 pieces") when the object has ``pack_unit`` and ``pack_size``."""

    display_fields: ClassVar[tuple[str, ...]] = ()
    display_packed: ClassVar[str | None] = None
    # Dotted paths of nested objects (or lists of them) in the same item -> their
    # quantities: {"recipients": (...), "recipients.shipments": (...)}.
    display_nested: ClassVar[dict[str, tuple[str, ...]]] = {}

    @post_dump(pass_original=True)
    def _display(self, data: dict[str, Any], original: Any, **_kw: Any) -> dict[str, Any]:
        data.pop("display", None)
        language = requested_language()
        if language is None:
            return data
        unit = (
            data.get("base_unit")
            or _base_unit(data.get("item"))
            or self.display_unit(data, original)
        )
        data["display"] = shown(data, self.display_fields, language, self.display_packed, unit)
        for path, names in self.display_nested.items():
            for inner in _at(data, path.split(".")):
                inner["display"] = shown(inner, names, language, unit=unit)
        return data

    def display_unit(self, data: dict[str, Any], original: Any) -> str | None:
        """The base unit of an object that names neither it nor its item."""
        return None


def with_display(
    data: dict[str, Any], names: tuple[str, ...], item: str | None = None
) -> dict[str, Any]:
    """``data`` (an object answered as a plain dict, such as a plan's allocation) with
    its ``display`` when the request asks for one; ``item`` for an object that does not
    name its own (a plan's unmet demand, by its need line)."""
    language = requested_language()
    if language is None:
        return data
    unit = data.get("base_unit") or _base_unit(data.get("item") or item)
    return {**data, "display": shown(data, names, language, unit=unit)}


def shown(
    data: dict[str, Any],
    names: tuple[str, ...],
    language: str,
    packed: str | None = None,
    unit: str | None = None,
) -> dict[str, str]:
    """Each of ``names`` in ``data`` that holds a quantity, as people read it, in
    ``unit`` or else the object's own base unit or its item's."""
    unit = unit or data.get("base_unit") or _base_unit(data.get("item"))
    texts = {}
    for name in names:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        if name == packed and data.get("pack_unit"):
            texts[name] = display.packed(
                value, data.get("pack_unit"), data.get("pack_size"), unit, language
            )
        else:
            texts[name] = display.quantity(value, unit, language)
    return texts


def _at(data: Any, path: list[str]) -> list[dict[str, Any]]:
    """The objects at ``path`` in ``data``, through lists."""
    if isinstance(data, list):
        return [found for element in data for found in _at(element, path)]
    if not isinstance(data, dict):
        return []
    if not path:
        return [data]
    return _at(data.get(path[0]), path[1:])


def _base_unit(item: Any) -> str | None:
    try:
        return get_item(str(item)).base_unit if item else None
    except CatalogError:
        return None
