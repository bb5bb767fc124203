"""A pause of the cyclic garbage collector during bulk work (shared.bulk.collector_paused)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from shared.bulk import collector_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_is_off_during_the_work_and_back_after_it_even_on_error() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("the work failed")
    assert gc.isenabled()


def test_the_collector_comes_back_when_the_last_paused_work_ends() -> None:
    """Two pieces of work in two threads: the first to end leaves it off for the other."""
    inside, second_may_end = threading.Event(), threading.Event()
    seen: list[bool] = []

    def second() -> None:
        with collector_paused():
            inside.set()
            second_may_end.wait(5)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=second)
    thread.start()
    assert inside.wait(5)
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the second is still at work
    second_may_end.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off_and_nesting_counts() -> None:
    gc.disable()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()

    @collector_paused()
    def work() -> bool:
        return gc.isenabled()

    assert work() is False
    assert gc.isenabled()
