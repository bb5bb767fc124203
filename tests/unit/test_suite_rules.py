"""The suite's own rule: a test that uses the databases or the broker says which pass
runs it (``backend`` or ``embedded``, see tests/conftest.py); an unmarked one fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stack import backend_settings, server_urls


def test_an_unmarked_test_that_reaches_for_a_database_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="marked neither"), backend_settings(tmp_path):
        pass
    assert not (tmp_path / "var").exists()  # refused before anything was created


@pytest.mark.embedded
def test_a_marked_test_gets_its_databases(tmp_path: Path) -> None:
    with backend_settings(tmp_path) as settings:
        assert settings.var_dir == tmp_path / "var"


def test_each_parallel_test_process_flushes_a_redis_database_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIDLINK_TEST_POSTGRES_URL", "postgresql+psycopg://pg/postgres")
    monkeypatch.setenv("AIDLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    seen = set()
    for worker in ("gw0", "gw1", "gw2", "gw3"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        seen.add(server_urls()[1])
    assert seen == {f"redis://127.0.0.1:6379/{n}" for n in (15, 14, 13, 12)}
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw16")
    with pytest.raises(RuntimeError, match="higher database number"):
        server_urls()
