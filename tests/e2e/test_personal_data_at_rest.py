"""Personal data at rest (docs/data-protection.md#personal-data-at-rest), on SQLite and
PostgreSQL: after a whole flow (orders with phones, emails and openids from a till, an import
with a bad row quoting a phone, a merge, edits, a points adjustment whose reason quotes a phone,
a checkout, a member's one-time-code sign-in, messages delivered and refused by a provider
quoting the address, a webhook receiver answering with a phone and an e-mail, a TOTP secret,
the audit trail, a backup) no phone number, email or secret is found in clear: in the raw
database files (SQLite's file and its WAL; PostgreSQL's relation files of the database: tables,
indexes, TOAST, when the test may read the data directory), in every table's content as
PostgreSQL copies it out (``COPY ... TO STDOUT``) and every index's definition, in the server's
log, in the backup; values are bound to their row; a wrong or missing key is a clear error;
rotation re-encrypts everything while the old key still reads."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from patron.config import get_settings
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork, get_engine
from patron.messaging.adapters import failed
from patron.messaging.delivery import deliver_due
from patron.protection.keys import KeyUnavailable, new_key
from patron.security.model import SYSTEM
from patron.webhooks import delivery as webhook_delivery
from tests.checkout_factories import LINES
from tests.e2e.conftest import login
from tests.e2e.test_selfservice_pages import csrf
from tests.factories import order
from tests.loyalty_factories import enrol, make_program
from tests.messaging_factories import RecordingProvider, queue
from tests.selfservice_helpers import sent_codes

PHONES = ("13812341234", "13900001111", "13712345678", "13655556666", "13566667777",
          "13344445555")
EMAILS = ("wang.xiaoming@example.com", "dali@example.net", "new.address@example.org",
          "bounce.zhao@example.cn")
OPENID = "oWx_9f3kLq2PzT7vY8aBc1dE"
SECRETS: list[str] = []  # the TOTP and webhook secrets the flow was given


def needles() -> list[bytes]:
    out = []
    for p in PHONES:
        out += [p.encode(), f"+86{p}".encode(), p.encode("utf-16-le")]
    for e in (*EMAILS, OPENID, *SECRETS):
        out += [e.encode(), e.encode("utf-16-le")]
    return out


@pytest.fixture
def data_dir(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def _flow(client: Any, org: dict[str, int], db_url: str, data_dir: Path) -> None:
    login(client, "owner")
    key = client.post("/api/v1/api-keys", json={"name": "till", "store_ids": [org["SH01"]],
                                                "channel_codes": ["pos"]}).json()["key"]
    till = {"Authorization": f"Bearer {key}"}
    for body in (
        order("A1", identifiers={"phone": PHONES[0], "email": EMAILS[0],
                                 "wechat_openid": OPENID}, customer={"name": "王小明"}),
        order("A2", identifiers={"phone": PHONES[1], "email": EMAILS[1]},
              customer={"name": "王大力", "birthday": "1990-05-17"}),
        order("A3", identifiers={"phone": PHONES[1], "wechat_openid": OPENID}),  # merges
    ):
        assert client.post("/api/v1/orders", json=body, headers=till).status_code == 201
    # a retry with other content: the 409 lists what differs, identifiers included
    clash = client.post("/api/v1/orders", headers=till, json=order(
        "A1", identifiers={"phone": PHONES[3]}))
    assert clash.status_code == 409
    # (by name: a phone in a URL would reach access logs, which is issue 6's section 6)
    first = client.get("/api/v1/customers", params={"q": "王小明"}).json()["items"][0]["id"]
    assert client.patch(f"/api/v1/customers/{first}",
                        json={"email": EMAILS[2]}).status_code == 200
    assert client.post(f"/api/v1/customers/{first}/reveal",
                       json={"field": "phone"}).json()["value"] == f"+86{PHONES[0]}"
    # a bad row: a phone typed into the date column is kept as the error's value, masked
    csv = (b"order_id,channel,store,purchased_at,phone,sku,quantity,unit_price,total\n"
           b"H-1,pos,SH01,2026-03-02 10:30,13655556666,LATTE,2,28,\n"
           b"H-2,pos,SH01,13344445555,,LATTE,1,28,\n")
    assert client.post("/api/v1/imports", files={"file": ("o.csv", csv, "text/csv")}
                       ).status_code == 202
    SECRETS[:] = [client.post("/api/v1/auth/totp").json()["secret"]]
    hook = client.post("/api/v1/webhooks", json={"url": "https://crm.example.cn/hooks",
                                                 "events": ["order.recorded", "customer.created"]})
    assert hook.status_code == 201, hook.text
    SECRETS.append(hook.json()["secret"])
    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow)
        enrol(uow, PHONES[2])
        member = enrol(uow, PHONES[4])
    r = client.post(f"/api/v1/loyalty/members/{member['id']}/adjustments", json={
        "idempotency_key": "adj-1", "points": 800,
        "reason": f"called from {PHONES[4]}, receipt to {EMAILS[1]}"})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/checkout/commits", json={
        "store": "SH01", "lines": LINES, "member": {"member_code": member["member_code"]},
        "idempotency_key": "till-1", "order_number": "SH01-0001", "redeem_points": 300,
        "payments": [{"method": "wechat_pay", "amount_fen": 6800}]})
    assert r.status_code == 201, r.text
    client.post("/api/v1/auth/logout")
    page = client.get("/m/login")
    sent = client.post("/m/login", data={"csrf_token": csrf(page.text), "phone": PHONES[2]})
    code = sent_codes()[-1][1]
    done = client.post("/m/verify", data={"csrf_token": csrf(sent.text), "phone": PHONES[2],
                                          "code": code}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get("/m/home").status_code == 200
    assert deliver_due(engine=get_engine(db_url)).claimed >= 1  # through the log adapter
    # a provider refusing an address and quoting it, a receiver answering with personal data
    queue(get_engine(db_url), customer_id=None, channel="email", to=EMAILS[3], key="bounce",
          template="otp_login", purpose="otp")
    refusing = RecordingProvider([failed("rejected", f"550 5.1.1 <{EMAILS[3]}>: rejected; "
                                                     f"owner +86{PHONES[5]}")])
    assert deliver_due(engine=get_engine(db_url), adapters=dict.fromkeys(
        ("sms", "email", "wechat", "app", "webhook"), refusing)).failed == 1

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, text=f"unknown {PHONES[0]} / {EMAILS[0]}")

    with httpx.Client(transport=httpx.MockTransport(answer)) as http:
        assert webhook_delivery.deliver_due(engine=get_engine(db_url), client=http).retrying
    from patron.backup.service import take_backup

    take_backup(get_engine(db_url), actor=SYSTEM, directory=data_dir / "backups", keep=1)


def _raw_database(engine: Any) -> list[tuple[str, bytes]]:
    if engine.dialect.name == "sqlite":
        path = Path(make_url(str(engine.url)).database)
        return [(p.name, p.read_bytes()) for p in path.parent.glob(path.name + "*")]
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))  # shared buffers to the relation files
        data = Path(conn.execute(text("SHOW data_directory")).scalar())
        oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = "
                                "current_database()")).scalar()
    base = data / "base" / str(oid)
    if not os.access(base, os.R_OK | os.X_OK):
        return []  # another machine's server, or one this user may not read: COPY still runs
    return [(p.name, p.read_bytes()) for p in base.iterdir() if p.is_file()]


def _postgres_copies(engine: Any) -> bytes:
    """Every table of the schema as COPY writes it out (what pg_dump would), and the definition
    of every index (an expression index would compute from clear values)."""
    out = []
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = "
                                   "current_schema()")).scalars().all()
        assert len(tables) > 50
        for table in tables:
            with cursor.copy(f'COPY "{table}" TO STDOUT') as copy:
                out += [bytes(chunk) for chunk in copy]
        out += [str(d).encode() for d in conn.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()")).scalars()]
    return b"\n".join(out)


def test_no_phone_or_email_in_clear_at_rest_in_logs_or_backups(client, users, org, db_url,
                                                               data_dir, caplog, monkeypatch):
    from patron.webhooks import targets

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(targets, "resolve", lambda host, port: ["93.184.215.14"])  # a public one
    _flow(client, org, db_url, data_dir)
    engine = get_engine(db_url)
    with engine.connect() as conn:  # the flow did write what the test looks for
        assert conn.execute(select(func.count()).select_from(identities)).scalar() >= 6
        merged = conn.execute(select(func.count()).select_from(customers).where(
            customers.c.merged_into_id.is_not(None))).scalar()
        assert merged == 1
    found = []
    files = _raw_database(engine)
    if engine.dialect.name == "sqlite" or os.geteuid() == 0:  # CI runs as root
        assert sum(len(b) for _n, b in files) > 100_000
    for name, raw in files:
        found += [(name, n) for n in needles() if n in raw]
    if engine.dialect.name == "postgresql":  # the logical view of every table too
        copies = _postgres_copies(engine)
        assert len(copies) > 10_000
        found += [("COPY", n) for n in needles() if n in copies]
    # the flow did write what may quote personal data, masked
    with engine.connect() as conn:
        assert "135****7777" in str(conn.execute(text(
            "SELECT reason FROM loyalty_operations WHERE reason IS NOT NULL")).scalars().all())
        assert "133****5555" in str(conn.execute(text(
            "SELECT value FROM import_errors")).scalars().all())
    for backup in (data_dir / "backups").iterdir():
        raw = backup.read_bytes()
        found += [(backup.name, n) for n in needles() if n in raw]
    # Patron's own log lines (httpx's are the test client's, on the caller's side)
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if not r.name.startswith("httpx")).encode()
    assert b"otp" in logged  # the log adapter wrote the code's message
    found += [("log", n) for n in needles() if n in logged]
    assert found == []


def test_a_value_moved_to_another_row_is_refused_not_read(engine, uow):
    from patron.orders.service import record_orders
    from tests.factories import make_org

    make_org(uow)
    out = record_orders(uow=uow, source="api", actor=SYSTEM, orders_in=[
        order("B1", identifiers={"phone": PHONES[0]}), order("B2", identifiers={
            "phone": PHONES[1]})])
    a, b = out[0].customer_id, out[1].customer_id
    stolen = uow.c.execute(text("SELECT phone FROM customers WHERE id = :a"), {"a": a}).scalar()
    assert stolen.startswith("t1$") and PHONES[0] not in stolen
    uow.c.execute(text("UPDATE customers SET phone = :p WHERE id = :b"), {"p": stolen, "b": b})
    with pytest.raises(KeyUnavailable) as err:
        uow.c.execute(select(customers.c.phone).where(customers.c.id == b)).scalar()
    assert err.value.message == "key_wrong"
    assert uow.c.execute(select(customers.c.phone).where(customers.c.id == a)
                         ).scalar() == f"+86{PHONES[0]}"


def test_a_wrong_or_missing_key_is_a_clear_error(engine, uow, monkeypatch):
    from patron.customers.queries import search_customers as search
    from patron.orders.service import record_orders
    from tests.factories import make_org

    make_org(uow)
    record_orders(uow=uow, source="api", actor=SYSTEM,
                  orders_in=[order("C1", identifiers={"phone": PHONES[0]})])
    owner = SYSTEM
    monkeypatch.setenv("PATRON_DATA_KEYS", f"t1:{new_key()}")  # same id, other key
    get_settings.cache_clear()
    with pytest.raises(KeyUnavailable) as err:
        search(uow.c, actor=owner, q=PHONES[0])
    assert (err.value.message, err.value.params["key_id"]) == ("key_wrong", "t1")
    monkeypatch.setenv("PATRON_DATA_KEYS", f"t9:{new_key()}")  # the key is gone
    get_settings.cache_clear()
    with pytest.raises(KeyUnavailable) as err:
        search(uow.c, actor=owner, q=PHONES[0])
    assert (err.value.message, err.value.params["key_id"]) == ("key_missing", "t1")
    from patron.i18n import t

    assert "t1" in t("key_missing", "en", **err.value.params)
    get_settings.cache_clear()


def test_keys_rotate_re_encrypts_everything_while_the_old_key_still_reads(engine, uow,
                                                                          monkeypatch):
    from patron.cli import app
    from patron.customers.queries import search_customers as search
    from patron.orders.service import record_orders
    from patron.protection.rotation import rotate, status
    from tests.factories import make_org

    make_org(uow)
    record_orders(uow=uow, source="api", actor=SYSTEM, orders_in=[
        order(f"R{i}", identifiers={"phone": f"1380000{i:04d}", "email": f"r{i}@example.com"},
              customer={"name": f"李{i}"}) for i in range(30)])
    uow.rollback()
    old = get_settings().data_keys
    monkeypatch.setenv("PATRON_DATA_KEYS", f"t2:{new_key()},{old}")
    get_settings.cache_clear()
    try:
        with UnitOfWork(engine) as during:  # written during the rotation: the new key
            record_orders(uow=during, source="api", actor=SYSTEM, orders_in=[
                order("R-new", identifiers={"phone": "13800009999"})])
        before = status(engine)
        assert before["customers.phone"]["t1"] == 30 and before["customers.phone"]["t2"] == 1
        # reads work with both keys in the ring, before and during the rotation
        assert search(uow.c, actor=SYSTEM, q="13800000007")[0]["phone"] == "138****0007"
        uow.rollback()
        first = rotate(engine, batch=7)
        assert first["customers.phone"] == 30 and first["identities.value"] == 60
        assert {k for counts in status(engine).values() for k in counts} == {"t2"}
        assert rotate(engine, batch=7) == {}  # nothing left
        result = CliRunner().invoke(app, ["keys", "status"])
        assert result.exit_code == 0 and '"t1"' not in result.output.split('"columns"')[1]
        # the old key can go now
        monkeypatch.setenv("PATRON_DATA_KEYS", get_settings().data_keys.split(",")[0])
        get_settings.cache_clear()
        hit = search(uow.c, actor=SYSTEM, q="13800000007")[0]
        uow.rollback()
        assert hit["phone"] == "138****0007"
        with UnitOfWork(engine) as check:
            names = check.c.execute(select(customers.c.name).order_by(customers.c.id)).scalars()
            assert [n for n in names if n] == [f"李{i}" for i in range(30)]
    finally:
        get_settings.cache_clear()


def test_rotation_refuses_a_value_whose_key_is_gone(engine, uow, monkeypatch):
    from patron.orders.service import record_orders
    from patron.protection.rotation import rotate
    from tests.factories import make_org

    make_org(uow)
    record_orders(uow=uow, source="api", actor=SYSTEM,
                  orders_in=[order("G1", identifiers={"phone": PHONES[0]})])
    uow.rollback()
    monkeypatch.setenv("PATRON_DATA_KEYS", f"t3:{new_key()}")  # t1 forgotten
    get_settings.cache_clear()
    try:
        with pytest.raises(KeyUnavailable):
            rotate(engine)
    finally:
        get_settings.cache_clear()
    with engine.connect() as conn:  # nothing was written
        raw = conn.execute(text("SELECT phone FROM customers")).scalar()
    assert raw.startswith("t1$")
