"""The verification API: coordinators verify or suspend an organisation."""

from __future__ import annotations

import uuid
from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from services.gateway.orgs.api import OrganisationDetailSchema, dump_organisation
from services.gateway.orgs.service import get_organisation
from services.gateway.verification.service import (
    _check_may_decide,
    suspend_organisation,
    verify_organisation,
)
from shared.identity import current_identity, require_roles
from shared.web import runtime

blp = Blueprint(
    "verification",
    __name__,
    url_prefix="/api/v1/orgs",
    description="Verification of organisations by coordinators",
)


class VerifySchema(Schema):
    evidence = fields.String(
        required=True,
        validate=validate.Length(min=3, max=2000),
        metadata={
            "description": "What the decision rests on, e.g. the licence number checked "
            "against the registry, a call to the listed number"
        },
    )


class SuspendSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=3, max=2000))


@blp.route("/<uuid:org_id>/verify", methods=["POST"])
@blp.arguments(VerifySchema)
@blp.response(200, OrganisationDetailSchema)
@require_roles("coordinator")
def verify(data: dict[str, Any], org_id: uuid.UUID) -> Any:
    """Verify an organisation (coordinators; a coordinator office needs an admin)."""
    rt = runtime()
    with rt.unit_of_work() as session:
        org = get_organisation(session, org_id)
        _check_may_decide(org)
        verify_organisation(
            session,
            rt.outbox,
            org,
            evidence=data["evidence"],
            verified_by=current_identity().user_id,
        )
        return dump_organisation(org)


@blp.route("/<uuid:org_id>/suspend", methods=["POST"])
@blp.arguments(SuspendSchema)
@blp.response(200, OrganisationDetailSchema)
@require_roles("coordinator")
def suspend(data: dict[str, Any], org_id: uuid.UUID) -> Any:
    """Suspend an organisation: its needs leave matching and its pledges are not reserved."""
    rt = runtime()
    with rt.unit_of_work() as session:
        org = get_organisation(session, org_id)
        _check_may_decide(org)
        suspend_organisation(
            session,
            rt.outbox,
            org,
            reason=data["reason"],
            suspended_by=current_identity().user_id,
        )
        return dump_organisation(org)
