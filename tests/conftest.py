"""Fixtures and the rule of which pass runs which test.

``make test`` runs the suite twice: on the embedded backends (SQLite, the SQLAlchemy
broker transport), then, with ``AIDLINK_TEST_BACKEND=servers``, the tests marked
``backend`` again on PostgreSQL and Redis. A test that uses the databases or the
broker carries one of two marks, given here by folder unless the test says otherwise:

- tests/integration, tests/faults, tests/hostile: ``backend``. Their outcome depends on
  the database and the broker (locking, isolation, types, redelivery).
- tests/browser: ``embedded``. The web UI drives the same API; the backends' part of
  it is proven by the integration tests.
- tests/unit: no mark. No I/O: a unit test that reaches for the databases fails loudly.

``backend_settings`` (behind the ``settings`` and ``stack`` fixtures) refuses a test
that carries neither mark, so the rule cannot be broken by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from tests.support import stack as stack_support
from tests.support.stack import BACKEND, DATABASE_MARKS, Stack, backend_settings, build_stack

TESTS = Path(__file__).resolve().parent
FOLDER_MARKS = {
    "integration": "backend",
    "faults": "backend",
    "hostile": "backend",
    "browser": "embedded",
}

_running: list[pytest.Item] = []


def pytest_report_header() -> str:
    return f"aidlink backend: {BACKEND}"


def pytest_configure(config: pytest.Config) -> None:
    stack_support.marks_of_running_test = lambda: (
        {mark.name for mark in _running[-1].iter_markers()} if _running else set()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in DATABASE_MARKS):
            continue
        folder = Path(str(item.path)).relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKS:
            item.add_marker(FOLDER_MARKS[folder])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Fresh, migrated databases and an empty broker for one test."""
    with backend_settings(tmp_path) as s:
        yield s


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    """The three services on those databases; start workers with stack.start_worker."""
    with build_stack(settings) as s:
        yield s
