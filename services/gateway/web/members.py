"""The organisation's members, for its admins: invite someone (the page shows the
one-time link to pass on), change who manages the members, remove a member, withdraw
an invitation; and the page an invited person opens to join (``/join/<token>``)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l

from services.gateway.web import api
from services.gateway.web.base import bp, problem_page, require_me
from services.gateway.web.forms import FormState
from services.gateway.web.i18n import N_
from shared.identity import ORG_ADMIN, ROLE_OF_KIND

# What the members API answers, for the pages to show in the reader's language.
API_MESSAGES = (
    N_("This is the organisation's last admin: make someone else an admin first."),
    N_("This person is a member already; change their roles instead."),
    N_("Already a member."),
    N_("Give one or more of this organisation's roles."),
    N_("This invitation is not valid: it was used, withdrawn or has expired. Ask for a new one."),
    N_("Not a valid invitation."),
    N_("This e-mail address has an account: give its password to join."),
    N_("Not this account's password."),
    N_("Give your name."),
    N_("Only the organisation's admins manage its members, signed in."),
    N_("An organisation's members are listed to its admins and coordinators."),
)

ROLE_WORDS: dict[str, Any] = {
    "donor": _l("Donor"),
    "recipient": _l("Recipient"),
    "logistics": _l("Logistics"),
    "coordinator": _l("Coordinator"),
    "admin": _l("Administrator"),
    ORG_ADMIN: _l("Manages members"),
}
FIELD_WORDS: dict[str, Any] = {
    "email": _l("Email"),
    "name": _l("Name"),
    "roles": _l("Roles"),
    "password": _l("Password (10 characters or more)"),
    "token": _l("Invitation"),
}


def role_word(role: str) -> str:
    return str(ROLE_WORDS.get(role, role))


def field_word(name: str) -> str:
    return str(FIELD_WORDS.get(name, name))


class NotAnAdmin(Exception):
    """The page is for the organisation's admins."""


@bp.errorhandler(NotAnAdmin)
def _not_an_admin(_exc: NotAnAdmin) -> Any:
    return render_template(
        "error.html",
        status=403,
        message=gettext("This page is for the organisation's admins, who manage its members."),
    ), 403


def _admin() -> dict[str, Any]:
    found = require_me()
    if ORG_ADMIN not in found["roles"]:
        raise NotAnAdmin
    return found


def _roles(found: dict[str, Any], manages: bool) -> list[str]:
    own = ROLE_OF_KIND[found["organisation"]["kind"]]
    return [own, ORG_ADMIN] if manages else [own]


def _page(
    found: dict[str, Any], form: FormState | None = None, link: str | None = None, status: int = 200
) -> Any:
    org_id = found["organisation"]["id"]
    members = api.get(f"/orgs/{org_id}/members")
    if not members.ok:
        return problem_page(members)
    invitations = api.get(f"/orgs/{org_id}/invitations")
    if not invitations.ok:
        return problem_page(invitations)
    return render_template(
        "members/members.html",
        members=members.body["items"],
        invitations=invitations.body["items"],
        form=form or FormState(),
        link=link,
        role_word=role_word,
        field_word=field_word,
        own_id=found["user"]["id"],
    ), status


@bp.route("/org/members", methods=["GET", "POST"])
def org_members() -> Any:
    """The members page; its forms post here (invite) or to the routes below."""
    found = _admin()
    if request.method == "GET":
        return _page(found)
    values = request.form.to_dict()
    manages = values.get("manages") == "yes"
    answer = api.post(
        f"/orgs/{found['organisation']['id']}/invitations",
        json={
            "email": values.get("email", ""),
            "name": values.get("name") or None,
            "roles": _roles(found, manages),
        },
        idempotency_key=values.get("idempotency_key") or None,
    )
    if not answer.ok:
        return _page(found, FormState.from_problem(values, answer), status=answer.status)
    flash(
        gettext(
            "%(email)s is invited. Send them this link; it works once, for 7 days, and is "
            "not shown again.",
            email=answer.body["email"],
        ),
        "success",
    )
    # The link on this site as the admin reaches it (the API answered an in-process call).
    link = url_for("web.join", token=answer.body["token"], _external=True)
    return _page(found, link=link, status=201)


@bp.post("/org/members/<uuid:user_id>/roles")
def org_member_roles(user_id: Any) -> Any:
    found = _admin()
    manages = request.form.get("manages") == "yes"
    answer = api.call(
        "PUT",
        f"/orgs/{found['organisation']['id']}/members/{user_id}",
        json={"roles": _roles(found, manages)},
    )
    if not answer.ok:
        return _page(found, FormState.from_problem({}, answer), status=answer.status)
    flash(gettext("The roles are changed."), "success")
    return redirect(url_for("web.org_members"))


@bp.post("/org/members/<uuid:user_id>/remove")
def org_member_remove(user_id: Any) -> Any:
    found = _admin()
    answer = api.call("DELETE", f"/orgs/{found['organisation']['id']}/members/{user_id}")
    if not answer.ok:
        return _page(found, FormState.from_problem({}, answer), status=answer.status)
    flash(gettext("The member is removed; their sign-ins have ended."), "success")
    return redirect(url_for("web.org_members"))


@bp.post("/org/invitations/<uuid:invitation_id>/withdraw")
def org_invitation_withdraw(invitation_id: Any) -> Any:
    found = _admin()
    answer = api.call("DELETE", f"/orgs/{found['organisation']['id']}/invitations/{invitation_id}")
    if not answer.ok:
        return _page(found, FormState.from_problem({}, answer), status=answer.status)
    flash(gettext("The invitation is withdrawn."), "success")
    return redirect(url_for("web.org_members"))


@bp.route("/join/<token>", methods=["GET", "POST"])
def join(token: str) -> Any:
    """An invited person sets their name and password (or gives their account's) and
    joins; then signs in."""
    preview = api.raw_call("POST", "/auth/invitations/preview", json={"token": token})
    if not preview.ok:
        return render_template("members/join.html", invitation=None, form=FormState()), (
            preview.status if preview.status != 422 else 404
        )
    if request.method == "GET":
        return render_template(
            "members/join.html", invitation=preview.body, form=FormState(), field_word=field_word
        )
    values = request.form.to_dict()
    answer = api.raw_call(
        "POST",
        "/auth/invitations/accept",
        json={
            "token": token,
            "name": values.get("name") or None,
            "password": values.get("password", ""),
        },
    )
    if not answer.ok:
        values.pop("password", None)
        return render_template(
            "members/join.html",
            invitation=preview.body,
            form=FormState.from_problem(values, answer),
            field_word=field_word,
        ), answer.status
    flash(
        gettext("You have joined %(org)s. Sign in to continue.", org=answer.body["organisation"]),
        "success",
    )
    return redirect(url_for("web.signin"))
