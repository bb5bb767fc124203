"""Fixtures and the rule of which pass runs which test.

``make test`` runs the suite twice: on the embedded backends (SQLite, the SQLAlchemy
broker transport), then, with ``AIDLINK_TEST_BACKEND=servers``, the tests marked
``backend`` again on PostgreSQL and Redis. A test that uses the databases or the
broker carries one of two marks, given here by folder unless the test says otherwise:

- tests/integration, tests/faults, tests/hostile: ``backend``. Their outcome depends on
  the database and the broker (locking, isolation, types, redelivery).
- tests/browser, and the page tests in tests/integration (``test_web_*.py``):
  ``embedded``. The web UI drives the same API; the backends' part of it is proven by
  the API's integration tests.
- tests/unit: no mark. No I/O: a unit test that reaches for the databases fails loudly.

``backend_settings`` (behind the ``settings`` and ``stack`` fixtures) refuses a test
that carries neither mark, so the rule cannot be broken by accident.
"""

from __future__ import annotations

import ast
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any

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

# Page tests among the integration tests: the web UI over the API, run once.
PAGE_TESTS = "test_web_"

# CPython before 3.11.8 (and 3.12.0 and 3.12.1) keeps the depth of the AST it is
# converting in state shared by all threads (gh-106905): two threads turning source into
# AST objects (``ast.parse``) or AST objects into code (``compile`` of a tree) at once
# can fail either one with "SystemError: AST constructor recursion depth mismatch"
# (Werkzeug does both for each URL rule when an app is created; 3.11's tracebacks parse
# the failing line for their carets). The suite builds apps while servers' and
# workers' threads log, so there it converts one tree at a time.
if sys.version_info < (3, 11, 8) or (3, 12) <= sys.version_info < (3, 12, 2):
    import builtins

    _ast_lock = threading.RLock()
    _ast_parse = ast.parse
    _compile = builtins.compile

    def _again_on_mismatch(convert: Any, *args: Any, **kwargs: Any) -> Any:
        # Some conversion still runs outside the lock (seen once in a CI rehearsal:
        # an app's URL rule failed while a server thread reported a dropped
        # connection). The shared depth is set anew at each conversion's start, so the
        # one that failed succeeds when run again.
        for attempt in range(3):
            try:
                with _ast_lock:
                    return convert(*args, **kwargs)
            except SystemError as exc:
                if "recursion depth mismatch" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @wraps(_ast_parse)
    def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        return _again_on_mismatch(_ast_parse, *args, **kwargs)

    @wraps(_compile)
    def _compile_one_tree_at_a_time(source: Any, *args: Any, **kwargs: Any) -> Any:
        flags = args[2] if len(args) > 2 else kwargs.get("flags", 0)
        if isinstance(source, ast.AST) or flags & ast.PyCF_ONLY_AST:
            return _again_on_mismatch(_compile, source, *args, **kwargs)
        return _compile(source, *args, **kwargs)

    ast.parse = _parse_one_at_a_time
    builtins.compile = _compile_one_tree_at_a_time

_running: list[pytest.Item] = []
_seconds_per_folder: dict[str, float] = {}
_tests_per_folder: dict[str, int] = {}


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
        if folder == "integration" and item.path.name.startswith(PAGE_TESTS):
            item.add_marker("embedded")
        elif folder in FOLDER_MARKS:
            item.add_marker(FOLDER_MARKS[folder])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _running_test(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _running_test(item):
        return (yield)


@contextmanager
def _running_test(item: pytest.Item) -> Iterator[None]:
    """The test whose fixtures or body run now, for ``marks_of_running_test``."""
    _running.append(item)
    try:
        yield
    finally:
        _running.remove(item)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up each folder's time (set-up, test and teardown), for the summary below;
    under pytest-xdist the reports reach the controlling process too."""
    parts = report.nodeid.split("/")
    folder = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]
    _seconds_per_folder[folder] = _seconds_per_folder.get(folder, 0.0) + report.duration
    if report.when == "call":
        _tests_per_folder[folder] = _tests_per_folder.get(folder, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _seconds_per_folder or hasattr(terminalreporter.config, "workerinput"):
        return
    terminalreporter.section(f"time per folder, backend {BACKEND} (summed over processes)")
    for folder, seconds in sorted(_seconds_per_folder.items(), key=lambda kv: -kv[1]):
        count = _tests_per_folder.get(folder, 0)
        terminalreporter.write_line(f"{folder:<14} {count:>5} tests {seconds:>9.1f} s")


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
