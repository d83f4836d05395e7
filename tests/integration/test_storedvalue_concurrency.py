"""Many tills at once on the same cards: top-ups, spends, holds committed or released, refunds
to the card and adjustments, every client retrying idempotency keys that other clients share.
Afterwards no figure is negative, no entry is duplicated, every key did its work once, the
money adds up from the operations alone and `patron stored-value verify` finds nothing.
PostgreSQL with 32 clients, each on its own connection; SQLite with 8 (one writer at a time).
Each test runs on an engine of its own, disposed at the end: the server's connections are shared
with every other test."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import threading
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.db import UnitOfWork, get_engine, make_engine
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.org.service import clear_reference_cache, ensure_default_channels
from patron.security.model import SYSTEM
from patron.storedvalue import service
from patron.storedvalue.schemas import AdjustIn, HoldIn, RefundIn, SpendIn, TopUpIn
from patron.storedvalue.tables import sv_accounts, sv_entries, sv_operations
from patron.storedvalue.verify import verify
from tests.storedvalue_factories import setup

# Each of these tests opens dozens of PostgreSQL connections: one at a time (the server allows
# 100), so they share one xdist worker.
pytestmark = pytest.mark.xdist_group("concurrency")

PHONES = ("13800000001", "13800000002", "13800000003", "13800000004")
EXPECTED = (Conflict, NotFound, ValidationFailed)  # refusals a till must handle; nothing else
LOCK = threading.Lock()


def _fresh(url: str) -> None:
    clear_reference_cache()
    with UnitOfWork(get_engine(url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()


def _postgres(postgres_url: str) -> str:
    from tests.conftest import _truncate_postgres

    _truncate_postgres(postgres_url)
    _fresh(postgres_url)
    return postgres_url


def _sqlite(tmp_path: Any, sqlite_template: Any) -> str:
    path = tmp_path / "patron.sqlite3"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    _fresh(url)
    return url


def _seed(engine: Any, now: dt.datetime, order: str = "proportional") -> list[int]:
    with UnitOfWork(engine) as uow:
        members = setup(uow, spend_order=order, now=now - dt.timedelta(days=1),
                        phones=PHONES)["members"]
        for m in members:
            service.topup(uow=uow, actor=SYSTEM, member_id=m, body=TopUpIn(
                idempotency_key=f"seed-{m}", amount=Decimal("50"), store="SH01"))
    return members


def _client(engine: Any, n: int, members: list[int], ops: int, seen: Counter[str],
            errors: list[BaseException], barrier: threading.Barrier) -> None:

    def bump(what: str) -> None:
        with LOCK:
            seen[what] += 1

    rnd = random.Random(n)
    barrier.wait()
    for _ in range(ops):
        member = rnd.choice(members)
        action = rnd.choice(["topup", "spend", "spend", "hold", "hold", "refund", "refund",
                             "adjust"])
        slot = rnd.randint(0, 20)
        try:
            with UnitOfWork(engine) as uow:
                # Keys are shared by every client and always sent with the same body: each
                # key's work must happen once, whoever sends it and however often.
                if action == "topup":
                    body = TopUpIn(idempotency_key=f"t-{member}-{slot}",
                                   amount=Decimal(10 + 5 * slot),
                                   store="SH01" if slot % 2 else "BJ01")
                    for _ in range(rnd.randint(1, 2)):
                        service.topup(uow=uow, actor=SYSTEM, member_id=member, body=body)
                elif action == "spend":
                    body = SpendIn(idempotency_key=f"s-{member}-{slot}",
                                   amount=Decimal(37 * slot + 13) / 10,
                                   store="BJ01" if slot % 3 else "SH01")
                    for _ in range(rnd.randint(1, 2)):
                        service.spend(uow=uow, actor=SYSTEM, member_id=member, body=body)
                elif action == "hold":
                    h = service.hold(uow=uow, actor=SYSTEM, member_id=member, body=HoldIn(
                        idempotency_key=f"h-{member}-{slot}", amount=Decimal(23 * slot + 7),
                        store="SH01"))
                    finish = (service.commit_hold if slot % 2 else service.release_hold)
                    for _ in range(rnd.randint(1, 2)):  # the till retries the second step
                        finish(uow=uow, actor=SYSTEM, hold_id=h["id"])
                elif action == "refund":
                    o = sv_operations.c
                    account = uow.c.execute(select(sv_accounts.c.id).where(
                        sv_accounts.c.member_id == member)).scalar_one()
                    spends = uow.c.execute(select(o.id).where(
                        o.account_id == account, o.kind.in_(("spend", "hold")))
                        .order_by(o.id)).scalars().all()
                    uow.rollback()
                    if not spends:
                        continue
                    spend_id = spends[slot % len(spends)]
                    body = RefundIn(idempotency_key=f"r-{spend_id}-{slot % 4}",
                                    amount=Decimal(11 * (slot % 4) + 5) / 10, store="SH01")
                    for _ in range(rnd.randint(1, 2)):
                        service.refund(uow=uow, actor=SYSTEM, spend_id=spend_id, body=body)
                else:
                    body = AdjustIn(idempotency_key=f"a-{member}-{slot % 6}",
                                    bucket="bonus" if slot % 2 else "principal",
                                    amount=Decimal((slot % 6) - 3 or 2), reason="till error")
                    service.adjust(uow=uow, actor=SYSTEM, member_id=member, body=body)
                bump(action)
        except EXPECTED as exc:
            bump(f"refused:{exc.message}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)


def _run(engine: Any, clients: int, ops: int) -> Counter[str]:
    members = _seed(engine, dt.datetime.now(dt.UTC))
    seen: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=_client, args=(engine, n, members, ops, seen, errors,
                                                      barrier)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == [], errors[:3]
    return seen


def _check(engine: Any, seen: Counter[str]) -> None:
    with UnitOfWork(engine) as uow:
        conn = uow.c
        assert verify(conn)["differences"] == []
        a = sv_accounts.c
        lows = conn.execute(select(func.min(a.principal), func.min(a.bonus),
                                   func.min(a.principal_held), func.min(a.bonus_held))).one()
        assert min(lows) >= 0
        e = sv_entries.c
        dupes = conn.execute(select(e.operation_id, e.kind, e.bucket, e.lot_id)
                             .group_by(e.operation_id, e.kind, e.bucket, e.lot_id)
                             .having(func.count() > 1)).all()
        assert dupes == []
        o = sv_operations.c
        per_key = conn.execute(select(o.program_id, o.idempotency_key, func.count())
                               .group_by(o.program_id, o.idempotency_key)
                               .having(func.count() > 1)).all()
        assert per_key == []
        # The money adds up from the operations alone, without the entries.
        ops = conn.execute(select(o.kind, o.status, func.sum(o.principal), func.sum(o.bonus))
                           .group_by(o.kind, o.status)).all()
        principal = bonus = Decimal(0)
        for kind, status, p, b in ops:
            sign = {"topup": 1, "refund": 1, "adjust": 1, "spend": -1, "cashout": -1}.get(kind)
            if kind == "hold":  # held money is still on the card; committed money is spent
                sign = -1 if status == "committed" else 0
            principal += sign * p
            bonus += sign * b if kind != "cashout" else -b
        p, ph, b, bh = conn.execute(select(func.sum(a.principal), func.sum(a.principal_held),
                                           func.sum(a.bonus), func.sum(a.bonus_held))).one()
        assert (principal, bonus) == (p + ph, b + bh)
        # No refund ever exceeded its spend (the CHECK also guarantees it).
        over = conn.execute(select(func.count()).where(
            o.kind.in_(("spend", "hold")),
            (o.refunded_principal > o.principal) | (o.refunded_bonus > o.bonus))).scalar_one()
        assert over == 0
    for action in ("topup", "spend", "hold", "refund", "adjust"):
        assert seen[action] > 0, seen
    assert seen["refused:insufficient_balance"] > 0, seen


def test_32_concurrent_tills_on_postgresql_leave_stored_value_that_verifies(postgres_url):
    engine = make_engine(_postgres(postgres_url))
    try:
        seen = _run(engine, clients=32, ops=12)
        _check(engine, seen)
    finally:
        engine.dispose()


def test_8_concurrent_tills_on_sqlite_leave_stored_value_that_verifies(tmp_path,
                                                                        sqlite_template):
    engine = make_engine(_sqlite(tmp_path, sqlite_template))
    try:
        seen = _run(engine, clients=8, ops=30)
        _check(engine, seen)
    finally:
        engine.dispose()
        get_engine(str(engine.url)).dispose()


def _race(engine: Any, clients: int, work: Any) -> tuple[Counter[str], list[Any]]:
    outcomes: Counter[str] = Counter()
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def one(n: int) -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                out = work(uow, n)
            with LOCK:
                outcomes["ok"] += 1
                results.append(out)
        except Conflict as exc:
            with LOCK:
                outcomes[exc.message] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [], errors[:3]
    return outcomes, results


def _raced(url: str, clients: int, work: Any) -> tuple[Counter[str], list[Any]]:
    engine = make_engine(url)
    try:
        return _race(engine, clients, work)
    finally:
        engine.dispose()


def test_two_payments_on_one_card_cannot_overdraw_it(db_url):
    url = db_url
    with UnitOfWork(get_engine(url)) as uow:
        member = setup(uow, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))["member"]
        service.topup(uow=uow, actor=SYSTEM, member_id=member,
                      body=TopUpIn(idempotency_key="seed", amount=Decimal("100"),
                                   store="SH01"))
    clients = 24 if get_engine(url).dialect.name == "postgresql" else 8

    def pay(uow: UnitOfWork, n: int) -> Any:
        return service.spend(uow=uow, actor=SYSTEM, member_id=member, body=SpendIn(
            idempotency_key=f"pay-{n}", amount=Decimal("30"), store="BJ01"))

    outcomes, _ = _raced(url, clients, pay)
    assert outcomes == {"ok": 3, "insufficient_balance": clients - 3}
    with UnitOfWork(get_engine(url)) as uow:
        assert uow.c.execute(select(sv_accounts.c.principal)).scalar_one() == Decimal("10.00")
        assert verify(uow.c)["differences"] == []


def test_a_retried_top_up_is_credited_once_even_when_the_retries_race(db_url):
    url = db_url
    with UnitOfWork(get_engine(url)) as uow:
        member = setup(uow, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))["member"]
    clients = 16 if get_engine(url).dialect.name == "postgresql" else 8

    def top(uow: UnitOfWork, n: int) -> Any:
        return service.topup(uow=uow, actor=SYSTEM, member_id=member, body=TopUpIn(
            idempotency_key="offline-till-7", amount=Decimal("1000"), store="SH01"))

    outcomes, results = _raced(url, clients, top)
    assert outcomes == {"ok": clients}
    assert len({r["id"] for r in results}) == 1
    assert sum(1 for r in results if not r["replayed"]) == 1
    with UnitOfWork(get_engine(url)) as uow:
        row = uow.c.execute(select(sv_accounts.c.principal, sv_accounts.c.bonus)).one()
        assert tuple(row) == (Decimal("1000.00"), Decimal("120.00"))
        assert verify(uow.c)["differences"] == []


def test_refunds_of_one_payment_racing_never_give_back_more_than_it_used(db_url):
    url = db_url
    with UnitOfWork(get_engine(url)) as uow:
        member = setup(uow, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))["member"]
        service.topup(uow=uow, actor=SYSTEM, member_id=member,
                      body=TopUpIn(idempotency_key="seed", amount=Decimal("500"),
                                   store="SH01"))
        paid = service.spend(uow=uow, actor=SYSTEM, member_id=member, body=SpendIn(
            idempotency_key="pay", amount=Decimal("100"), store="SH01"))
    clients = 24 if get_engine(url).dialect.name == "postgresql" else 8

    def give_back(uow: UnitOfWork, n: int) -> Any:
        return service.refund(uow=uow, actor=SYSTEM, spend_id=paid["id"], body=RefundIn(
            idempotency_key=f"ret-{n % 6}", amount=Decimal("30"), store="SH01"))

    outcomes, _ = _raced(url, clients, give_back)
    # Six distinct refunds of 30 asked (each sent several times); only three fit in 100.
    assert outcomes["refund_exceeds_spend"] > 0 and outcomes["ok"] >= 3
    with UnitOfWork(get_engine(url)) as uow:
        o = sv_operations.c
        done = uow.c.execute(select(func.count()).where(o.kind == "refund")).scalar_one()
        assert done == 3
        row = uow.c.execute(select(sv_accounts.c.principal, sv_accounts.c.bonus)).one()
        assert sum(row) == Decimal("540.00")  # 550 - 100 + 90
        assert verify(uow.c)["differences"] == []
