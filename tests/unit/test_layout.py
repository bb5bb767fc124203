"""Every service follows one layout (README: "One layout for every service"): a package
per capability; its blueprints in ``api.py``; nothing below ``api.py`` speaks HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("community", "dispatch", "donations", "gateway")
# Modules a service keeps beside its capability packages.
SERVICE_MODULES = {"__init__", "app", "worker", "models"}
# The gateway's plumbing around the whole app (authentication hook, proxy, merged
# OpenAPI, rate limits): Flask middleware, not capabilities.
GATEWAY_PLUMBING = {"security", "proxy", "openapi", "ratelimit"}
# Packages that are not capabilities: Alembic's history, and the server-rendered UI,
# whose every module is a view.
NOT_CAPABILITIES = {"migrations", "web", "__pycache__"}
WEB_LIBRARIES = ("flask", "flask_smorest", "flask_babel", "flask_wtf", "werkzeug", "webargs")
# What only the blueprint's module may import: the web, the problem documents, and the
# request-bound helpers.
HTTP_MODULES = ("shared.problems", "shared.web", "shared.http")


def _capabilities() -> list[Path]:
    found = []
    for service in SERVICES:
        for path in sorted((ROOT / "services" / service).iterdir()):
            if path.is_dir() and path.name not in NOT_CAPABILITIES:
                found.append(path)
    return found


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` gives both x
    and x.y, since y may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _defines_blueprint(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "Blueprint" or (
                isinstance(func, ast.Name) and func.id.endswith("Blueprint")
            ):
                return True
    return False


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_service_holds_only_its_own_modules_and_capability_packages() -> None:
    stray = []
    for service in SERVICES:
        allowed = SERVICE_MODULES | (GATEWAY_PLUMBING if service == "gateway" else set())
        for path in (ROOT / "services" / service).glob("*.py"):
            if path.stem not in allowed:
                stray.append(_rel(path))
    assert stray == [], f"put these in a capability package: {stray}"


@pytest.mark.parametrize("package", _capabilities(), ids=_rel)
def test_a_capability_keeps_its_blueprints_in_api_and_no_http_below(package: Path) -> None:
    assert (package / "__init__.py").is_file(), f"{_rel(package)} is not a package"
    problems = []
    modules = sorted(package.glob("*.py"))
    assert {"api.py", "service.py"} & {m.name for m in modules}, (
        f"{_rel(package)} has neither api.py nor service.py"
    )
    for module in modules:
        imported = _imports(module)
        if module.name == "api.py":
            continue
        if _defines_blueprint(module):
            problems.append(f"{_rel(module)} defines a blueprint: put it in api.py")
        for name in sorted(imported):
            top = name.split(".")[0]
            speaks_http = name in HTTP_MODULES or name.startswith(
                tuple(f"{m}." for m in HTTP_MODULES)
            )
            if top in WEB_LIBRARIES or speaks_http:
                problems.append(f"{_rel(module)} imports {name}")
            elif name.startswith("services.") and name.split(".")[-1] == "api":
                problems.append(f"{_rel(module)} imports the blueprint module {name}")
    assert problems == []


def test_only_api_modules_define_blueprints_in_services() -> None:
    found = [
        _rel(path)
        for path in (ROOT / "services").rglob("*.py")
        if "migrations" not in path.parts
        and "web" not in path.parts
        and path.name != "api.py"
        and _defines_blueprint(path)
    ]
    # The gateway's plumbing: the merged OpenAPI document, and the proxy that forwards
    # every other path to the service that owns it.
    assert sorted(found) == ["services/gateway/openapi.py", "services/gateway/proxy.py"]


def test_the_checks_catch_a_module_that_breaks_the_layout(tmp_path: Path) -> None:
    module = tmp_path / "service.py"
    module.write_text(
        "from flask import request\nfrom flask_smorest import Blueprint\n"
        "from services.x.y import api\nblp = Blueprint('x', __name__)\n"
    )
    assert {"flask", "flask.request", "services.x.y.api"} <= _imports(module)
    assert _defines_blueprint(module)
