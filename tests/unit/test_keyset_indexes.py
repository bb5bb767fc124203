"""Every list served a page at a time (``shared.pagination.paginate``) has an index
that ends in its keyset order, (time column, id), so that a page deep in the list
costs what the first one does. The lists are found in the services' code, so a new
one without its index fails here."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _paginated() -> list[tuple[str, str, str, str]]:
    """(service, file, model name, time column) of every ``paginate(...)`` call."""
    found = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        service = path.relative_to(ROOT / "services").parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "paginate"):
                continue
            model = node.args[2]
            assert isinstance(model, ast.Name), f"{path}: paginate's model is not a name"
            column = next(
                (
                    k.value.value
                    for k in node.keywords
                    if k.arg == "time_column" and isinstance(k.value, ast.Constant)
                ),
                "created_at",
            )
            found.append((service, str(path.relative_to(ROOT)), model.id, str(column)))
    return found


LISTS = _paginated()


def test_the_lists_are_found() -> None:
    assert len(LISTS) >= 10
    assert {service for service, *_ in LISTS} == {"community", "dispatch", "donations", "gateway"}


@pytest.mark.parametrize(("service", "where", "model", "column"), LISTS, ids=lambda v: str(v))
def test_each_list_has_an_index_in_its_keyset_order(
    service: str, where: str, model: str, column: str
) -> None:
    models = importlib.import_module(f"services.{service}.models")
    table = getattr(models, model).__table__
    orders = [[c.name for c in index.columns] for index in table.indexes]
    assert any(cols[-2:] == [column, "id"] for cols in orders), (
        f"{where}: {table.name} is listed by ({column}, id) but its indexes are {orders}"
    )
