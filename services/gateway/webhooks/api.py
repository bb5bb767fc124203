"""The webhooks API: an organisation's subscriptions and their deliveries."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.audit import service as audit
from services.gateway.models import WebhookDelivery, WebhookSubscription
from services.gateway.webhooks.service import (
    DELIVERY_AUDIT_FIELDS,
    DELIVERY_STATUSES,
    WEBHOOK_AUDIT_FIELDS,
    WEBHOOK_EVENT_TYPES,
    _event_types,
    check_target,
    new_webhook_secret,
    schedule,
)
from shared.db import utcnow
from shared.errors import Conflict, NotFound
from shared.identity import current_identity, forbidden, require_login
from shared.pagination import ListArgsSchema, page_schema, paginate
from shared.web import db_session, runtime

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description="Webhook subscriptions of an organisation, and their deliveries",
)
EVENT_TYPES_FIELD_DOC = "Any of: " + ", ".join(WEBHOOK_EVENT_TYPES)


def _event_types_field(**kwargs: Any) -> fields.List:
    # OneOf on each entry (not ContainsOnly on the list, which OpenAPI would read as an
    # enum of whole lists).
    return fields.List(
        fields.String(validate=validate.OneOf(WEBHOOK_EVENT_TYPES)),
        validate=validate.Length(min=1, max=len(WEBHOOK_EVENT_TYPES) * 2),
        metadata={"description": EVENT_TYPES_FIELD_DOC},
        **kwargs,
    )


def _url_field(**kwargs: Any) -> fields.Url:
    return fields.Url(
        schemes={"http", "https"},
        validate=validate.Length(max=2000),
        metadata={"description": "Where deliveries are POSTed (http or https)"},
        **kwargs,
    )


class WebhookInSchema(Schema):
    url = _url_field(required=True)
    event_types = _event_types_field(required=True)
    description = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=200)
    )


class WebhookPatchSchema(Schema):
    url = _url_field()
    event_types = _event_types_field()
    description = fields.String(allow_none=True, validate=validate.Length(max=200))
    active = fields.Boolean(
        metadata={
            "description": "false pauses deliveries; true re-enables a disabled subscription "
            "and clears its count of failed deliveries"
        }
    )


class WebhookSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    url = fields.String()
    event_types = fields.List(fields.String())
    description = fields.String(allow_none=True)
    active = fields.Boolean()
    consecutive_failures = fields.Integer(
        metadata={"description": "Deliveries in a row that failed all their attempts"}
    )
    disabled_at = fields.AwareDateTime(allow_none=True)
    disabled_reason = fields.String(allow_none=True)
    created_by = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    version = fields.Integer()


class NewWebhookSchema(WebhookSchema):
    secret = fields.String(
        metadata={"description": "The key deliveries are signed with; shown this once only"}
    )


class WebhookListArgsSchema(ListArgsSchema):
    org_id = fields.UUID(metadata={"description": "Coordinators: another organisation's"})


class WebhookDeliverySchema(Schema):
    id = fields.UUID()
    subscription_id = fields.UUID()
    event_id = fields.String()
    event_type = fields.String()
    status = fields.String(metadata={"description": "pending, succeeded or failed"})
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    next_attempt_at = fields.AwareDateTime(allow_none=True)
    last_attempt_at = fields.AwareDateTime(allow_none=True)
    delivered_at = fields.AwareDateTime(allow_none=True)
    payload = fields.Dict(metadata={"description": "The body sent, less its id"})


class DeliveryListArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


WebhookPageSchema = page_schema(WebhookSchema, "WebhookPageSchema")
WebhookDeliveryPageSchema = page_schema(WebhookDeliverySchema, "WebhookDeliveryPageSchema")


def _subscription(
    session: Session, webhook_id: uuid.UUID, *, lock: bool = False
) -> WebhookSubscription:
    """The subscription if the caller may see it; another organisation's is a 404."""
    sub = session.get(WebhookSubscription, webhook_id, with_for_update=lock)
    if sub is None or not current_identity().can_act_for(sub.org_id):
        raise NotFound(f"No webhook subscription {webhook_id}.", slug="webhook-not-found")
    return sub


@blp.route("")
class Webhooks(MethodView):
    @blp.arguments(WebhookListArgsSchema, location="query")
    @blp.response(200, WebhookPageSchema)
    @require_login
    def get(self, args: dict[str, Any]) -> Any:
        """Your organisation's webhook subscriptions (never their secrets)."""
        identity = current_identity()
        org_id = args.get("org_id") or identity.org_id
        if not identity.can_act_for(org_id):
            raise forbidden("Only coordinators may list another organisation's webhooks.")
        stmt = select(WebhookSubscription).where(WebhookSubscription.org_id == org_id)
        return paginate(
            db_session(), stmt, WebhookSubscription, cursor=args["cursor"], limit=args["limit"]
        )

    @blp.arguments(WebhookInSchema)
    @blp.response(201, NewWebhookSchema)
    @require_login
    def post(self, data: dict[str, Any]) -> Any:
        """Subscribe a URL to event types concerning your organisation. The answer holds
        the signing secret, shown this once only."""
        identity = current_identity()
        if identity.org_id is None:
            raise forbidden("Subscribe while signed in for an organisation.")
        check_target(runtime().settings, data["url"])
        secret = new_webhook_secret()
        with runtime().unit_of_work() as session:
            sub = WebhookSubscription(
                id=uuid.uuid4(),
                org_id=identity.org_id,
                url=data["url"],
                event_types=_event_types(data["event_types"]),
                secret=secret,
                description=(data.get("description") or "").strip() or None,
                active=True,
                consecutive_failures=0,
                created_by=identity.user_id,
            )
            session.add(sub)
            session.flush()
            audit.record(
                session,
                "webhook.create",
                "webhook_subscription",
                sub.id,
                after=audit.snapshot(sub, *WEBHOOK_AUDIT_FIELDS),
            )
        return sub


