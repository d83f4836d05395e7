"""Many tills at once on the same members: earning orders (with resent batches), redemptions,
holds committed or released, refunds and adjustments, every client retrying idempotency keys at
random. Afterwards no balance is negative, no entry is duplicated, every key did its work once
and `patron ledger verify` finds nothing. PostgreSQL with 32 clients, each on its own connection;
SQLite with 8 (it takes one writer at a time)."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.loyalty import service
from patron.loyalty.schemas import AdjustIn, HoldIn, RedeemIn
from patron.loyalty.tables import loyalty_entries, loyalty_members, loyalty_operations
from patron.loyalty.verify import verify
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from tests.factories import make_org, order
from tests.loyalty_factories import enrol, make_program

# Each of these tests opens dozens of PostgreSQL connections: one at a time (the server allows
# 100), so they share one xdist worker.
pytestmark = pytest.mark.xdist_group("concurrency")

PHONES = ["13800000001", "13800000002", "13800000003", "13800000004"]
EXPECTED = (Conflict, NotFound, ValidationFailed)  # refusals a till must handle; nothing else


def _setup(engine: Any, now: dt.datetime) -> list[int]:
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow, now=now - dt.timedelta(days=1))
        members = [enrol(uow, p, now=now - dt.timedelta(days=1))["id"] for p in PHONES]
        record_orders(uow=uow, orders_in=[
            order(f"SEED-{i}-{j}", at=now - dt.timedelta(hours=2), identifiers={"phone": p})
            for i, p in enumerate(PHONES) for j in range(5)], source="api", actor=SYSTEM)
    return members


LOCK = threading.Lock()


def _client(engine: Any, n: int, members: list[int], ops: int, seen: Counter[str],
            errors: list[BaseException], barrier: threading.Barrier,
            returned_at: dt.datetime) -> None:
    def bump(what: str) -> None:
        with LOCK:
            seen[what] += 1

    rnd = random.Random(n)
    my_orders: dict[str, dict[str, Any]] = {}  # external id -> the order as first sent
    barrier.wait()
    for i in range(ops):
        member = rnd.choice(members)
        action = rnd.choice(["earn", "earn", "redeem", "redeem", "hold", "refund", "adjust"])
        try:
            with UnitOfWork(engine) as uow:
                if action == "earn":
                    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
                    batch = [order(f"C{n}-{i}-{k}", identifiers={"phone": rnd.choice(PHONES)},
                                   at=at) for k in range(rnd.randint(1, 3))]
                    if my_orders and rnd.random() < 0.5:  # a till resending part of its queue
                        batch.append(my_orders[rnd.choice(sorted(my_orders))])
                    out = record_orders(uow=uow, orders_in=batch, source="api", actor=SYSTEM)
                    assert all(o.status in ("created", "duplicate") for o in out), out
                    my_orders.update({o.external_id: b for o, b in zip(out, batch, strict=True)
                                      if o.status == "created"})
                    bump("earn")
                elif action == "redeem":
                    # Keys shared by every client: each key's work must happen once.
                    slot = rnd.randint(0, 30)
                    body = RedeemIn(idempotency_key=f"r-{member}-{slot}",
                                    points=10 + 9 * slot, store="SH01")
                    service.redeem(uow=uow, actor=SYSTEM, member_id=member, body=body)
                    bump("redeem")
                elif action == "hold":
                    slot = rnd.randint(0, 30)
                    h = service.hold(uow=uow, actor=SYSTEM, member_id=member,
                                     body=HoldIn(idempotency_key=f"h-{member}-{slot}",
                                                 points=5 + 7 * slot, store="SH01"))
                    finish = rnd.choice([service.commit_hold, service.release_hold])
                    for _ in range(rnd.randint(1, 2)):  # the till retries the second step
                        finish(uow=uow, actor=SYSTEM, hold_id=h["id"])
                    bump("hold")
                elif action == "refund":
                    if my_orders and rnd.random() < 0.6:
                        target = rnd.choice(sorted(my_orders))
                    else:
                        target = f"SEED-{members.index(member)}-{rnd.randint(0, 4)}"
                    # The same return resent by any till has the same content.
                    ret = ReturnIn.model_validate({
                        "external_id": f"RT-{target}", "channel": "pos", "store": "SH01",
                        "order_external_id": target, "full": True,
                        "returned_at": returned_at.isoformat()})
                    record_return(uow=uow, ret=ret, actor=SYSTEM)
                    bump("refund")
                else:
                    slot = rnd.randint(0, 10)
                    body = AdjustIn(idempotency_key=f"a-{member}-{slot}",
                                    points=(slot - 5) * 7 or 3, reason="service recovery")
                    service.adjust(uow=uow, actor=SYSTEM, member_id=member, body=body)
                    bump("adjust")
        except EXPECTED as exc:
            bump(f"refused:{exc.message}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)


def _run(db_url: str, clients: int, ops: int) -> tuple[Counter[str], Any]:
    engine = get_engine(db_url)
    now = dt.datetime.now(dt.UTC)
    members = _setup(engine, now)
    seen: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=_client, args=(engine, n, members, ops, seen, errors,
                                                      barrier, now)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == [], errors[:3]
    return seen, engine


def _check(engine: Any, seen: Counter[str]) -> None:
    with UnitOfWork(engine) as uow:
        conn = uow.c
        assert verify(conn)["differences"] == []
        m = loyalty_members.c
        lows = conn.execute(select(func.min(m.points_available), func.min(m.points_held),
                                   func.min(m.points_pending))).one()
        assert min(lows) >= 0
        e = loyalty_entries.c
        dupes = conn.execute(select(e.cause_type, e.cause_id, e.kind, e.bucket, e.member_id)
                             .group_by(e.cause_type, e.cause_id, e.kind, e.bucket, e.member_id)
                             .having(func.count() > 1)).all()
        assert dupes == []
        # Each redemption key did its work once: one operation, one redeem entry.
        o = loyalty_operations.c
        per_key = conn.execute(select(o.idempotency_key, func.count()).group_by(
            o.idempotency_key).having(func.count() > 1)).all()
        assert per_key == []
        redeemed = conn.execute(select(func.count()).where(
            e.kind == "redeem", e.cause_type == "operation")).scalar_one()
        done = conn.execute(select(func.count()).where(
            o.kind.in_(("redeem", "hold")), o.status.in_(("done", "committed")))).scalar_one()
        assert redeemed == done
    # The run exercised every path, and members ran out of points under contention.
    for action in ("earn", "redeem", "hold", "refund", "adjust"):
        assert seen[action] > 0, seen
    assert seen["refused:insufficient_points"] > 0, seen


def test_32_concurrent_clients_on_postgresql_leave_a_ledger_that_verifies(postgres_url):
    from tests.conftest import _truncate_postgres

    _truncate_postgres(postgres_url)
    from patron.org.service import clear_reference_cache, ensure_default_channels

    clear_reference_cache()
    with UnitOfWork(get_engine(postgres_url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
    seen, engine = _run(postgres_url, clients=32, ops=12)
    _check(engine, seen)
    # Give the 32 pooled connections back: the server's connections are shared.
    engine.dispose()


def test_concurrent_clients_on_sqlite_leave_a_ledger_that_verifies(tmp_path, sqlite_template):
    import shutil

    path = tmp_path / "patron.sqlite3"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    from patron.org.service import clear_reference_cache, ensure_default_channels

    clear_reference_cache()
    with UnitOfWork(get_engine(url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
    seen, engine = _run(url, clients=8, ops=25)
    _check(engine, seen)
    engine.dispose()


def test_many_simultaneous_redemptions_never_overdraw_a_member(db_url):
    engine = get_engine(db_url)
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow, now=now - dt.timedelta(days=1))
        member = enrol(uow, now=now - dt.timedelta(days=1))["id"]
        service.adjust(uow=uow, actor=SYSTEM, member_id=member,
                       body=AdjustIn(idempotency_key="seed", points=100, reason="opening"))
    clients = 24 if engine.dialect.name == "postgresql" else 8
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def spend(n: int) -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                service.redeem(uow=uow, actor=SYSTEM, member_id=member,
                               body=RedeemIn(idempotency_key=f"q-{n}", points=30,
                                             store="SH01"))
            with LOCK:
                outcomes["ok"] += 1
        except Conflict as exc:
            with LOCK:
                outcomes[exc.message] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=spend, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert outcomes == {"ok": 3, "insufficient_points": clients - 3}
    with UnitOfWork(engine) as uow:
        assert uow.c.execute(select(loyalty_members.c.points_available)).scalar_one() == 10
        assert verify(uow.c)["differences"] == []
    engine.dispose()
