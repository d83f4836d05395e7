"""The collector pause around a chunk of orders: paused inside, restored after, shared by
overlapping chunks in threads, and never switched on when somebody else had switched it off."""

import gc
import threading

import pytest

from patron.gc_pause import collection_paused


@pytest.fixture(autouse=True)
def _collector_back_on():
    yield
    gc.enable()


def test_the_collector_is_paused_inside_and_back_after_an_error():
    gc.enable()
    with pytest.raises(RuntimeError), collection_paused():
        assert not gc.isenabled()
        raise RuntimeError("a chunk that fails")
    assert gc.isenabled()


def test_nested_pauses_resume_only_when_the_outer_one_ends():
    gc.enable()
    with collection_paused():
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_disabled_by_someone_else_stays_disabled():
    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_chunks_in_threads_leave_the_collector_on():
    gc.enable()
    start = threading.Barrier(8)
    seen_enabled_inside = []

    def chunk() -> None:
        start.wait()
        for _ in range(200):
            with collection_paused():
                seen_enabled_inside.append(gc.isenabled())

    threads = [threading.Thread(target=chunk) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gc.isenabled()
    assert not any(seen_enabled_inside)

