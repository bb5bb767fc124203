"""Sign-in, sign-out, registration, the pending-verification notice, the home page
and the language switch."""

from __future__ import annotations

import contextlib
from typing import Any

from flask import (
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext

from services.gateway.web import api
from services.gateway.web.base import bp, me, require_me, safe_next
from services.gateway.web.forms import FormState, nest, with_region_codes
from services.gateway.web.i18n import LANGUAGE_COOKIE, LOCALES, current_language, word
from shared.events.registry import ORGANISATION_KINDS

LANGUAGE_COOKIE_AGE = 365 * 24 * 3600


@bp.get("/")
def home() -> Any:
    found = me()
    if found is None:
        return render_template("home.html")
    return render_template("dashboard.html")


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if api.signed_in() and me() is not None:
            return redirect(target)
        return render_template("signin.html", form=FormState(), next=target)
    values = request.form.to_dict()
    answer = api.raw_call(
        "POST",
        "/auth/login",
        json={"email": values.get("email", ""), "password": values.get("password", "")},
    )
    if not answer.ok:
        values.pop("password", None)
        return render_template(
            "signin.html", form=FormState.from_problem(values, answer), next=target
        ), answer.status
    # A new cookie for a new sign-in: nothing of an earlier one carries over.
    session.clear()
    api.start_session(answer.body)
    return redirect(target)


@bp.post("/signout")
def signout() -> Any:
    if api.signed_in():
        # A sign-in that has already ended has nothing left to revoke.
        with contextlib.suppress(api.SignInRequired):
            api.post("/auth/logout")
    session.clear()
    flash(gettext("You are signed out."), "info")
    return redirect(url_for("web.signin"))


def _kinds() -> list[tuple[str, str]]:
    return [(kind, word(kind)) for kind in ORGANISATION_KINDS]


REGISTER_INPUTS = (
    "organisation.name",
    "organisation.name_zh",
    "organisation.name_en",
    "organisation.kind",
    "organisation.region",
    "organisation.address",
    "organisation.licence_number",
    "organisation.website",
    "organisation.contacts.0.name",
    "organisation.contacts.0.phone",
    "user.name",
    "user.email",
    "user.password",
)


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    if request.method == "GET":
        return render_template("register.html", form=FormState(), kinds=_kinds())
    pairs = [(k, v) for k, v in request.form.items(multi=True) if k in REGISTER_INPUTS]
    body = with_region_codes(nest(pairs), current_language())
    answer = api.raw_call(
        "POST",
        "/auth/register",
        json=body,
        idempotency_key=request.form.get("idempotency_key") or None,
    )
    if not answer.ok:
        values = {k: v for k, v in pairs if k != "user.password"}
        return render_template(
            "register.html", form=FormState.from_problem(values, answer), kinds=_kinds()
        ), answer.status
    login = api.raw_call(
        "POST",
        "/auth/login",
        json={"email": body["user"]["email"], "password": body["user"]["password"]},
    )
    if not login.ok:
        flash(gettext("Your organisation is registered; sign in to continue."), "info")
        return redirect(url_for("web.signin"))
    session.clear()
    api.start_session(login.body)
    return redirect(url_for("web.pending"))


@bp.get("/pending")
def pending() -> Any:
    found = require_me()
    if found["organisation"]["status"] != "pending":
        return redirect(url_for("web.home"))
    return render_template("pending.html")


@bp.post("/language")
def language() -> Any:
    chosen = request.form.get("language", "")
    target = safe_next(request.form.get("next"))
    response = make_response(redirect(target))
    if chosen in LOCALES:
        response.set_cookie(
            LANGUAGE_COOKIE,
            chosen,
            max_age=LANGUAGE_COOKIE_AGE,
            samesite="Lax",
            httponly=True,
            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
        )
    return response
