"""Audit entries never hold a secret or a full piece of personal data: a whole flow through the
API and the member pages (orders with phones, emails and openids from a till's API key, search,
reveals, an unmasked export, edits, a merge, an import, failed and good logins, a member's
one-time-code sign-in, a backup), then every entry is scanned for the values used."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from patron.config import get_settings
from patron.db import UnitOfWork, get_engine
from patron.security import audit
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from tests.e2e.conftest import PASSWORD, login
from tests.e2e.test_selfservice_pages import csrf
from tests.factories import order
from tests.loyalty_factories import enrol, make_program
from tests.selfservice_helpers import sent_codes

PHONES = {"13812341234": "+8613812341234", "13900001111": "+8613900001111",
          "13712345678": "+8613712345678"}
EMAILS = ("wang.xiaoming@example.com", "dali@example.net")
NAMES = ("王小明", "王大力")
OPENID = "oWx_9f3kLq2PzT7vY8aBc1dE"


@pytest.fixture
def data_dir(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PATRON_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_no_audit_entry_holds_personal_data_or_secrets(client, users, org, db_url, data_dir):
    login(client, "owner")
    created = client.post("/api/v1/api-keys", json={"name": "till", "store_ids": [org["SH01"]],
                                                    "channel_codes": ["pos"]})
    assert created.status_code == 201, created.text
    api_key = created.json()["key"]
    till = {"Authorization": f"Bearer {api_key}"}
    for body in (
        order("A1", identifiers={"phone": "13812341234", "email": EMAILS[0],
                                 "wechat_openid": OPENID}, customer={"name": NAMES[0]}),
        order("A2", identifiers={"phone": "13900001111", "email": EMAILS[1]},
              customer={"name": NAMES[1]}),
    ):
        r = client.post("/api/v1/orders", json=body, headers=till)
        assert r.status_code == 201, r.text
    first, second = (client.get("/api/v1/customers", params={"q": p}).json()["items"][0]["id"]
                     for p in ("138 1234 1234", "13900001111"))
    client.get("/api/v1/customers", params={"q": EMAILS[0]})
    client.get("/api/v1/customers", params={"q": OPENID})
    client.get("/api/v1/customers", params={"q": "王"})
    client.get("/api/v1/customers/lookup", params={"kind": "phone", "value": "13812341234"})
    for field in ("phone", "email", "name"):
        assert client.post(f"/api/v1/customers/{first}/reveal",
                           json={"field": field}).status_code == 200
    assert client.patch(f"/api/v1/customers/{first}", json={
        "email": "new.address@example.org", "birthday": "1990-05-17"}).status_code == 200
    assert client.get("/api/v1/exports/customers.csv",
                      params={"unmasked": "true"}).status_code == 200
    merged = client.post("/api/v1/customers/merge", json={"customer_ids": [first, second],
                                                          "reason": "same person"})
    assert merged.status_code == 201, merged.text
    csv = (b"order_id,channel,store,purchased_at,phone,sku,quantity,unit_price,total\n"
           b"H-1,pos,SH01,2026-03-02 10:30,13712345678,LATTE,2,28,\n"
           b"H-2,pos,SH01,2026-03-02 10:30,1371234,LATTE,2,28,\n")
    assert client.post("/api/v1/imports", files={"file": ("o.csv", csv, "text/csv")}
                       ).status_code == 202
    client.post("/api/v1/auth/logout")
    wrong = client.post("/api/v1/auth/login", json={"username": "owner",
                                                    "password": "not-" + PASSWORD})
    assert wrong.status_code == 401

    with UnitOfWork(get_engine(db_url)) as uow:
        make_program(uow)
        enrol(uow, "13712345678")
    page = client.get("/m/login")
    sent = client.post("/m/login", data={"csrf_token": csrf(page.text), "phone": "13712345678"})
    code = sent_codes()[-1][1]
    client.post("/m/verify", data={"csrf_token": csrf(sent.text), "phone": "13712345678",
                                   "code": "000000" if code != "000000" else "111111"})
    done = client.post("/m/verify", data={"csrf_token": csrf(sent.text),
                                          "phone": "13712345678", "code": code},
                       follow_redirects=False)
    assert done.status_code == 303

    from patron.backup.service import take_backup

    take_backup(get_engine(db_url), actor=SYSTEM, directory=data_dir / "backups", keep=1)

    settings = get_settings()
    secrets = [api_key, api_key.split(".")[-1], PASSWORD, "not-" + PASSWORD, code,
               *(k.split(":", 1)[1] for ring in (settings.data_keys, settings.backup_keys)
                 for k in ring.split(",")), settings.index_key]
    personal = [*PHONES, *PHONES.values(), *EMAILS, "new.address@example.org", *NAMES, OPENID,
                "1990-05-17", "1371234"]
    with UnitOfWork(get_engine(db_url), readonly=True) as uow:
        rows = uow.c.execute(select(audit_log).order_by(audit_log.c.id)).mappings().all()
        assert audit.verify(uow.c).ok
    actions = {r["action"] for r in rows}
    for expected in ("orders.recorded", "customer.revealed", "customer.updated",
                     "customers.exported", "customers.merged", "api_key.created",
                     "backup.created", "selfservice.login", "selfservice.code_sent",
                     "import.finished", "auth.login_failed"):
        assert expected in actions, sorted(actions)
    assert len(rows) > 15
    found = []
    for row in rows:
        text = json.dumps({k: v for k, v in row.items() if k not in ("at",)},
                          ensure_ascii=False, default=str)
        found += [(row["id"], row["action"], s) for s in secrets + personal if s and s in text]
    assert found == []
