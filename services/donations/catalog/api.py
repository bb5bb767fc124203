"""The catalogue API: every kind of supply, its units and standards. Public."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from shared import catalog

blp = Blueprint("catalog", __name__, url_prefix="/api/v1/catalog", description="The item catalogue")


class NamesSchema(Schema):
    zh = fields.String()
    en = fields.String()


class CatalogItemSchema(Schema):
    code = fields.String()
    names = fields.Nested(NamesSchema)
    category = fields.String()
    base_unit = fields.String()
    units = fields.List(fields.Raw())
    standards = fields.List(fields.Raw())
    perishable = fields.Boolean()
    shelf_life_days = fields.Integer(allow_none=True)


class CatalogSchema(Schema):
    version = fields.String()
    items = fields.List(fields.Nested(CatalogItemSchema))


@blp.route("/items")
class CatalogItems(MethodView):
    @blp.response(200, CatalogSchema)
    def get(self) -> Any:
        """Every kind of supply, its units and standards, in Chinese and English.
        Public: no sign-in needed."""
        return {
            "version": catalog.CATALOG_VERSION,
            "items": [catalog.item_as_dict(item) for item in catalog.items()],
        }
