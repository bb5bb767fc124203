"""API tokens for integrations: ``/api/v1/tokens``.

A token acts as the user who made it, in the organisation that user signed in for,
within the scopes it names. It is shown once, when created; only its SHA-256 is kept.
Tokens are managed from a signed-in session, never with another token.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from services.gateway.audit import service as audit
from services.gateway.auth.credentials import API_TOKEN_PREFIX, digest, new_secret
from services.gateway.models import ApiToken
from services.gateway.tokens.service import TOKEN_AUDIT_FIELDS
from shared.db import utcnow
from shared.identity import current_identity, require_login
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.problems import Problem
from shared.scopes import SCOPES
from shared.web import db_session, runtime

blp = Blueprint(
    "tokens", __name__, url_prefix="/api/v1/tokens", description="API tokens for integrations"
)


class TokenInSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(
        fields.String(validate=validate.OneOf(sorted(SCOPES))),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "Any of: " + ", ".join(sorted(SCOPES))},
    )
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True)


class TokenSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The token's first characters"})
    scopes = fields.List(fields.String())
    org_id = fields.UUID()
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime(allow_none=True)
    revoked_at = fields.AwareDateTime(allow_none=True)
    last_used_at = fields.AwareDateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "The token itself; shown this once only"})


TokenPageSchema = page_schema(TokenSchema, "TokenPageSchema")


def _own_token(token_id: uuid.UUID) -> ApiToken:
    token = db_session().get(ApiToken, token_id)
    identity = current_identity()
    if token is None or (token.user_id != identity.user_id and not identity.is_admin):
        raise Problem(404, f"No API token {token_id}.", slug="token-not-found")
    return token


@blp.route("")
class Tokens(MethodView):
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(200, TokenPageSchema)
    @require_login
    def get(self, args: dict[str, Any]) -> Any:
        """Your API tokens (never the tokens themselves)."""
        stmt = select(ApiToken).where(ApiToken.user_id == current_identity().user_id)
        return paginate(db_session(), stmt, ApiToken, cursor=args["cursor"], limit=args["limit"])

    @blp.arguments(TokenInSchema)
    @blp.response(201, NewTokenSchema)
    @require_login
    def post(self, data: dict[str, Any]) -> Any:
        """Make an API token acting as you, for the organisation you signed in for."""
        identity = current_identity()
        if data.get("expires_at") is not None and data["expires_at"] <= utcnow():
            raise Problem(
                422, "The expiry is in the past.", errors={"expires_at": ["Must be in the future."]}
            )
        secret = new_secret(API_TOKEN_PREFIX)
        rt = runtime()
        with rt.unit_of_work() as session:
            token = ApiToken(
                id=uuid.uuid4(),
                user_id=identity.user_id,
                org_id=identity.org_id,
                name=data["name"].strip(),
                prefix=secret[: len(API_TOKEN_PREFIX) + 6],
                token_hash=digest(secret),
                scopes=sorted(set(data["scopes"])),
                expires_at=data.get("expires_at"),
                created_at=utcnow(),
            )
            session.add(token)
            session.flush()
            audit.record(
                session,
                "token.create",
                "api_token",
                token.id,
                after=audit.snapshot(token, *TOKEN_AUDIT_FIELDS),
            )
            shown = {name: getattr(token, name) for name in TokenSchema().fields}
        return {**shown, "token": secret}


@blp.route("/<uuid:token_id>")
class TokenById(MethodView):
    @blp.response(200, TokenSchema)
    @require_login
    def get(self, token_id: uuid.UUID) -> Any:
        return _own_token(token_id)

    @blp.response(204)
    @require_login
    def delete(self, token_id: uuid.UUID) -> Any:
        """Revoke a token; it stops working at once."""
        _own_token(token_id)
        rt = runtime()
        with rt.unit_of_work() as session:
            token = session.get(ApiToken, token_id)
            assert token is not None
            if token.revoked_at is None:
                before = audit.snapshot(token, *TOKEN_AUDIT_FIELDS)
                token.revoked_at = utcnow()
                audit.record(
                    session,
                    "token.revoke",
                    "api_token",
                    token.id,
                    before=before,
                    after=audit.snapshot(token, *TOKEN_AUDIT_FIELDS),
                )
        return Response(status=204)
