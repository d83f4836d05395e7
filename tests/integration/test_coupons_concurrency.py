"""Many tills at once on the same coupons: redemptions, holds committed or released, with
idempotency keys retried by several clients at random; issuing against a budget from many
clients at once. Afterwards every coupon was used at most once, every key did its work once and
no budget or per-member limit was passed. PostgreSQL with 32 clients, each on its own connection;
SQLite with 8 (it takes one writer at a time)."""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from patron.coupons import service
from patron.coupons.tables import coupon_issues, coupon_operations, coupon_templates, coupon_uses
from patron.coupons.tables import coupons as coupons_table
from patron.db import UnitOfWork, get_engine
from patron.errors import Conflict, NotFound, ValidationFailed
from patron.orders.returns import record_return
from patron.orders.schemas import ReturnIn
from patron.orders.service import record_orders
from patron.orders.tables import returns
from patron.security.model import SYSTEM
from tests.coupon_factories import give, hold, make_template, redeem
from tests.factories import make_org, order
from tests.loyalty_factories import enrol, make_program

# Each of these tests opens dozens of PostgreSQL connections: one at a time (the server allows
# 100), so they share one xdist worker.
pytestmark = pytest.mark.xdist_group("concurrency")

PHONES = ["13800000001", "13800000002", "13800000003"]
EXPECTED = (Conflict, NotFound, ValidationFailed)  # refusals a till must handle; nothing else
LOCK = threading.Lock()


@pytest.fixture(autouse=True)
def _close_idle_connections(db_url):
    """Tens of clients leave as many pooled connections; give them back to the server, which
    other test processes share."""
    yield
    get_engine(db_url).dispose()


def _clients(engine: Any) -> int:
    return 32 if engine.dialect.name == "postgresql" else 8


def _setup(engine: Any, *, limits: dict[str, Any] | None = None, per_member: int = 0,
           **terms: Any) -> tuple[list[int], int, dict[int, list[str]]]:
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow)
        members = [enrol(uow, p)["id"] for p in PHONES]
        tpl = make_template(uow, limits=limits, **terms)
        codes: dict[int, list[str]] = {}
        if per_member:
            for m in members:
                codes[m] = [c["code"] for c in give(uow, tpl["id"], [m], f"seed-{m}",
                                                    quantity=per_member)["coupons"]]
    return members, int(tpl["id"]), codes


