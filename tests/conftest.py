from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings
from tests.support.stack import BACKEND, Stack, backend_settings, build_stack


def pytest_report_header() -> str:
    return f"aidlink backend: {BACKEND}"


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
