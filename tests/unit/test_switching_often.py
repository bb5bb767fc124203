"""The GIL handed over often while work counts and writes side by side
(shared.bulk.switching_often)."""

from __future__ import annotations

import sys
import threading

import pytest

from shared.bulk import BUSY_SWITCH_INTERVAL, switching_often


def test_the_interval_is_short_during_the_work_and_back_after_it_even_on_error() -> None:
    was = sys.getswitchinterval()
    with switching_often():
        assert sys.getswitchinterval() == pytest.approx(BUSY_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == was
    with pytest.raises(RuntimeError), switching_often():
        raise RuntimeError("the work failed")
    assert sys.getswitchinterval() == was


def test_the_interval_comes_back_when_the_last_work_ends_and_a_shorter_one_is_kept() -> None:
    was = sys.getswitchinterval()
    inside, other_may_end = threading.Event(), threading.Event()
    seen: list[float] = []

    def other() -> None:
        with switching_often():
            inside.set()
            other_may_end.wait(5)
            seen.append(sys.getswitchinterval())

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    with switching_often(), switching_often():
        assert sys.getswitchinterval() == pytest.approx(BUSY_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(BUSY_SWITCH_INTERVAL)  # still at work
    other_may_end.set()
    thread.join(5)
    assert seen == [pytest.approx(BUSY_SWITCH_INTERVAL)]
    assert sys.getswitchinterval() == was
    # A process whose interval is already shorter keeps it.
    sys.setswitchinterval(BUSY_SWITCH_INTERVAL / 5)
    try:
        with switching_often():
            assert sys.getswitchinterval() == pytest.approx(BUSY_SWITCH_INTERVAL / 5, rel=0.05)
    finally:
        sys.setswitchinterval(was)
