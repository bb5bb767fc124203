"""The dispatch service: needs, matching, allocations and shipments."""

from __future__ import annotations

import uuid

from flask import Flask
from sqlalchemy.orm import Session

from services.dispatch.allocations import api as allocations_api
from services.dispatch.allocations import service as allocations
from services.dispatch.allocations.tasks import saga_batch_handlers, saga_handlers
from services.dispatch.matching import api as matching_api
from services.dispatch.matching import service as matching_service
from services.dispatch.matching.tasks import register_matching_tasks
from services.dispatch.models import Allocation, Organisation, Place, messaging
from services.dispatch.needs import api as needs_api
from services.dispatch.needs.community import community_need_handlers
from services.dispatch.needs.tasks import register_need_tasks
from services.dispatch.receipts import api as receipts_api
from services.dispatch.shipments import api as shipments_api
from services.dispatch.shipments import service as shipments
from services.dispatch.shipments.tasks import register_shipment_tasks
from services.dispatch.transparency import api as transparency_api
from services.dispatch.transparency.community import community_reach_handlers
from services.dispatch.transparency.help import help_handlers
from shared.config import Settings
from shared.events import Event
from shared.inbox import Handler
from shared.org_directory import org_directory_blueprint, org_event_handlers
from shared.places import erase_places, place_event_handlers
from shared.web import ServiceRuntime, create_service_app


def _org_handlers(rt: ServiceRuntime) -> dict[str, Handler]:
    """The read model of organisations, plus what verification changes here: a verified
    recipient's draft needs open, and its needs and the donor's supply enter matching."""
    handlers = org_event_handlers(Organisation)
    keep_in_step = handlers["org.verified"]

    def on_verified(session: Session, event: Event) -> None:
        keep_in_step(session, event)
        from services.dispatch.needs import service as needs

        needs.open_drafts_of(session, rt.outbox, event.data()["id"])
        for item in allocations.items_of_org(session, event.data()["id"]):
            matching_service.request_matching(session, item)

    keep_erased = handlers["org.erased"]

    def on_erased(session: Session, event: Event) -> None:
        keep_erased(session, event)
        shipments.erase_donor(session, uuid.UUID(str(event.data()["id"])))
        erase_places(session, Place, uuid.UUID(str(event.data()["id"])))

    return {
        **handlers,
        **place_event_handlers(Place),
        "org.verified": on_verified,
        "org.erased": on_erased,
    }


def create_app(settings: Settings | None = None, *, testing: bool = False) -> Flask:
    settings = settings or Settings.from_env()
    app, flask_api = create_service_app(
        "dispatch",
        settings,
        title="aidlink dispatch",
        models=messaging,
        testing=testing,
    )
    rt: ServiceRuntime = app.extensions["aidlink"]
    rt.inbox.handlers.update(_org_handlers(rt))

    def plan_shipment(session: Session, allocation: Allocation) -> None:
        # Reserved allocations are consolidated into shipments unless a coordinator
        # does it by hand (AIDLINK_SHIPMENT_AUTO_PLAN=false).
        if rt.settings.shipment_auto_plan:
            shipments.plan_allocation(session, rt.outbox, allocation)

    def plan_shipments(session: Session, reserved: list[Allocation]) -> None:
        if rt.settings.shipment_auto_plan:
            shipments.plan_allocations(session, rt.outbox, reserved)

    rt.inbox.handlers.update(
        saga_handlers(matching_service.request_matching, on_reserved=plan_shipment)
    )
    rt.inbox.batch_handlers.update(
        saga_batch_handlers(plan_shipments, on_change=matching_service.request_matching)
    )
    rt.inbox.handlers.update(community_need_handlers(rt.outbox))
    rt.inbox.handlers.update(community_reach_handlers())
    rt.inbox.self_ordered.update(community_reach_handlers())
    rt.inbox.handlers.update(help_handlers())
    matching_service.install_debounce(rt)
    register_matching_tasks(rt)
    register_need_tasks(rt)
    register_shipment_tasks(rt)
    flask_api.register_blueprint(
        org_directory_blueprint("dispatch", Organisation, allocations.donor_personal_data)
    )
    flask_api.register_blueprint(needs_api.blp)
    flask_api.register_blueprint(matching_api.blp)
    flask_api.register_blueprint(allocations_api.blp)
    flask_api.register_blueprint(shipments_api.blp)
    flask_api.register_blueprint(receipts_api.blp)
    flask_api.register_blueprint(transparency_api.trace_blp)
    flask_api.register_blueprint(transparency_api.transparency_blp)
    return app