def _run(clients: int, target: Any) -> tuple[Counter[str], list[BaseException]]:
    seen: Counter[str] = Counter()
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)
    threads = [threading.Thread(target=target, args=(n, seen, errors, barrier))
               for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return seen, errors


def _bump(seen: Counter[str], what: str) -> None:
    with LOCK:
        seen[what] += 1


def test_the_same_coupon_cannot_be_used_twice_from_two_tills(db_url):
    engine = get_engine(db_url)
    members, _tpl, codes = _setup(engine, per_member=3, with_coupons=True)
    clients = _clients(engine)

    def till(n: int, seen: Counter[str], errors: list[BaseException],
             barrier: threading.Barrier) -> None:
        rnd = random.Random(n)
        barrier.wait()
        for _ in range(10):
            member = rnd.choice(members)
            code = rnd.choice(codes[member])
            slot = rnd.randint(0, 3)
            # Keys shared by every till: the key decides the request, so a till retrying a
            # key another till used sends the same body and must get the first result.
            key = f"{code}-{slot}"
            try:
                with UnitOfWork(engine) as uow:
                    if slot % 2 == 0:
                        out = redeem(uow, member, [code], key)
                        _bump(seen, "replayed" if out["replayed"] else "redeemed")
                    else:
                        h = hold(uow, member, [code], key)
                        finish = rnd.choice([service.commit_hold, service.release_hold])
                        for _ in range(rnd.randint(1, 2)):  # the till retries the second step
                            finish(uow=uow, actor=SYSTEM, operation_id=h["id"])
                        _bump(seen, "held")
            except EXPECTED as exc:
                reason = exc.fields[0].reason if exc.fields else exc.message
                _bump(seen, f"refused:{reason}")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

    seen, errors = _run(clients, till)
    assert errors == [], errors[:3]
    with UnitOfWork(engine) as uow:
        conn = uow.c
        u = coupon_uses.c
        # At most one committed use of each coupon (none was refunded), at most one open hold.
        for status in ("committed", "held"):
            many = conn.execute(select(u.coupon_id).where(u.status == status)
                                .group_by(u.coupon_id).having(func.count() > 1)).all()
            assert many == [], status
        # A coupon's state is that of its uses.
        state = {int(r.id): r for r in conn.execute(select(
            coupons_table.c.id, coupons_table.c.status, coupons_table.c.generation))}
        uses = Counter((int(r.coupon_id), r.status) for r in conn.execute(
            select(u.coupon_id, u.status)))
        for cid, row in state.items():
            assert (row.status == "redeemed") == (uses[(cid, "committed")] == 1), cid
            assert (row.status == "held") == (uses[(cid, "held")] == 1), cid
            # Every generation before the current one ended with a release or expiry.
            assert row.generation == uses[(cid, "released")] + uses[(cid, "expired")], cid
        o = coupon_operations.c
        per_key = conn.execute(select(o.idempotency_key).group_by(o.idempotency_key)
                               .having(func.count() > 1)).all()
        assert per_key == []
        # Each operation's uses match it: a committed redemption has its committed uses.
        lost = conn.execute(select(func.count()).select_from(coupon_operations).where(
            o.status == "committed", ~select(u.id).where(
                u.operation_id == o.id).exists())).scalar_one()
        assert lost == 0
    # The run contended: tills were refused coupons another till had and retried keys.
    assert seen["redeemed"] > 0 and seen["replayed"] > 0, seen
    assert seen["refused:coupon_used"] + seen["refused:coupon_held"] > 0, seen


def test_two_coupons_on_one_checkout_do_not_wipe_each_other_under_concurrency(db_url):
    engine = get_engine(db_url)
    clients = _clients(engine)
    members, _tpl, codes = _setup(engine, per_member=0, with_coupons=True)
    with UnitOfWork(engine) as uow:
        other = make_template(uow, "SHIP", kind="shipping", amount_off=None, with_coupons=True)
        ten = [c["code"] for c in give(uow, _tpl, [members[0]], "ten",
                                       quantity=clients)["coupons"]]
        ship = [c["code"] for c in give(uow, other["id"], [members[0]], "ship",
                                        quantity=clients)["coupons"]]

    def till(n: int, seen: Counter[str], errors: list[BaseException],
             barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            with UnitOfWork(engine) as uow:
                out = redeem(uow, members[0], [ten[n], ship[n]], f"checkout-{n}",
                             basket={"lines": [{"sku": "LATTE", "quantity": "1",
                                                "unit_price": "30"}],
                                     "store": "SH01", "shipping_fee": "6"})
                assert out["discount"] == 16
                _bump(seen, "ok")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    seen, errors = _run(clients, till)
    assert errors == [], errors[:3]
    assert seen["ok"] == clients
    with UnitOfWork(engine) as uow:
        statuses = Counter(uow.c.execute(select(coupons_table.c.status)).scalars())
        assert statuses == Counter({"redeemed": 2 * clients})
        assert uow.c.execute(select(func.count()).select_from(coupon_uses)).scalar_one() \
            == 2 * clients


@pytest.mark.parametrize("limits", [{"total_limit": 40, "per_member_limit": 20},
                                    {"budget_value": "400", "per_member_limit": 20}])
def test_concurrent_issuing_never_passes_the_budget_or_a_member_limit(db_url, limits):
    engine = get_engine(db_url)
    members, tpl, _ = _setup(engine, limits=limits)
    clients = _clients(engine)

    def issuer(n: int, seen: Counter[str], errors: list[BaseException],
               barrier: threading.Barrier) -> None:
        rnd = random.Random(n)
        barrier.wait()
        for _ in range(4):
            slot = rnd.randint(0, 24)
            # The key decides the request: retried by several clients with the same body.
            body_rnd = random.Random(slot)
            chosen = sorted(body_rnd.sample(members, body_rnd.randint(1, 3)))
            quantity = body_rnd.randint(1, 3)
            try:
                with UnitOfWork(engine) as uow:
                    out = give(uow, tpl, chosen, f"issue-{slot}", quantity=quantity)
                    _bump(seen, "replayed" if out["replayed"] else "issued")
            except EXPECTED as exc:
                _bump(seen, f"refused:{exc.message}")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

    seen, errors = _run(clients, issuer)
    assert errors == [], errors[:3]
    with UnitOfWork(engine) as uow:
        conn = uow.c
        t = conn.execute(select(coupon_templates)).mappings().one()
        total = conn.execute(select(func.count()).select_from(coupons_table)).scalar_one()
        assert total == t["issued_count"] <= 40
        assert t["issued_value"] == 10 * total <= 400
        per_member = conn.execute(select(func.count()).select_from(coupons_table).group_by(
            coupons_table.c.member_id)).scalars().all()
        assert max(per_member) <= 20
        issued = conn.execute(select(func.sum(coupon_issues.c.issued))).scalar_one()
        assert issued == total
        keys = conn.execute(select(coupon_issues.c.idempotency_key).group_by(
            coupon_issues.c.idempotency_key).having(func.count() > 1)).all()
        assert keys == []
    assert seen["issued"] > 0 and seen["replayed"] > 0, seen
    assert seen["refused:coupon_budget_exhausted"] > 0, seen


def test_refunds_racing_redemptions_give_each_coupon_back_once(db_url):
    """Tills redeem a member's coupons on orders while other tills refund those orders in full:
    a refund gives back only what its order used, once, and a coupon given back can be used
    again, once."""
    engine = get_engine(db_url)
    members, _tpl, codes = _setup(engine, per_member=4, with_coupons=False)
    member, mine = members[0], codes[members[0]]
    now = dt.datetime.now(dt.UTC)
    receipts = [f"O{k}" for k in range(8)]
    with UnitOfWork(engine) as uow:
        record_orders(uow=uow, orders_in=[order(r, at=now - dt.timedelta(minutes=5),
                                                identifiers={"phone": PHONES[0]})
                                          for r in receipts], source="api", actor=SYSTEM)
    clients = _clients(engine)

    def till(n: int, seen: Counter[str], errors: list[BaseException],
             barrier: threading.Barrier) -> None:
        rnd = random.Random(n)
        barrier.wait()
        for _ in range(8):
            receipt = rnd.choice(receipts)
            try:
                with UnitOfWork(engine) as uow:
                    if rnd.random() < 0.7:
                        code = rnd.choice(mine)
                        out = redeem(uow, member, [code], f"{code}-{receipt}",
                                     order={"channel": "pos", "store": "SH01",
                                            "external_id": receipt})
                        _bump(seen, "replayed" if out["replayed"] else "redeemed")
                    else:
                        ret = ReturnIn.model_validate({
                            "external_id": f"RT-{receipt}", "channel": "pos", "store": "SH01",
                            "order_external_id": receipt, "full": True,
                            "returned_at": now.isoformat()})
                        _bump(seen, "refund:" + record_return(uow=uow, ret=ret,
                                                              actor=SYSTEM)["status"])
            except EXPECTED as exc:
                reason = exc.fields[0].reason if exc.fields else exc.message
                _bump(seen, f"refused:{reason}")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

    seen, errors = _run(clients, till)
    assert errors == [], errors[:3]
    with UnitOfWork(engine) as uow:
        conn = uow.c
        u, o = coupon_uses.c, coupon_operations.c
        rows = conn.execute(select(u.coupon_id, u.status, u.generation,
                                   u.restored_by_return_id, o.order_id)
                            .join(coupon_operations, o.id == u.operation_id)).all()
        returned = {int(r.order_id): int(r.id) for r in conn.execute(
            select(returns.c.order_id, returns.c.id))}
        state = {int(r.id): r for r in conn.execute(select(
            coupons_table.c.id, coupons_table.c.status, coupons_table.c.generation))}
        for cid, c in state.items():
            mine_uses = sorted((r for r in rows if r.coupon_id == cid),
                               key=lambda r: r.generation)
            # One use per generation, every earlier one given back by its order's refund.
            assert [r.generation for r in mine_uses] == list(range(len(mine_uses)))
            for r in mine_uses[:-1] if c.status == "redeemed" else mine_uses:
                assert r.status == "restored" and r.order_id in returned
                assert r.restored_by_return_id == returned[r.order_id]
            if c.status == "redeemed":
                assert mine_uses[-1].status == "committed"
            assert c.generation == sum(r.status == "restored" for r in mine_uses)
        assert any(r.status == "restored" for r in rows)  # refunds did give coupons back
    assert seen["redeemed"] > 0 and seen["refund:created"] > 0, seen
