"""Rate limits hold across server processes (docs/security.md#rate-limits), on SQLite and
PostgreSQL: two Patron apps sharing one database (as two uvicorn workers or two servers behind
a load balancer) share each client address's budget for sign-in, one-time codes and public
routes; another address has its own; the budget slides back within a minute."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from patron.app import create_app
from patron.config import get_settings
from patron.security.ratelimit import WINDOW, allowed_after, hit


@pytest.fixture
def five_a_minute(monkeypatch):
    monkeypatch.setenv("PATRON_RATE_LIMIT_PER_MINUTE", "5")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_two_servers_on_one_database_share_the_budget(db_url, users, five_a_minute):
    attacker = ("203.0.113.7", 40000)
    with TestClient(create_app(), client=attacker) as a, \
            TestClient(create_app(), client=attacker) as b, \
            TestClient(create_app(), client=("198.51.100.9", 40000)) as other:
        bad = {"username": "nobody", "password": "x"}
        statuses = [(a if i % 2 else b).post("/api/v1/auth/login", json=bad).status_code
                    for i in range(8)]
        # Counted per process, each would have allowed five: ten 401s
        assert statuses == [401] * 5 + [429] * 3
        r = a.post("/api/v1/auth/login?lang=en", json=bad)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert other.post("/api/v1/auth/login", json=bad).status_code == 401  # its own budget
        # Another route group has its own budget, shared too: the unsubscribe links
        codes = [(a if i % 2 else b).get("/messages/unsubscribe/not-a-token").status_code
                 for i in range(7)]
        assert codes == [404] * 5 + [429] * 2


def test_the_window_slides(engine):
    for i in range(5):
        assert hit(engine, "login", "203.0.113.7", limit=5, now=1000 * WINDOW + i) == 0
    wait = hit(engine, "login", "203.0.113.7", limit=5, now=1000 * WINDOW + 5)
    assert 54 < wait <= 55  # until this window ends
    # The next minute starts with the last one's six hits, fading as it slides out
    assert hit(engine, "login", "203.0.113.7", limit=5, now=1001 * WINDOW + 1) > 0
    assert hit(engine, "login", "203.0.113.7", limit=5, now=1001 * WINDOW + 45) == 0
    assert hit(engine, "login", "198.51.100.9", limit=5, now=1000 * WINDOW + 6) == 0


@pytest.mark.parametrize(("hits", "previous", "elapsed", "wait"), [
    (5, 0, 10, 0.0), (6, 0, 10, 50.0), (1, 10, 0, 36.0), (1, 10, 30, 6.0), (1, 10, 40, 0.0),
    (3, 4, 15, 15.0),
])
def test_the_sliding_estimate(hits, previous, elapsed, wait):
    assert allowed_after(hits=hits, previous=previous, elapsed=elapsed, limit=5) == \
        pytest.approx(wait)
