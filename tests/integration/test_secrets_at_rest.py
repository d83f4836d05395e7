"""Secrets and texts that may quote personal data, at rest, on SQLite and PostgreSQL
(docs/data-protection.md#secrets-and-error-texts): the TOTP secret, the webhook signing secret,
the member card's and unsubscribe links' signing keys and the providers' error answers are
encrypted bound to their row (read back in clear, stored as ``<key id>$...``, rotated with the
data key); free text (import errors, reasons, notes) has its phones and e-mails masked."""

from __future__ import annotations

import csv

import httpx
from sqlalchemy import select, text

from patron.config import get_settings
from patron.db import UnitOfWork
from patron.imports import service as imports
from patron.messaging import service as messaging
from patron.messaging.adapters import failed
from patron.messaging.delivery import deliver_due
from patron.protection.keys import new_key
from patron.protection.rotation import protected_columns, rotate, status
from patron.security import service as security
from patron.security.model import SYSTEM, Actor
from patron.security.tables import users
from patron.selfservice import service as selfservice
from patron.webhooks import delivery as webhook_delivery
from patron.webhooks import service as webhooks
from patron.webhooks.tables import webhook_endpoints
from tests.factories import make_org
from tests.messaging_factories import (
    NOW,
    RecordingProvider,
    attempts,
    member_with,
    message,
    queue,
)

NEW_COLUMNS = {"users.totp_secret", "users.totp_pending", "webhook_endpoints.secret",
               "webhook_deliveries.last_error", "selfservice_card_keys.secret",
               "message_keys.value", "messages.error", "message_attempts.error"}


def raw(engine, sql: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text(sql)).scalar_one())


def owner(uow) -> Actor:
    user_id = security.create_user(uow=uow, actor=SYSTEM, username="boss",
                                   password="pw-long-1234", role="owner")
    return Actor(type="user", id=int(user_id), name="boss", role="owner")


def test_secrets_are_encrypted_bound_to_their_row_and_rotated(engine, monkeypatch):
    import pyotp

    assert NEW_COLUMNS <= {p.name for p in protected_columns()}
    with UnitOfWork(engine) as uow:
        make_org(uow)
        actor = owner(uow)
    with UnitOfWork(engine) as uow:
        started = security.start_totp(uow=uow, actor=actor)
    totp = started["secret"]
    assert raw(engine, "SELECT totp_pending FROM users").startswith("t1$")
    assert totp not in raw(engine, "SELECT totp_pending FROM users")
    with UnitOfWork(engine) as uow:
        security.confirm_totp(uow=uow, actor=actor, code=pyotp.TOTP(totp).now())
    stored = raw(engine, "SELECT totp_secret FROM users")
    assert stored.startswith("t1$") and totp not in stored
    with UnitOfWork(engine) as uow:
        endpoint = webhooks.create_endpoint(uow=uow, actor=SYSTEM,
                                            url="https://crm.example.cn/hooks",
                                            events=["order.recorded"])
        card_key_id, card_key = selfservice.ensure_card_key(uow=uow)
    with UnitOfWork(engine) as uow:
        unsubscribe_key = messaging.signing_key(uow.c)
        uow.commit()
    for sql, secret in (("SELECT secret FROM webhook_endpoints", endpoint["secret"]),
                        ("SELECT secret FROM selfservice_card_keys", card_key.hex()),
                        ("SELECT value FROM message_keys", unsubscribe_key)):
        stored = raw(engine, sql)
        assert stored.startswith("t1$") and secret not in stored, sql
    # moved to another row, a secret does not decrypt
    with UnitOfWork(engine) as uow:
        other = webhooks.create_endpoint(uow=uow, actor=SYSTEM, url="https://b.example.cn/h",
                                         events=["order.recorded"])
    # rotation covers them: a new key first, the old one after it
    old = get_settings().data_keys
    monkeypatch.setenv("PATRON_DATA_KEYS", f"t2:{new_key()},{old}")
    get_settings.cache_clear()
    try:
        done = rotate(engine)
        for column in ("users.totp_secret", "webhook_endpoints.secret",
                       "selfservice_card_keys.secret", "message_keys.value"):
            assert done[column] >= 1, column
        assert {k for counts in status(engine).values() for k in counts} == {"t2"}
        monkeypatch.setenv("PATRON_DATA_KEYS", get_settings().data_keys.split(",")[0])
        get_settings.cache_clear()
        with UnitOfWork(engine, readonly=True) as uow:
            assert uow.c.execute(select(users.c.totp_secret)).scalar_one() == totp
            assert uow.c.execute(select(webhook_endpoints.c.secret).where(
                webhook_endpoints.c.id == endpoint["id"])).scalar_one() == endpoint["secret"]
            assert selfservice.ensure_card_key(uow=uow) == (card_key_id, card_key)
            assert messaging.signing_key(uow.c) == unsubscribe_key
    finally:
        get_settings.cache_clear()
    with engine.begin() as conn:  # a secret copied into another endpoint's row
        conn.execute(text("UPDATE webhook_endpoints SET secret = (SELECT secret FROM "
                          "webhook_endpoints WHERE id = :a) WHERE id = :b"),
                     {"a": endpoint["id"], "b": other["id"]})
    from patron.protection.keys import KeyUnavailable

    with UnitOfWork(engine, readonly=True) as uow:
        try:
            uow.c.execute(select(webhook_endpoints.c.secret).where(
                webhook_endpoints.c.id == other["id"])).scalar_one()
        except KeyUnavailable as exc:
            assert exc.message == "key_wrong"
        else:
            raise AssertionError("a secret moved to another row was read")


