"""The web UI's blueprint and what every page shares: the signed-in user, CSRF
checks, the language, and error pages for problems the API answers with."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import Markup

from services.gateway.web import api
from services.gateway.web.api import ApiResponse, SignInRequired
from services.gateway.web.i18n import (
    HTML_LANG,
    api_message,
    base_unit,
    current_language,
    duplicate_reason,
    item_name,
    org_name,
    overdue_reason,
    receipt_word,
    standard_name,
    unit_name,
    word,
)
from services.gateway.web.labels import input_id, label
from shared.catalog import display, regions

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)
csrf = CSRFProtect()


@bp.before_request
def _check_csrf() -> None:
    # The API keeps its own rules (bearer tokens, no cookies); only the pages' forms,
    # which ride on the session cookie, need the token.
    csrf.protect()


@bp.after_request
def _page_headers(response: Response) -> Response:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "web.static":
        # Pages hold personal data: never keep them in a shared cache.
        response.headers.setdefault("Cache-Control", "no-store")
        response.vary.add("Cookie")
    return response


def me() -> dict[str, Any] | None:
    """The signed-in user, organisation and roles (``/auth/me``), once per page."""
    if "web_me" not in g:
        g.web_me = None
        if api.signed_in():
            answer = api.get("/auth/me")
            if answer.ok:
                g.web_me = answer.body
    found: dict[str, Any] | None = g.web_me
    return found


def require_me() -> dict[str, Any]:
    found = me()
    if found is None:
        raise SignInRequired
    return found


def roles() -> set[str]:
    found = me()
    return set(found["roles"]) if found else set()


def is_coordinator() -> bool:
    found = me()
    if not found:
        return False
    user_roles = set(found["roles"])
    return "admin" in user_roles or (
        "coordinator" in user_roles and found["organisation"]["status"] == "verified"
    )


def safe_next(target: str | None, default: str = "/") -> str:
    """Only a path on this site: never send the user elsewhere after a form."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def list_page(api_path: str, template: str, name: str) -> Any:
    """A page of the signed-in user's own records from a paginated API list, with the
    next page's cursor and the id just created (to highlight it)."""
    require_me()
    query: dict[str, Any] = {"limit": 20}
    if request.args.get("cursor"):
        query["cursor"] = request.args["cursor"]
    answer = api.get(api_path, query=query)
    if not answer.ok:
        return problem_page(answer)
    return render_template(
        template,
        **{name: answer.body["items"]},
        next_cursor=answer.body.get("next_cursor"),
        created=request.args.get("created"),
    )


def problem_page(answer: ApiResponse) -> tuple[str, int]:
    """An API problem that concerns the whole page (403, 404, 5xx), as a page."""
    status = answer.status if 400 <= answer.status < 600 else 502
    return (
        render_template(
            "error.html",
            status=status,
            message=api_message(answer.detail) if answer.detail else "",
        ),
        status,
    )


def quantity_text(value: Any, unit: str | None) -> str:
    """``value`` base units as people read them, in the page's language ("40 吨")."""
    if value is None:
        return ""
    try:
        amount = int(value)
    except (TypeError, ValueError):
        return f"{value} {unit_name(unit)}".strip()
    return display.quantity(amount, unit, current_language())


def quantity(value: Any, unit: str | None) -> Any:
    """``quantity_text`` for a page: the exact base-unit figure in its title when the
    figure shown is scaled ("40 吨", on hover "40,000,000 克")."""
    text = quantity_text(value, unit)
    try:
        amount = int(value)
    except (TypeError, ValueError):
        return text
    full = display.exact(amount, unit, current_language())
    if text == full:
        return text
    return Markup('<span class="qty" title="{}">{}</span>').format(full, text)


def packed(value: Any, pack_unit: str | None, pack_size: int | None, item: str | None) -> str:
    """A quantity in base units as it was packed: "12 cases of 50 pieces + 3 pieces",
    or as ``quantity_text`` when it was not packed in boxes or cases."""
    try:
        amount = int(value)
    except (TypeError, ValueError):
        return quantity_text(value, base_unit(item))
    return display.packed(amount, pack_unit, pack_size, base_unit(item), current_language())


def region_name(code: Any) -> str:
    """A region code as people read it ("武汉市武昌区", "Wuchang District, Wuhan")."""
    return regions.name(str(code), current_language()) if code else ""


# Helpers every template and macro may call, imported with context or not.
TEMPLATE_GLOBALS = {
    "word": word,
    "item_name": item_name,
    "standard_name": standard_name,
    "org_name": org_name,
    "unit_name": unit_name,
    "quantity": quantity,
    "quantity_text": quantity_text,
    "packed": packed,
    "region_name": region_name,
    "label": label,
    "input_id": input_id,
    "base_unit": base_unit,
    "receipt_word": receipt_word,
    "overdue_reason": overdue_reason,
    "duplicate_reason": duplicate_reason,
    "api_message": api_message,
}


@bp.record_once
def _install_globals(state: Any) -> None:
    state.app.jinja_env.globals.update(TEMPLATE_GLOBALS)
    state.app.jinja_env.filters["api_message"] = api_message
    state.app.jinja_env.filters["item_name_of"] = item_name


@bp.app_context_processor
def _page_globals() -> dict[str, Any]:
    language = current_language()
    ours = request.blueprint == "web"
    return {
        "language": language,
        "html_lang": HTML_LANG[language],
        "me": me() if ours else None,
        "is_coordinator": is_coordinator if ours else (lambda: False),
    }


@bp.errorhandler(SignInRequired)
def _sign_in(_exc: SignInRequired) -> Any:
    if request.headers.get("HX-Request"):
        # A fragment cannot redirect the page by itself; htmx follows this header.
        response = Response(status=204)
        response.headers["HX-Redirect"] = url_for("web.signin", next=request.path)
        return response
    return redirect(url_for("web.signin", next=request.full_path.rstrip("?")))


@bp.errorhandler(CSRFError)
def _csrf_failed(_exc: CSRFError) -> Any:
    from flask_babel import gettext

    return (
        render_template(
            "error.html",
            status=400,
            message=gettext(
                "This form has expired or did not come from this site. "
                "Go back, reload the page and send it again."
            ),
        ),
        400,
    )
