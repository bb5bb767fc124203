"""One OpenAPI document for the whole API, and its docs page, served by the gateway.

The gateway's own operations come from its flask-smorest spec; each service's come
from that service's ``/api/v1/openapi.json``. A service that cannot be reached is
listed under ``x-unavailable-services`` rather than failing the whole document.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from flask import Blueprint, Flask, Response, send_from_directory
from flask_smorest import Api

from services.gateway.proxy import ROUTES, ServiceClient
from shared.problems import Problem

CACHE_SECONDS = 30.0


def merge_specs(base: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge the ``paths`` and ``components`` of ``others`` (by service) into ``base``.

    Two services defining the same component differently keep both: the second is
    renamed ``<Service><Name>`` and its references follow.
    """
    merged = copy.deepcopy(base)
    merged.setdefault("paths", {})
    components = merged.setdefault("components", {})
    for service, spec in sorted(others.items()):
        spec = copy.deepcopy(spec)
        renames: dict[str, str] = {}
        for section, entries in spec.get("components", {}).items():
            target = components.setdefault(section, {})
            for name, value in entries.items():
                if name in target and target[name] != value:
                    renames[f"#/components/{section}/{name}"] = (
                        f"#/components/{section}/{service.title()}{name}"
                    )
        if renames:
            spec = json.loads(_rename_refs(json.dumps(spec), renames))
        for section, entries in spec.get("components", {}).items():
            target = components.setdefault(section, {})
            for name, value in entries.items():
                key = f"#/components/{section}/{name}"
                target[renames[key].rsplit("/", 1)[1] if key in renames else name] = value
        for path, item in spec.get("paths", {}).items():
            merged["paths"].setdefault(path, item)
        merged.setdefault("tags", [])
        known = {t["name"] for t in merged["tags"]}
        merged["tags"].extend(t for t in spec.get("tags", []) if t["name"] not in known)
    return merged


def _rename_refs(text: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


def openapi_blueprint(api: Api, client: ServiceClient) -> Blueprint:
    blp = Blueprint("openapi", __name__)
    cache: dict[str, Any] = {"at": 0.0, "doc": None}
    services = sorted(set(ROUTES.values()))

    @blp.get("/api/v1/openapi.json")
    def openapi_json() -> Any:
        if cache["doc"] is not None and time.monotonic() - cache["at"] < CACHE_SECONDS:
            return cache["doc"]
        specs: dict[str, dict[str, Any]] = {}
        unavailable: list[str] = []
        for service in services:
            try:
                answer = client.call(service, "GET", "/api/v1/openapi.json", timeout=(1, 5))
                answer.raise_for_status()
                specs[service] = answer.json()
            except (Problem, ValueError, OSError):
                unavailable.append(service)
        doc = merge_specs(api.spec.to_dict(), specs)
        doc["info"]["title"] = "aidlink API"
        if unavailable:
            doc["x-unavailable-services"] = unavailable
        else:
            cache.update(at=time.monotonic(), doc=doc)
        return doc

    @blp.get("/api/v1/docs")
    def docs() -> Response:
        return Response(_DOCS_PAGE, mimetype="text/html")

    @blp.get("/api/v1/docs/assets/<path:filename>")
    def docs_assets(filename: str) -> Response:
        return send_from_directory(Path(swagger_ui_bundle.swagger_ui_path), filename)

    return blp


# Swagger UI, served from the gateway itself so the docs work without internet.
_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>aidlink API</title>
<link rel="stylesheet" href="/api/v1/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/v1/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#swagger-ui"});
</script>
</body>
</html>
"""


def install_openapi(app: Flask, api: Api, client: ServiceClient) -> None:
    app.register_blueprint(openapi_blueprint(api, client))
