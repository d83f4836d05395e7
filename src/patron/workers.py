"""Background workers that poll the database for due work (webhook deliveries, messages)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar


class RoundStats(Protocol):
    claimed: int


S = TypeVar("S", bound=RoundStats)


def poll(do_round: Callable[[], S], *, what: str, interval: float, once: bool, limit: int,
         stop: threading.Event | None = None, on_stats: Callable[[S], None] | None = None,
         log: logging.Logger) -> None:
    """Run ``do_round`` (which claims at most ``limit`` items), then every ``interval`` seconds
    until ``stop`` is set; a full round is followed at once by the next. Trouble is logged and
    waited out, except with ``once``, where it is raised."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            stats = do_round()
        except Exception:
            if once:
                raise
            log.exception("%s round failed; trying again in %ss", what, interval)
            stop.wait(interval)
            continue
        if on_stats is not None:
            on_stats(stats)
        if once:
            return
        if stats.claimed < limit:
            stop.wait(interval)


def start_in_thread(run: Callable[..., None], *args: object, name: str, join_timeout: float,
                    **kwargs: object) -> Callable[[], None]:
    """``run(*args, stop=..., **kwargs)`` in a daemon thread; returns the function that stops
    it, waiting at most ``join_timeout`` seconds for the work in flight."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=args, kwargs={**kwargs, "stop": stop},
                              name=name, daemon=True)
    thread.start()

    def stop_worker() -> None:
        stop.set()
        thread.join(timeout=join_timeout)

    return stop_worker
