"""Webhooks may not be sent into Patron's own network (docs/webhooks.md, "Where webhooks may
go"), on SQLite and PostgreSQL: an endpoint whose URL is, or resolves to, a loopback, private,
link-local or metadata address is refused with a 422 naming the field and nothing is written;
the host is resolved again at every delivery and the request goes to the address checked, so a
name that later resolves inside (DNS rebinding) gets nothing; PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS
lets receivers inside the network through."""

from __future__ import annotations

import ipaddress

import pytest
from sqlalchemy import func, select

from patron.config import get_settings
from patron.db import UnitOfWork
from patron.errors import ValidationFailed
from patron.i18n import t
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.webhooks import delivery, service, targets
from patron.webhooks.tables import webhook_endpoints
from tests.integration.test_webhook_delivery import Receiver, deliveries

INTERNAL = [
    "http://127.0.0.1:8080/hooks", "http://localhost/hooks", "http://[::1]/hooks",
    "http://169.254.169.254/latest/meta-data/iam", "http://100.100.100.200/latest/meta-data",
    "http://10.1.2.3/hooks", "http://172.16.0.9/hooks", "https://192.168.1.20/hooks",
    "http://0.0.0.0:9000/", "http://[::ffff:127.0.0.1]/hooks", "http://[fe80::1]/hooks",
    "http://[fd00::5]/hooks", "http://224.0.0.1/hooks", "http://2130706433/hooks",
]
PUBLIC = "93.184.215.14"


@pytest.fixture
def names(monkeypatch):
    """A DNS stand-in: ``names[host] = [addresses]``; other names resolve as the system does."""
    table: dict[str, list[str]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host in table:
            return list(table[host])
        return targets.system_resolver(host, port)

    monkeypatch.setattr(targets, "resolve", resolve)
    return table


@pytest.fixture
def allow_private(monkeypatch):
    def set_to(value: bool) -> None:
        monkeypatch.setenv("PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS", "1" if value else "0")
        get_settings.cache_clear()

    set_to(False)
    yield set_to
    get_settings.cache_clear()


def written(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(webhook_endpoints)).scalar_one(),
                conn.execute(select(func.count()).select_from(audit_log)).scalar_one())


@pytest.mark.parametrize("url", INTERNAL)
def test_an_internal_address_is_refused_and_nothing_is_written(engine, allow_private, url):
    before = written(engine)
    with pytest.raises(ValidationFailed) as refused, UnitOfWork(engine) as uow:
        service.create_endpoint(uow=uow, actor=SYSTEM, url=url, events=["order.recorded"])
    [field] = refused.value.fields
    assert (field.field, field.reason) == ("url", "webhook_url_internal")
    assert ipaddress.ip_address(field.params["address"])  # names the address it resolved to
    assert written(engine) == before


def test_a_name_resolving_inside_is_refused_and_an_update_too(engine, allow_private, names):
    names["crm.shop.example"] = ["192.168.10.4"]
    names["ok.shop.example"] = [PUBLIC]
    names["mixed.shop.example"] = [PUBLIC, "10.0.0.8"]  # one inside is enough
    for url in ("https://crm.shop.example/hooks", "https://mixed.shop.example/hooks"):
        with pytest.raises(ValidationFailed), UnitOfWork(engine) as uow:
            service.create_endpoint(uow=uow, actor=SYSTEM, url=url, events=["order.recorded"])
    with UnitOfWork(engine) as uow:
        created = service.create_endpoint(uow=uow, actor=SYSTEM,
                                          url="https://ok.shop.example/hooks",
                                          events=["order.recorded"])
    with pytest.raises(ValidationFailed) as refused, UnitOfWork(engine) as uow:
        service.update_endpoint(uow=uow, actor=SYSTEM, endpoint_id=created["id"],
                                url="http://169.254.169.254/latest")
    assert refused.value.fields[0].reason == "webhook_url_internal"
    with UnitOfWork(engine, readonly=True) as uow:
        assert service.get_endpoint(uow.c, created["id"])["url"] == "https://ok.shop.example/hooks"
    # a name that does not resolve (yet) is accepted: it is checked at every delivery
    with UnitOfWork(engine) as uow:
        service.create_endpoint(uow=uow, actor=SYSTEM, url="https://later.invalid/hooks",
                                events=["order.recorded"])
    message = t("webhook_url_internal", "en", address="10.0.0.8")
    assert "10.0.0.8" in message and "PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS" in message
    assert "10.0.0.8" in t("webhook_url_internal", "zh", address="10.0.0.8")


def test_a_name_that_resolves_inside_at_delivery_gets_nothing(engine, allow_private, names):
    with Receiver() as rx:
        port = rx.server.server_address[1]
        names["hooks.shop.example"] = [PUBLIC]  # when it is registered
        with UnitOfWork(engine) as uow:
            created = service.create_endpoint(
                uow=uow, actor=SYSTEM, url=f"http://hooks.shop.example:{port}/hooks/patron",
                events=["order.recorded"])
            service.enqueue(uow.c, "order.recorded", [{"order_id": 1}])
            uow.commit()
        rx.secrets.append(created["secret"])
        names["hooks.shop.example"] = ["127.0.0.1"]  # rebound to the server itself
        stats = delivery.deliver_due(engine=engine)
        assert (stats.claimed, stats.delivered, stats.retrying) == (1, 0, 1)
        assert rx.received == []
        [row] = deliveries(engine)
        assert row["last_error"].startswith("TargetRefused: hooks.shop.example resolves to "
                                            "127.0.0.1")
        # Receivers inside the network, allowed: sent to the address checked, under its name
        allow_private(True)
        with UnitOfWork(engine) as uow:
            service.redeliver(uow=uow, actor=SYSTEM, delivery_id=row["id"])
        assert delivery.deliver_due(engine=engine).delivered == 1
    [received] = rx.received
    assert received.signature_valid
    assert received.headers["host"] == f"hooks.shop.example:{port}"


def test_the_rule_for_addresses():
    for text in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "100.100.100.200", "::1",
                 "fe80::1", "fc00::1", "::ffff:10.0.0.1", "0.0.0.0",  # noqa: S104
                 "255.255.255.255",
                 "192.0.2.1", "224.0.0.251"):
        assert targets.is_internal(ipaddress.ip_address(text)), text
    for text in (PUBLIC, "114.114.114.114", "2400:3200::1", "::ffff:8.8.8.8"):
        assert not targets.is_internal(ipaddress.ip_address(text)), text
