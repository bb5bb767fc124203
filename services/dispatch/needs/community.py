"""A community's confirmed household orders become its need (community.need_requested):
one line per item, the people its households are, at the community's own address."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from services.dispatch.models import Organisation
from services.dispatch.needs import service as needs
from shared.events import Event
from shared.inbox import Handler, OutOfOrder
from shared.outbox import Outbox


def community_need_handlers(outbox: Outbox) -> dict[str, Handler]:
    def on_need_requested(session: Session, event: Event) -> None:
        data = event.data()
        org = session.get(Organisation, uuid.UUID(str(data["org_id"])))
        if org is None:
            raise OutOfOrder(f"{event.type} for {data['org_id']} before its org.registered")
        needs.create_need(
            session,
            outbox,
            org_id=org.id,
            org_verified=org.status == "verified",
            data={
                "lines": [
                    {"item": line["item"], "quantity": line["quantity"], "unit": line["unit"]}
                    for line in data["lines"]
                ],
                "location": {"region": org.region, "address": org.address},
                "people_served": data["people_served"] or None,
                "notes": f"Household orders: {data['title']} ({data['households']} households)",
            },
        )

    return {"community.need_requested": on_need_requested}
