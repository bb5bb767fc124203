"""From HTML forms to API bodies, and from API problems back to the form.

Each input is named by its path in the API's body (``organisation.name``,
``lines.0.quantity``), the same path a problem's ``errors`` names, so an error lands
next to the input it concerns without a mapping table per page. Empty inputs are left
out, so the API's own defaults apply and a required field left empty is reported by
the API as missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from services.gateway.web.api import ApiResponse
from services.gateway.web.i18n import api_message, field_errors
from shared.catalog import regions

# Inputs that belong to the page, never to the API body.
PAGE_INPUTS = frozenset({"csrf_token", "idempotency_key"})
MAX_LIST_INDEX = 1000


def nest(form: Iterable[tuple[str, str]], *, lists: Iterable[str] = ()) -> dict[str, Any]:
    """``[("lines.0.item", "mask"), ("origin.region", "4201")]`` as nested dicts and
    lists. Names in ``lists`` take every value given (``standards`` chosen in a
    multi-select); list indices are renumbered in order, so rows removed in the
    page leave no gaps."""
    multi = frozenset(lists)
    tree: dict[str, Any] = {}
    for name, raw in form:
        if name in PAGE_INPUTS:
            continue
        value = raw.strip() if isinstance(raw, str) else raw
        parts = name.split(".")
        leaf_is_list = _pattern(parts) in multi
        if value == "" and not leaf_is_list:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            leaf = parts[-1]
            if leaf_is_list:
                if value != "":
                    node.setdefault(leaf, []).append(value)
                else:
                    node.setdefault(leaf, [])
            else:
                node[leaf] = value
    return _lists(tree)


def _pattern(parts: list[str]) -> str:
    return ".".join("N" if p.isdigit() else p for p in parts)


def _lists(node: Any) -> Any:
    """Dicts keyed by small numbers become lists, in index order."""
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() and int(k) < MAX_LIST_INDEX for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def renumber(form: Iterable[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """Inputs under ``prefix.N.`` renumbered 0, 1, 2... in order, so errors the API
    reports for ``prefix.1`` match the second row shown again."""
    seen: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for name, value in form:
        parts = name.split(".")
        if len(parts) > 2 and parts[0] == prefix and parts[1].isdigit():
            index = seen.setdefault(parts[1], str(len(seen)))
            name = ".".join([prefix, index, *parts[2:]])
        out.append((name, value))
    return out


def rows(values: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The rows of a repeated group, as the page shows them again after an error."""
    found: dict[int, dict[str, Any]] = {}
    for name, value in values.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == prefix and parts[1].isdigit():
            found.setdefault(int(parts[1]), {})[parts[2]] = value
    return [found[i] for i in sorted(found)]


class FormState:
    """What a page needs to show a form again: the values, the errors by input, and
    the messages that concern no input the page has."""

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        errors: Mapping[str, list[str]] | None = None,
        detail: str | None = None,
    ) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self.errors: dict[str, list[str]] = dict(errors or {})
        self.detail = detail
        # A new key for every form shown: a double submission of this one is answered
        # once, while a corrected form after an error is a new request.
        self.idempotency_key = str(uuid.uuid4())

    @classmethod
    def from_problem(cls, values: Mapping[str, Any], answer: ApiResponse) -> FormState:
        errors = field_errors(answer.errors)
        return cls(values, errors, api_message(answer.detail) if answer.detail else None)

    def value(self, name: str, default: Any = "") -> Any:
        return self.values.get(name, default)

    def error(self, name: str) -> list[str]:
        return self.errors.get(name, [])


# Inputs that hold a region: people may type its name ("武昌区", "Wuchang") instead.
REGION_INPUTS = ("region", "origin.region", "location.region", "organisation.region")


def region_code(value: str, language: str) -> str:
    """A region typed by name as its code, when the name finds exactly one region (or
    one whose name is exactly it); anything else as typed, for the API to judge."""
    text = value.strip()
    if not text or text.isdigit():
        return text
    found = regions.search(text, language, limit=50)
    exact = [code for code, name in found if _bare(name).endswith(_bare(text))]
    if len(found) == 1:
        return found[0][0]
    if len(exact) == 1:
        return exact[0]
    return text


def _bare(text: str) -> str:
    return "".join(text.split()).casefold()


def with_region_codes(body: dict[str, Any], language: str) -> dict[str, Any]:
    """``body`` with every region input given by name turned into its code."""
    for path in REGION_INPUTS:
        node: Any = body
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str):
            node[parts[-1]] = region_code(node[parts[-1]], language)
    return body