def test_a_providers_answer_quoting_the_address_is_masked_and_encrypted(engine):
    m = member_with(engine)
    mid = queue(engine, customer_id=m["customer_id"], channel="email",
                to="bounce.li.wei@example.cn")
    # What Postfix answers, and what SMS gateways answer about a number
    provider = RecordingProvider([failed("rejected", "550 5.1.1 <bounce.li.wei@example.cn>: "
                                         "Recipient address rejected; owner +8613812345678")])
    deliver_due(engine=engine, now=NOW, adapters=dict.fromkeys(
        ("sms", "email", "wechat", "app", "webhook"), provider))
    assert provider.received
    row = message(engine, mid)
    assert row["state"] == "failed"
    assert row["error"] == ("550 5.1.1 <b***@example.cn>: Recipient address rejected; "
                            "owner 138****5678")
    (attempt,) = attempts(engine, mid)
    assert attempt["error"] == row["error"]
    for sql in (f"SELECT error FROM messages WHERE id = {mid}",  # noqa: S608 - an int
                f"SELECT error FROM message_attempts WHERE message_id = {mid}"):  # noqa: S608
        stored = raw(engine, sql)
        assert stored.startswith("t1$") and "550" not in stored and "bounce" not in stored


def test_a_webhook_receivers_answer_is_masked_and_encrypted(engine, monkeypatch):
    from patron.webhooks import targets

    monkeypatch.setattr(targets, "resolve", lambda host, port: ["93.184.215.14"])
    with UnitOfWork(engine) as uow:
        make_org(uow)
        endpoint = webhooks.create_endpoint(uow=uow, actor=SYSTEM,
                                            url="https://crm.example.cn/hooks",
                                            events=["customer.created"])
    with UnitOfWork(engine) as uow:
        webhooks.enqueue(uow.c, "customer.created", [{"customer_id": 1}])
        uow.commit()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, text="unknown customer 13812345678 / li@example.cn")

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        webhook_delivery.deliver_due(engine=engine, client=client)
    with UnitOfWork(engine, readonly=True) as uow:
        (delivery,) = webhooks.list_deliveries(uow.c, endpoint_id=endpoint["id"])["items"]
    assert delivery["last_error"] == "HTTP 422: unknown customer 138****5678 / l***@example.cn"
    stored = raw(engine, "SELECT last_error FROM webhook_deliveries")
    assert stored.startswith("t1$") and "422" not in stored


def test_free_text_keeps_no_phone_or_email(engine, tmp_path):
    with UnitOfWork(engine) as uow:
        make_org(uow)
    path = tmp_path / "orders.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "channel", "store", "purchased_at", "phone", "sku", "quantity",
                    "unit_price", "total"])
        # a phone typed into the date column, an e-mail into the quantity
        w.writerow(["E-1", "pos", "SH01", "13812345678", "13900001111", "LATTE", "1", "28", ""])
        w.writerow(["E-2", "pos", "SH01", "2026-03-02 10:30", "", "LATTE", "li@example.cn",
                    "28", ""])
    with UnitOfWork(engine) as uow:
        job_id = imports.start_import(uow=uow, actor=SYSTEM, path=path, filename=path.name)
        imports.run_import(uow=uow, actor=SYSTEM, job_id=job_id, path=path)
        job = imports.get_job(uow=uow, actor=SYSTEM, job_id=job_id, lang="en")
    assert job.rows_rejected == 2
    with engine.connect() as conn:
        stored = [str(r) for r in conn.execute(text(
            "SELECT value, params FROM import_errors"))]
    joined = " ".join(stored)
    assert "138****5678" in joined or "l***@example.cn" in joined
    for needle in ("13812345678", "13900001111", "li@example.cn"):
        assert needle not in joined
