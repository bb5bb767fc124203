"""The members API: an organisation's admins invite people, change their roles and
remove them; the invited person joins with the invitation's one-time token.

``POST /api/v1/orgs/{id}/invitations`` answers the token and the link once (no e-mail
is sent; only the token's SHA-256 is kept). ``POST /api/v1/auth/invitations/accept``
takes it, with a name and a password for a new account (or an existing account's
password), and makes the person a member with the invitation's roles.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from services.gateway.auth.credentials import PASSWORD
from services.gateway.members import service
from services.gateway.models import User
from services.gateway.orgs.service import get_organisation
from services.gateway.ratelimit import login_limit
from shared.identity import current_identity, require_login
from shared.web import db_session, runtime

blp = Blueprint("members", __name__, url_prefix="/api/v1", description="An organisation's members")


class InvitationInSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    roles = fields.List(
        fields.String(validate=validate.Length(max=16)),
        required=True,
        validate=validate.Length(min=1, max=4),
        metadata={"description": "The organisation kind's role and/or org_admin"},
    )


class InvitationSchema(Schema):
    id = fields.UUID()
    org_id = fields.UUID()
    email = fields.String()
    name = fields.String(allow_none=True)
    roles = fields.List(fields.String())
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()


class NewInvitationSchema(InvitationSchema):
    token = fields.String(metadata={"description": "Shown once"})
    link = fields.String(metadata={"description": "The page that takes the token; shown once"})


class InvitationListSchema(Schema):
    items = fields.List(fields.Nested(InvitationSchema))


class MemberSchema(Schema):
    user_id = fields.UUID()
    name = fields.String()
    email = fields.String()
    active = fields.Boolean(metadata={"description": "False: the account cannot sign in"})
    roles = fields.List(fields.String())
    joined_at = fields.AwareDateTime()


class MemberListSchema(Schema):
    items = fields.List(fields.Nested(MemberSchema))


class RolesSchema(Schema):
    roles = fields.List(
        fields.String(validate=validate.Length(max=16)),
        required=True,
        validate=validate.Length(min=1, max=4),
    )


class MemberRolesSchema(RolesSchema):
    user_id = fields.UUID()
    org_id = fields.UUID()


class AcceptSchema(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=200))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    password = fields.String(required=True, load_only=True, validate=PASSWORD)


class JoinedSchema(Schema):
    user_id = fields.UUID()
    email = fields.String()
    org_id = fields.UUID()
    organisation = fields.String()
    roles = fields.List(fields.String())


class InvitationPreviewSchema(Schema):
    email = fields.String()
    organisation = fields.String()
    roles = fields.List(fields.String())
    expires_at = fields.AwareDateTime()
    has_account = fields.Boolean()


def link_for(token: str) -> str:
    return request.host_url.rstrip("/") + service.JOIN_PATH + token


@blp.route("/orgs/<uuid:org_id>/invitations")
class Invitations(MethodView):
    @blp.response(200, InvitationListSchema)
    @require_login
    def get(self, org_id: uuid.UUID) -> Any:
        """Invitations not yet taken up: the organisation's admins and coordinators."""
        service.require_reader(current_identity(), org_id)
        session = db_session()
        get_organisation(session, org_id)
        return {"items": service.open_invitations(session, org_id)}

    @blp.arguments(InvitationInSchema)
    @blp.response(201, NewInvitationSchema)
    @require_login
    def post(self, data: dict[str, Any], org_id: uuid.UUID) -> Any:
        """Invite someone by e-mail with roles (the organisation's admins, signed in).
        The answer holds the one-time token and link, to pass on to the person; they
        work for 7 days. A new invitation to the same address replaces an open one."""
        rt = runtime()
        with rt.unit_of_work() as session:
            org = get_organisation(session, org_id)
            invitation, token = service.invite(
                session,
                current_identity(),
                org,
                email=data["email"],
                roles=data["roles"],
                name=data.get("name"),
            )
            return {
                **{name: getattr(invitation, name) for name in InvitationSchema().fields},
                "token": token,
                "link": link_for(token),
            }


@blp.route("/orgs/<uuid:org_id>/invitations/<uuid:invitation_id>", methods=["DELETE"])
@blp.response(204)
@require_login
def withdraw(org_id: uuid.UUID, invitation_id: uuid.UUID) -> Any:
    """Withdraw an invitation not yet taken up."""
    rt = runtime()
    with rt.unit_of_work() as session:
        org = get_organisation(session, org_id)
        service.revoke_invitation(session, current_identity(), org, invitation_id)
    return Response(status=204)


@blp.route("/orgs/<uuid:org_id>/members", methods=["GET"])
@blp.response(200, MemberListSchema)
@require_login
def list_members(org_id: uuid.UUID) -> Any:
    """The organisation's users, by name, with their e-mail addresses and roles: its
    admins and coordinators only (names and e-mail addresses are personal data)."""
    service.require_reader(current_identity(), org_id)
    session = db_session()
    get_organisation(session, org_id)
    return {"items": service.members(session, org_id)}


@blp.route("/orgs/<uuid:org_id>/members/<uuid:user_id>")
class Member(MethodView):
    @blp.arguments(RolesSchema)
    @blp.response(200, MemberRolesSchema)
    @require_login
    def put(self, data: dict[str, Any], org_id: uuid.UUID, user_id: uuid.UUID) -> Any:
        """Set a member's roles (the organisation's admins). The last admin keeps
        ``org_admin`` (409 ``last-admin``)."""
        rt = runtime()
        with rt.unit_of_work() as session:
            org = get_organisation(session, org_id)
            roles = service.set_roles(session, current_identity(), org, user_id, data["roles"])
            return {"user_id": user_id, "org_id": org_id, "roles": roles}

    @blp.response(204)
    @require_login
    def delete(self, org_id: uuid.UUID, user_id: uuid.UUID) -> Any:
        """Remove a member (the organisation's admins): their roles go, their sign-ins
        and API tokens for the organisation end at once, and a community ends their
        appointments. The last admin is not removed (409 ``last-admin``)."""
        rt = runtime()
        with rt.unit_of_work() as session:
            org = get_organisation(session, org_id)
            service.remove(session, rt.outbox, current_identity(), org, user_id)
        return Response(status=204)


class InvitationTokenSchema(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=200))


@blp.route("/auth/invitations/preview", methods=["POST"])
@blp.arguments(InvitationTokenSchema)
@blp.response(200, InvitationPreviewSchema)
def preview(data: dict[str, Any]) -> Any:
    """What an invitation is for, to whoever holds its token (in the body, so that the
    token stays out of URLs and their logs)."""
    with login_limit():
        session = db_session()
        invitation, org = service.invitation_by_token(session, data["token"])
        has_account = session.scalar(select(User.id).where(User.email == invitation.email))
        return {
            "email": invitation.email,
            "organisation": org.name,
            "roles": invitation.roles,
            "expires_at": invitation.expires_at,
            "has_account": has_account is not None,
        }


@blp.route("/auth/invitations/accept", methods=["POST"])
@blp.arguments(AcceptSchema)
@blp.response(201, JoinedSchema)
def accept(data: dict[str, Any]) -> Any:
    """Join an organisation with an invitation's token: a new account (name and
    password) or, for an address that has one, its password. Then sign in."""
    with login_limit():
        rt = runtime()
        with rt.unit_of_work() as session:
            user, org = service.accept(
                session, token=data["token"], password=data["password"], name=data.get("name")
            )
            return {
                "user_id": user.id,
                "email": user.email,
                "org_id": org.id,
                "organisation": org.name,
                "roles": sorted(m.role for m in user.memberships if m.org_id == org.id),
            }
