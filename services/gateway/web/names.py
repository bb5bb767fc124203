"""Organisations by the name they registered in the page's language: the public ledger
and the traces carry the name each service keeps (the one registered first); the
gateway's directory also knows the Chinese and English names, and answers them for
verified organisations other than individuals without sign-in (``GET /orgs/names``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import g

from services.gateway.web import api
from services.gateway.web.i18n import org_name

# Ids one call asks for (the API's limit).
BATCH = 200


def names_in_language(ids: Iterable[Any]) -> dict[str, str]:
    """Names by organisation id, in the page's language where the organisation
    registered one; an organisation the directory does not answer for is left out (the
    page shows the name it has)."""
    cache: dict[str, str] = g.setdefault("web_names_in_language", {})
    wanted = sorted({str(i) for i in ids if i})
    missing = [i for i in wanted if i not in cache]
    for start in range(0, len(missing), BATCH):
        chunk = missing[start : start + BATCH]
        answer = api.raw_call("GET", "/orgs/names", query={"id": chunk})
        if answer.ok and isinstance(answer.body, dict):
            for found in answer.body.get("items", []):
                cache[str(found["id"])] = org_name(found)
        for org_id in chunk:
            cache.setdefault(org_id, "")
    return {i: cache[i] for i in wanted if cache.get(i)}
