"""A sliding-window limit of requests per client address, in the server process's memory.

Used on sign-in, one-time codes, re-authentication and the other public routes
(``deps.rate_limited``): PATRON_RATE_LIMIT_PER_MINUTE requests per minute per address and
route group; the next one gets a 429 with ``Retry-After``. Each server process counts on its
own (several workers allow that many times more), which is enough against a script hammering
one form; the account lock (``login_lock_after``) and the one-time codes' own limits stay
the defence that holds across processes. Written by hand: it is twenty lines, and the
libraries for it bring a storage layer Patron does not need.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class RateLimiter:
    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, group: str, client: str, *, limit: int, window: float = 60.0) -> float:
        """Count one request; 0 when allowed, else the seconds until the next is."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            if len(self._hits) > 100_000:  # a flood of addresses: forget the oldest
                self._hits.clear()
            q = self._hits.setdefault((group, client), deque())
            while q and q[0] <= now - window:
                q.popleft()
            if len(q) >= limit:
                return max(q[0] + window - now, 0.1)
            q.append(now)
            return 0.0
