"""The duplicates API: the review queue, scans, and a coordinator's merge or dismissal."""

from __future__ import annotations

import uuid
from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import or_, select

from services.gateway.audit import service as audit
from services.gateway.duplicates.service import (
    FLAG_STATUSES,
    _flag_records,
    _get_flag,
    _involving,
    _page,
    dismiss_flag,
    dump_flags,
    merge_pair,
    scan_directory,
)
from services.gateway.models import DuplicateFlag, Organisation
from services.gateway.orgs.service import flag_duplicates, get_organisation, refuse_if_merged
from shared.identity import current_identity, require_roles
from shared.pagination import ListArgsSchema, page_schema
from shared.web import db_session, runtime

blp = Blueprint(
    "duplicates",
    __name__,
    url_prefix="/api/v1",
    description="Organisations flagged as probable duplicates, for coordinators to merge "
    "or dismiss",
)

NOTE = validate.Length(max=2000)


class DuplicateOrgSchema(Schema):
    """One side of a flagged pair, as the reviewer compares it."""

    id = fields.UUID()
    name = fields.String()
    name_zh = fields.String(allow_none=True)
    name_en = fields.String(allow_none=True)
    kind = fields.String()
    region = fields.String()
    address = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "pending, verified, suspended or merged"})
    licence_number = fields.String(allow_none=True)
    merged_into_id = fields.UUID(allow_none=True)
    created_at = fields.AwareDateTime()


class DuplicateFlagSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID(metadata={"description": "The organisation that was checked"})
    candidate_id = fields.UUID(metadata={"description": "The organisation it resembles"})
    org = fields.Nested(DuplicateOrgSchema)
    candidate = fields.Nested(DuplicateOrgSchema)
    score = fields.Float(metadata={"description": "1.0 for equal normalised names"})
    reason = fields.String(metadata={"description": "Why the pair was flagged"})
    status = fields.String(metadata={"description": "open, merged or dismissed"})
    created_at = fields.AwareDateTime()
    resolved_at = fields.AwareDateTime(allow_none=True)
    resolved_by = fields.UUID(allow_none=True)
    note = fields.String(allow_none=True)


DuplicateFlagPageSchema = page_schema(DuplicateFlagSchema, "DuplicateFlagPageSchema")


class QueueArgsSchema(ListArgsSchema):
    status = fields.String(
        load_default="open",
        validate=validate.OneOf(FLAG_STATUSES),
        metadata={"description": "open (the default), merged or dismissed"},
    )
    region = fields.String(
        validate=validate.Regexp(r"^\d{1,6}$", error="Digits only."),
        metadata={"description": "Only pairs with either organisation under this code"},
    )


class OrgFlagsArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(FLAG_STATUSES))


class OrgScanSchema(Schema):
    new_flags = fields.Integer(metadata={"description": "Pairs flagged by this scan"})
    items = fields.List(
        fields.Nested(DuplicateFlagSchema),
        metadata={"description": "The organisation's open flags, new or not"},
    )


class DirectoryScanSchema(Schema):
    scanned = fields.Integer(metadata={"description": "Organisations checked"})
    new_flags = fields.Integer(metadata={"description": "Pairs flagged by this scan"})


class DismissSchema(Schema):
    note = fields.String(load_default=None, allow_none=True, validate=NOTE)


class MergeSchema(Schema):
    keep = fields.UUID(
        required=True,
        metadata={"description": "The organisation to keep: one of the pair"},
    )
    note = fields.String(load_default=None, allow_none=True, validate=NOTE)


@blp.route("/duplicates", methods=["GET"])
@blp.arguments(QueueArgsSchema, location="query")
@blp.response(200, DuplicateFlagPageSchema)
@require_roles("coordinator")
def queue(args: dict[str, Any]) -> Any:
    """The review queue: flagged pairs, oldest first, both organisations side by side."""
    stmt = select(DuplicateFlag).where(DuplicateFlag.status == args["status"])
    if args.get("region"):
        in_region = select(Organisation.id).where(Organisation.region.startswith(args["region"]))
        stmt = stmt.where(
            or_(DuplicateFlag.org_id.in_(in_region), DuplicateFlag.candidate_id.in_(in_region))
        )
    return _page(db_session(), stmt, args)