@blp.route("/<uuid:webhook_id>")
class WebhookById(MethodView):
    @blp.response(200, WebhookSchema)
    @require_login
    def get(self, webhook_id: uuid.UUID) -> Any:
        return _subscription(db_session(), webhook_id)

    @blp.arguments(WebhookPatchSchema)
    @blp.response(200, WebhookSchema)
    @require_login
    def patch(self, data: dict[str, Any], webhook_id: uuid.UUID) -> Any:
        """Change the URL, event types or description; pause or re-enable."""
        with runtime().unit_of_work() as session:
            sub = _subscription(session, webhook_id, lock=True)
            before = audit.snapshot(sub, *WEBHOOK_AUDIT_FIELDS)
            if "url" in data:
                check_target(runtime().settings, data["url"])
                sub.url = data["url"]
            if "event_types" in data:
                sub.event_types = _event_types(data["event_types"])
            if "description" in data:
                sub.description = (data["description"] or "").strip() or None
            if data.get("active") is True and not sub.active:
                sub.active = True
                sub.consecutive_failures = 0
                sub.disabled_at = None
                sub.disabled_reason = None
            elif data.get("active") is False and sub.active:
                sub.active = False
                sub.disabled_at = utcnow()
                sub.disabled_reason = "Paused by the organisation."
            after = audit.snapshot(sub, *WEBHOOK_AUDIT_FIELDS)
            if after != before:
                session.flush()
                audit.record(
                    session,
                    "webhook.update",
                    "webhook_subscription",
                    sub.id,
                    before=before,
                    after=after,
                )
        return sub

    @blp.response(204)
    @require_login
    def delete(self, webhook_id: uuid.UUID) -> Any:
        """Delete the subscription and its delivery log; pending deliveries stop."""
        with runtime().unit_of_work() as session:
            sub = _subscription(session, webhook_id, lock=True)
            before = audit.snapshot(sub, *WEBHOOK_AUDIT_FIELDS)
            session.delete(sub)
            session.flush()
            audit.record(
                session, "webhook.delete", "webhook_subscription", webhook_id, before=before
            )
        return Response(status=204)


@blp.route("/<uuid:webhook_id>/deliveries")
class Deliveries(MethodView):
    @blp.arguments(DeliveryListArgsSchema, location="query")
    @blp.response(200, WebhookDeliveryPageSchema)
    @require_login
    def get(self, args: dict[str, Any], webhook_id: uuid.UUID) -> Any:
        """The delivery log, oldest first: each delivery's status, attempts so far and the
        outcome of its latest attempt."""
        session = db_session()
        _subscription(session, webhook_id)
        stmt = select(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id)
        if args.get("status"):
            stmt = stmt.where(WebhookDelivery.status == args["status"])
        return paginate(session, stmt, WebhookDelivery, cursor=args["cursor"], limit=args["limit"])


@blp.route("/<uuid:webhook_id>/deliveries/<uuid:delivery_id>/retry", methods=["POST"])
@blp.response(202, WebhookDeliverySchema)
@require_login
def retry_delivery(webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Any:
    """Send a failed delivery again, with a fresh round of attempts."""
    with runtime().unit_of_work() as session:
        sub = _subscription(session, webhook_id)
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None or delivery.subscription_id != sub.id:
            raise NotFound(f"No delivery {delivery_id}.", slug="webhook-delivery-not-found")
        if not sub.active:
            raise Conflict(
                "The subscription is disabled; re-enable it (PATCH active=true) first.",
                slug="webhook-disabled",
            )
        if delivery.status != "failed":
            raise Conflict(
                f"Only a failed delivery can be retried; this one is {delivery.status}.",
                slug="webhook-delivery-not-failed",
            )
        before = audit.snapshot(delivery, *DELIVERY_AUDIT_FIELDS)
        delivery.status = "pending"
        delivery.attempts = 0
        delivery.next_attempt_at = utcnow()
        session.flush()
        audit.record(
            session,
            "webhook.delivery.retry",
            "webhook_delivery",
            delivery.id,
            before=before,
            after=audit.snapshot(delivery, *DELIVERY_AUDIT_FIELDS),
        )
        schedule(session, delivery.id)
    return delivery
