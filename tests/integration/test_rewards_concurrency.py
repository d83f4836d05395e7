"""Many tills redeeming the last units of one reward at once, each on its own connection, with
retried idempotency keys and repeated fulfilments: exactly the stock is sold, no member's points
go negative, and both `patron ledger verify` and the stock check find nothing. PostgreSQL with
32 clients; SQLite with 8 (it takes one writer at a time)."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn
from patron.loyalty.tables import loyalty_members
from patron.loyalty.verify import verify
from patron.org.service import clear_reference_cache, ensure_default_channels
from patron.rewards import service
from patron.rewards.schemas import ItemIn, RedemptionIn
from patron.rewards.tables import rewards_items, rewards_redemptions
from patron.security.model import SYSTEM
from tests.factories import make_org
from tests.loyalty_factories import enrol, make_program

# Each of these tests opens dozens of PostgreSQL connections: one at a time (the server allows
# 100), so they share one xdist worker.
pytestmark = pytest.mark.xdist_group("concurrency")

LOCK = threading.Lock()


def _setup(engine: Any, clients: int, stock: int) -> tuple[int, list[int]]:
    """Two tills per member; every fourth member can afford nothing."""
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow, now=now - dt.timedelta(days=1))
        members = []
        for i in range(clients // 2):
            m = enrol(uow, f"1390000{i:04d}", now=now - dt.timedelta(days=1))["id"]
            loyalty.adjust(uow=uow, actor=SYSTEM, member_id=m, now=now - dt.timedelta(hours=1),
                           body=AdjustIn(idempotency_key=f"seed-{m}",
                                         points=50 if i % 4 == 3 else 400, reason="opening"))
            members.append(m)
        item = service.create_item(uow=uow, actor=SYSTEM, program_code="BB",
                                   now=now - dt.timedelta(hours=1), data=ItemIn(
                                       code="LAST", name="The last mugs", points_price=150,
                                       stock=stock))
    return int(item["id"]), members


def _run(engine: Any, clients: int, stock: int) -> tuple[int, Counter[str]]:
    item_id, members = _setup(engine, clients, stock)
    seen: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def till(n: int) -> None:
        member = members[n // 2]
        body = RedemptionIn(idempotency_key=f"till-{n}", member_id=member, store="SH01")
        barrier.wait()
        try:
            for attempt in range(2):  # the till retries the same key (a lost response)
                with UnitOfWork(engine) as uow:
                    r = service.redeem(uow=uow, actor=SYSTEM, item_id=item_id, body=body)
                assert r["replayed"] == (attempt == 1)
            for _ in range(2):  # and the hand-over
                with UnitOfWork(engine) as uow:
                    service.fulfil(uow=uow, actor=SYSTEM, redemption_id=r["id"])
            with LOCK:
                seen["fulfilled"] += 1
        except Conflict as exc:
            with LOCK:
                seen[exc.message] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=till, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == [], errors[:3]
    return item_id, seen


def _check(engine: Any, item_id: int, stock: int, seen: Counter[str]) -> None:
    assert seen["fulfilled"] == stock, seen
    assert seen["reward_out_of_stock"] > 0 and seen["insufficient_points"] > 0, seen
    assert set(seen) <= {"fulfilled", "reward_out_of_stock", "insufficient_points"}, seen
    with UnitOfWork(engine) as uow:
        conn = uow.c
        item = conn.execute(select(rewards_items).where(rewards_items.c.id == item_id)
                            ).mappings().one()
        assert (item["sold"], item["reserved"]) == (stock, 0)
        r = rewards_redemptions.c
        assert conn.execute(select(func.count()).where(r.status == "fulfilled")
                            ).scalar_one() == stock
        assert conn.execute(select(func.count()).where(r.status != "fulfilled")
                            ).scalar_one() == 0
        m = loyalty_members.c
        assert conn.execute(select(func.min(m.points_available))).scalar_one() >= 0
        assert conn.execute(select(func.sum(m.points_held))).scalar_one() == 0
        assert verify(conn)["differences"] == []
        assert service.verify_stock(conn) == []


def test_32_tills_on_postgresql_redeeming_the_last_units_sell_exactly_the_stock(postgres_url):
    from tests.conftest import _truncate_postgres

    _truncate_postgres(postgres_url)
    clear_reference_cache()
    engine = get_engine(postgres_url)
    with UnitOfWork(engine) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
    item_id, seen = _run(engine, clients=32, stock=10)
    _check(engine, item_id, 10, seen)


def test_8_tills_on_sqlite_redeeming_the_last_units_sell_exactly_the_stock(tmp_path,
                                                                          sqlite_template):
    path = tmp_path / "patron.sqlite3"
    shutil.copy(sqlite_template, path)
    clear_reference_cache()
    engine = get_engine(f"sqlite:///{path}")
    with UnitOfWork(engine) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
    item_id, seen = _run(engine, clients=8, stock=2)
    _check(engine, item_id, 2, seen)
    engine.dispose()
