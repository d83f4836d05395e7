"""Many tills checking out the same members at once: sales that earn, sales paid with points,
coupons or stored value, holds committed or released, refunds and offline queues, every client
retrying idempotency keys at random (a key's content is the same whoever sends it). Afterwards
no balance is negative, no entry is duplicated, no coupon paid twice, every card adds up, every
key did its work once, every checkout has its order and `patron ledger verify` finds nothing.
PostgreSQL with 32 clients, each on its own connection; SQLite with 6 (one writer at a time)."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.checkout import service
from patron.checkout.schemas import CommitIn, HoldIn, OfflineBatchIn, RefundIn
from patron.checkout.tables import checkout_commits, checkout_holds, checkout_refunds
from patron.coupons.tables import coupon_uses
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn
from patron.loyalty.tables import loyalty_entries, loyalty_members, loyalty_operations
from patron.loyalty.verify import verify
from patron.orders.tables import orders
from patron.security.model import SYSTEM
from patron.storedvalue import service as storedvalue
from patron.storedvalue.schemas import SettingsIn, TopUpIn
from patron.storedvalue.verify import verify as sv_verify
from tests.checkout_factories import LINES, TIERS
from tests.coupon_factories import give, make_template
from tests.factories import make_org
from tests.loyalty_factories import enrol, make_program

# Each of these tests opens dozens of PostgreSQL connections: one at a time (the server allows
# 100), so they share one xdist worker.
pytestmark = pytest.mark.xdist_group("concurrency")

PHONES = ["13800000001", "13800000002", "13800000003", "13800000004"]
EXPECTED = (Conflict, NotFound, ValidationFailed)  # refusals a till must handle; nothing else
LOCK = threading.Lock()
GOLD_TOTAL = 6390  # the basket of LINES for a GOLD member (10% member discount)


def _setup(engine: Any, now: dt.datetime, points: int) -> tuple[list[str], list[list[str]]]:
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow, tiers=TIERS, now=now - dt.timedelta(days=2))
        template = make_template(uow, "TEN", now=now - dt.timedelta(days=2))
        storedvalue.configure(uow=uow, actor=SYSTEM, code="BB", body=SettingsIn(),
                              now=now - dt.timedelta(days=2))
        codes = []
        coupon_codes = []
        for p in PHONES:
            m = enrol(uow, p, now=now - dt.timedelta(days=2))
            for key, body in ((f"p-{p}", {"points": points}),
                              (f"g-{p}", {"points": 1000, "bucket": "growth"})):
                loyalty.adjust(uow=uow, actor=SYSTEM, member_id=m["id"],
                               body=AdjustIn(idempotency_key=key, reason="opening", **body),
                               now=now - dt.timedelta(days=1))
            codes.append(m["member_code"])
            issued = give(uow, template["id"], [m["id"]], f"give-{p}", quantity=4,
                          now=now - dt.timedelta(days=1))
            storedvalue.topup(uow=uow, actor=SYSTEM, member_id=m["id"],
                              now=now - dt.timedelta(days=1),
                              body=TopUpIn.model_validate({"idempotency_key": f"top-{p}",
                                                           "amount": "100", "store": "SH01"}))
            coupon_codes.append([c["code"] for c in issued["coupons"]])
    return codes, coupon_codes


def _sale(code: str, key: str, redeem: int, **extra: Any) -> dict[str, Any]:
    return {"store": "SH01", "lines": LINES, "member": {"member_code": code},
            "idempotency_key": key, "order_number": key, "redeem_points": redeem,
            "payments": [{"method": "cash", "amount_fen": GOLD_TOTAL - redeem}], **extra}


def _client(engine: Any, n: int, codes: list[str], coupon_codes: list[list[str]], ops: int,
            seen: Counter[str],
            committed: list[int], errors: list[BaseException], barrier: threading.Barrier,
            start: dt.datetime) -> None:
    def bump(what: str) -> None:
        with LOCK:
            seen[what] += 1

    rnd = random.Random(n)
    barrier.wait()
    for _ in range(ops):
        m = rnd.randrange(len(codes))
        code = codes[m]
        slot = rnd.randint(0, 12)
        action = rnd.choice(["earn", "redeem", "redeem", "hold", "refund", "offline",
                             "coupon", "card"])
        tries = 2 if rnd.random() < 0.3 else 1  # a till resending the same request
        for _attempt in range(tries):
            try:
                with UnitOfWork(engine) as uow:
                    if action == "earn":
                        out = service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(
                            _sale(code, f"e-{m}-{slot}", 0)))
                        with LOCK:
                            committed.append(out["checkout_id"])
                    elif action == "redeem":
                        out = service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(
                            _sale(code, f"r-{m}-{slot}", 150 + 50 * slot)))
                        with LOCK:
                            committed.append(out["checkout_id"])
                    elif action == "card":
                        # Stored value and points on one checkout, keys shared by every till.
                        paid = 1500 + 100 * slot
                        out = service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(
                            {**_sale(code, f"s-{m}-{slot}", 100), "stored_value_fen": paid,
                             "payments": [{"method": "cash",
                                           "amount_fen": GOLD_TOTAL - 100 - paid}]}))
                        with LOCK:
                            committed.append(out["checkout_id"])
                    elif action == "coupon":
                        # Keys shared by every till, each naming one of the member's coupons:
                        # two keys on one coupon, and only one of them may use it.
                        coupon = coupon_codes[m][slot % 4]
                        out = service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(
                            {**_sale(code, f"c-{m}-{slot}", 0, coupons=[coupon]),
                             "payments": [{"method": "cash",
                                           "amount_fen": GOLD_TOTAL - 1000}]}))
                        with LOCK:
                            committed.append(out["checkout_id"])
                    elif action == "hold":
                        points = 40 + 23 * slot
                        h = service.create_hold(uow=uow, actor=SYSTEM, body=HoldIn.model_validate(
                            {"store": "SH01", "lines": LINES, "member": {"member_code": code},
                             "idempotency_key": f"h-{m}-{slot}", "redeem_points": points}))
                        if rnd.random() < 0.5:
                            out = service.commit(
                                uow=uow, actor=SYSTEM, body=CommitIn.model_validate(
                                    _sale(code, f"hc-{m}-{slot}", points, hold_id=h["id"])))
                            with LOCK:
                                committed.append(out["checkout_id"])
                        else:
                            service.release_hold(uow=uow, actor=SYSTEM, hold_id=h["id"])
                    elif action == "refund":
                        with LOCK:
                            pool = list(committed)
                        if not pool:
                            continue
                        target = rnd.choice(pool)
                        body = ({"idempotency_key": f"rf-{target}", "full": True}
                                if rnd.random() < 0.5 else
                                {"idempotency_key": f"rp-{target}",
                                 "lines": [{"line_no": 1, "quantity": "1"}]})
                        service.refund(uow=uow, actor=SYSTEM, checkout_id=target,
                                       body=RefundIn.model_validate(body))
                    else:
                        entries = [
                            _sale(code, f"o-{m}-{slot}-{k}", 0,
                                  purchased_at=(start - dt.timedelta(minutes=slot * 3 + k)
                                                ).isoformat()) for k in range(2)]
                        out = service.sync_offline(uow=uow, actor=SYSTEM,
                                                   body=OfflineBatchIn.model_validate(
                                                       {"entries": entries}))
                        assert set(out["summary"]) <= {"created", "replayed"}, out
                bump(action)
            except EXPECTED as exc:
                bump(f"refused:{exc.message}")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)


def _run(url: str, clients: int, ops: int, points: int) -> tuple[Counter[str], Any]:
    engine = get_engine(url)
    now = dt.datetime.now(dt.UTC)
    codes, coupon_codes = _setup(engine, now, points)
    seen: Counter[str] = Counter()
    errors: list[BaseException] = []
    committed: list[int] = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=_client, args=(engine, n, codes, coupon_codes, ops, seen,
                                                      committed, errors, barrier, now))
               for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert errors == [], errors[:3]
    return seen, engine


def _check(engine: Any, seen: Counter[str]) -> None:
    with UnitOfWork(engine) as uow:
        conn = uow.c
        assert verify(conn)["differences"] == []
        m = loyalty_members.c
        lows = conn.execute(select(func.min(m.points_available), func.min(m.points_held),
                                   func.min(m.points_pending), func.min(m.points_owed))).one()
        assert min(lows) >= 0
        e = loyalty_entries.c
        dupes = conn.execute(select(e.cause_type, e.cause_id, e.kind, e.bucket, e.member_id)
                             .group_by(e.cause_type, e.cause_id, e.kind, e.bucket, e.member_id)
                             .having(func.count() > 1)).all()
        assert dupes == []
        c = checkout_commits.c
        # Every checkout has its order, and every checkout order its checkout.
        assert conn.execute(select(func.count()).where(c.order_id.is_(None))).scalar_one() == 0
        checkout_orders = conn.execute(select(func.count()).where(
            orders.c.source == "checkout")).scalar_one()
        assert checkout_orders == conn.execute(select(func.count()).select_from(
            checkout_commits)).scalar_one()
        # Points paid by each checkout were redeemed once: one finished operation each.
        o = loyalty_operations.c
        paid = conn.execute(select(c.points_operation_id, c.points_redeemed)
                            .where(c.points_redeemed > 0)).all()
        assert len({op for op, _ in paid}) == len(paid)
        ops = dict(conn.execute(select(o.id, o.points).where(
            o.id.in_([op for op, _ in paid]), o.status.in_(("done", "committed")))).all())
        assert ops == {op: pts for op, pts in paid}
        redeemed = conn.execute(select(func.count()).where(
            e.kind == "redeem", e.cause_type == "operation")).scalar_one()
        finished = conn.execute(select(func.count()).where(
            o.kind.in_(("redeem", "hold")), o.status.in_(("done", "committed")))).scalar_one()
        assert redeemed == finished
        # Holds: a committed one paid exactly one checkout; an open one still holds its points.
        h = checkout_holds.c
        committed_holds = conn.execute(select(h.id, h.checkout_id).where(
            h.status == "committed")).all()
        assert all(cid is not None for _, cid in committed_holds)
        assert len({cid for _, cid in committed_holds}) == len(committed_holds)
        # Stored value: every card adds up, none below zero, one spend per checkout.
        assert sv_verify(conn)["differences"] == []
        spends = conn.execute(select(c.stored_value_operation_id).where(
            c.stored_value > 0)).scalars().all()
        assert None not in spends and len(set(spends)) == len(spends)
        # A coupon paid at most one checkout at a time: one committed use per coupon.
        u = coupon_uses.c
        twice = conn.execute(select(u.coupon_id).where(u.status == "committed")
                             .group_by(u.coupon_id).having(func.count() > 1)).all()
        assert twice == []
        # Refunds never gave back more points than paid (the CHECK holds it too).
        r = checkout_refunds.c
        over = conn.execute(select(c.id).join(checkout_refunds, r.checkout_id == c.id)
                            .group_by(c.id, c.points_redeemed)
                            .having(func.sum(r.points_returned) > c.points_redeemed)).all()
        assert over == []
    for action in ("earn", "redeem", "hold", "refund", "offline", "coupon", "card"):
        assert seen[action] > 0, seen
    assert seen["refused:insufficient_points"] > 0, seen


def _fresh(url: str) -> None:
    from patron.org.service import clear_reference_cache, ensure_default_channels

    clear_reference_cache()
    with UnitOfWork(get_engine(url)) as uow:
        ensure_default_channels(uow.c)
        uow.commit()


def test_32_tills_checking_out_the_same_members_on_postgresql_leave_a_ledger_that_verifies(
        postgres_url):
    from tests.conftest import _truncate_postgres

    _truncate_postgres(postgres_url)
    _fresh(postgres_url)
    seen, engine = _run(postgres_url, clients=32, ops=8, points=600)
    _check(engine, seen)


def test_tills_checking_out_the_same_members_on_sqlite_leave_a_ledger_that_verifies(
        tmp_path, sqlite_template):
    path = tmp_path / "patron.sqlite3"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    _fresh(url)
    seen, engine = _run(url, clients=6, ops=20, points=600)
    _check(engine, seen)
    engine.dispose()


def test_many_confirmations_at_once_never_drive_a_balance_negative(db_url):
    engine = get_engine(db_url)
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(engine) as uow:
        make_org(uow)
        # Points earned stay pending for a week: only the opening 1,000 can pay.
        make_program(uow, tiers=TIERS, now=now - dt.timedelta(days=1), pending_days=7)
        member = enrol(uow, now=now - dt.timedelta(days=1))
        loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"],
                       body=AdjustIn(idempotency_key="seed", points=1000, reason="opening"))
    clients = 24 if engine.dialect.name == "postgresql" else 8
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def confirm(n: int) -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                body = {"store": "SH01", "lines": LINES,
                        "member": {"member_code": member["member_code"]},
                        "idempotency_key": f"q-{n}", "order_number": f"Q-{n}",
                        "redeem_points": 300,
                        "payments": [{"method": "cash", "amount_fen": 7100 - 300}]}
                service.commit(uow=uow, actor=SYSTEM, body=CommitIn.model_validate(body))
            with LOCK:
                outcomes["ok"] += 1
        except Conflict as exc:
            with LOCK:
                outcomes[exc.message] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=confirm, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert outcomes == {"ok": 3, "insufficient_points": clients - 3}
    with UnitOfWork(engine) as uow:
        row = uow.c.execute(select(loyalty_members)).mappings().one()
        assert row["points_available"] == 100 and row["points_pending"] == 3 * 67
        assert verify(uow.c)["differences"] == []
