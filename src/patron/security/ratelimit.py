"""Rate limits of sign-in, one-time codes, re-authentication and the other public routes
(``deps.rate_limited``), counted in the database so that they hold across every server process
(docs/security.md#rate-limits).

PATRON_RATE_LIMIT_PER_MINUTE requests per minute per client address and route group; the next
one gets a 429. Counted in fixed one-minute windows (``rate_limit_windows``, one row per group,
address and minute, incremented by one atomic upsert) and judged over a sliding minute: the
previous window's hits weighted by how much of it still lies within the last minute, plus the
current window's. Refused requests count too, so a client that keeps hammering stays refused.
The address is stored as a blind index. Rows older than the previous window are deleted by the
requests themselves, now and then.

Written by hand: it is one upsert; the libraries for it bring a storage layer (Redis) Patron
does not otherwise need.
"""

from __future__ import annotations

import random
import time

from sqlalchemy import Engine, delete, select

from patron.db import UnitOfWork, upsert
from patron.protection.fields import blind
from patron.security.tables import rate_limit_windows

WINDOW = 60
# One request in this many also deletes the windows nobody needs any more.
CLEANUP_ONE_IN = 50


def allowed_after(*, hits: int, previous: int, elapsed: float, limit: int,
                  window: int = WINDOW) -> float:
    """0 when a request (already counted in ``hits``) is allowed, else the seconds to wait:
    the sliding minute counts ``hits`` and the part of ``previous`` still within it."""
    weight = max(0.0, 1.0 - elapsed / window)
    if hits + previous * weight <= limit:
        return 0.0
    if hits > limit or previous == 0:
        return max(window - elapsed, 0.1)  # this window is spent: until the next one
    # Until enough of the previous window has slid out of the last minute.
    needed = (hits + previous * weight - limit) / previous * window
    return max(min(needed, window - elapsed), 0.1)


def hit(engine: Engine, group: str, client: str, *, limit: int, window: int = WINDOW,
        now: float | None = None) -> float:
    """Count one request of ``client`` to ``group``; 0 when it is allowed, else the seconds
    until the next one is."""
    at = time.time() if now is None else now
    current = int(at // window)
    key = blind("rate_limit", client)
    t = rate_limit_windows
    with UnitOfWork(engine) as uow:
        stmt = upsert(uow.c, t).values(route_group=group, client_key=key, window=current,
                                       hits=1)
        hits = int(uow.c.execute(stmt.on_conflict_do_update(
            index_elements=[t.c.route_group, t.c.client_key, t.c.window],
            set_={"hits": t.c.hits + 1}).returning(t.c.hits)).scalar_one())
        previous = uow.c.execute(select(t.c.hits).where(
            t.c.route_group == group, t.c.client_key == key, t.c.window == current - 1)
        ).scalar() or 0
        if random.randrange(CLEANUP_ONE_IN) == 0:  # noqa: S311 - not a secret
            uow.c.execute(delete(t).where(t.c.window < current - 1))
        uow.commit()
    return allowed_after(hits=hits, previous=int(previous), elapsed=at - current * window,
                         limit=limit, window=window)
