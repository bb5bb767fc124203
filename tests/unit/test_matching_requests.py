"""When a run asked for by a supply or need change begins (``run_delay``): runs of an
item begin at least the debounce apart, and no sooner than needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.dispatch.matching.service import run_delay

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def test_a_change_after_a_quiet_spell_is_matched_at_once() -> None:
    assert run_delay(NOW, None, 2.0) == 0.0
    assert run_delay(NOW, NOW - timedelta(seconds=2), 2.0) == 0.0
    assert run_delay(NOW, NOW - timedelta(hours=5), 2.0) == 0.0


def test_a_change_in_a_burst_waits_for_the_debounce_since_the_last_run_began() -> None:
    assert run_delay(NOW, NOW, 2.0) == 2.0
    assert run_delay(NOW, NOW - timedelta(seconds=0.5), 2.0) == 1.5
    assert abs(run_delay(NOW, NOW - timedelta(seconds=1.999), 2.0) - 0.001) < 1e-9


def test_a_run_dated_ahead_of_this_clock_waits_no_longer_than_the_debounce() -> None:
    assert run_delay(NOW, NOW + timedelta(seconds=30), 2.0) == 2.0
    assert run_delay(NOW, NOW, 0.0) == 0.0