@blp.route("/orgs/<uuid:org_id>/duplicates", methods=["GET"])
@blp.arguments(OrgFlagsArgsSchema, location="query")
@blp.response(200, DuplicateFlagPageSchema)
@require_roles("coordinator")
def org_flags(args: dict[str, Any], org_id: uuid.UUID) -> Any:
    """The flags pairing this organisation with another, on either side, whatever
    their status unless one is asked for."""
    session = db_session()
    get_organisation(session, org_id)
    stmt = select(DuplicateFlag).where(_involving(org_id))
    if args.get("status"):
        stmt = stmt.where(DuplicateFlag.status == args["status"])
    return _page(session, stmt, args)


@blp.route("/orgs/<uuid:org_id>/duplicates/scan", methods=["POST"])
@blp.response(200, OrgScanSchema)
@require_roles("coordinator")
def scan_org(org_id: uuid.UUID) -> Any:
    """Check this organisation against the directory again. Pairs flagged before keep
    their flag and its decision; answers the organisation's open flags."""
    rt = runtime()
    with rt.unit_of_work() as session:
        org = get_organisation(session, org_id)
        refuse_if_merged(org)
        new = flag_duplicates(session, org)
        if new:
            audit.record(
                session,
                "duplicate.scan",
                "organisation",
                org.id,
                after={"new_flags": _flag_records(new)},
            )
        flags = session.scalars(
            select(DuplicateFlag)
            .where(_involving(org.id), DuplicateFlag.status == "open")
            .order_by(DuplicateFlag.created_at, DuplicateFlag.id)
        ).all()
        return {"new_flags": len(new), "items": dump_flags(session, flags)}


@blp.route("/duplicates/scan", methods=["POST"])
@blp.response(200, DirectoryScanSchema)
@require_roles("coordinator")
def scan_all() -> Any:
    """Check the whole directory (all but merged organisations). Pairs flagged before
    keep their flag and its decision; answers how many pairs were newly flagged."""
    rt = runtime()
    with rt.unit_of_work() as session:
        scanned, new = scan_directory(session)
        if new:
            audit.record(
                session,
                "duplicate.scan",
                "directory",
                None,
                after={"scanned": scanned, "new_flags": _flag_records(new)},
            )
        return {"scanned": scanned, "new_flags": len(new)}


@blp.route("/duplicates/<uuid:flag_id>/dismiss", methods=["POST"])
@blp.arguments(DismissSchema, required=False)
@blp.response(200, DuplicateFlagSchema)
@require_roles("coordinator")
def dismiss(data: dict[str, Any], flag_id: uuid.UUID) -> Any:
    """The two are different organisations: close the flag; scans will not raise the
    pair again."""
    rt = runtime()
    with rt.unit_of_work() as session:
        flag = _get_flag(session, flag_id, lock=True)
        dismiss_flag(session, flag, note=data.get("note"), by=current_identity().user_id)
        return dump_flags(session, [flag])[0]


@blp.route("/duplicates/<uuid:flag_id>/merge", methods=["POST"])
@blp.arguments(MergeSchema)
@blp.response(200, DuplicateFlagSchema)
@require_roles("coordinator")
def merge(data: dict[str, Any], flag_id: uuid.UUID) -> Any:
    """The two are one organisation: keep ``keep`` and merge the other into it. Its
    members move to the kept organisation, its sign-ins and API tokens are revoked,
    and its other open flags are re-pointed at the kept one. The kept organisation's
    status does not change. A coordinator office, or the caller's own organisation,
    is merged by an admin only."""
    rt = runtime()
    with rt.unit_of_work() as session:
        flag = merge_pair(
            session,
            rt.outbox,
            flag_id,
            keep_id=data["keep"],
            note=data.get("note"),
            by=current_identity().user_id,
        )
        return dump_flags(session, [flag])[0]
