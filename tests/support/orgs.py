"""Small stories the backbone tests tell: a hospital registers, read models follow."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from shared.runtime import ServiceRuntime

HOSPITAL = {
    "name": "Wuhan Union Hospital",
    "kind": "hospital",
    "region": "420103",
    "address": "1277 Jiefang Avenue",
}


def count(rt: ServiceRuntime, model: Any, *where: Any) -> int:
    with rt.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def read_model_org(rt: ServiceRuntime, org_id: uuid.UUID | str) -> Any:
    from services.community.models import Organisation as CommunityOrg
    from services.dispatch.models import Organisation as DispatchOrg
    from services.donations.models import Organisation as DonationsOrg

    model = {"donations": DonationsOrg, "community": CommunityOrg}.get(rt.name, DispatchOrg)
    with rt.session_factory() as session:
        return session.get(model, uuid.UUID(str(org_id)))
