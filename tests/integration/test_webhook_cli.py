"""``patron webhooks ...`` as an operator runs it, in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from patron.webhooks import service
from tests.integration.test_webhook_delivery import Receiver, deliveries

PATRON = Path(sys.executable).parent / "patron"


@pytest.fixture(autouse=True)
def private_targets_allowed(monkeypatch):
    """The receivers here listen on 127.0.0.1, which Patron refuses by default."""
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_WEBHOOK_ALLOW_PRIVATE_TARGETS", "1")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en",
           "COLUMNS": "200"}
    return subprocess.run([str(PATRON), "webhooks", *args], env=env, capture_output=True,  # noqa: S603
                          text=True, timeout=60, check=False)


def test_operator_adds_endpoint_and_one_worker_round_delivers(db_url, engine):
    with Receiver() as rx:
        out = patron(db_url, "add", rx.url, "-e", "order.recorded", "-e", "customer.created")
        assert out.returncode == 0, out.stderr
        secret = out.stdout.split("secret (shown once): ")[1].split()[0]
        rx.secrets.append(secret)
        from patron.db import UnitOfWork

        with UnitOfWork(engine) as uow:
            service.enqueue(uow.c, "order.recorded", [{"order_id": 1}, {"order_id": 2}])
            uow.commit()
        out = patron(db_url, "deliver", "--once")
        assert out.returncode == 0, out.stderr
        assert "delivered 2" in out.stdout
    assert len(rx.received) == 2 and all(r.signature_valid for r in rx.received)
    assert {r["status"] for r in deliveries(engine)} == {"delivered"}
    listed = patron(db_url, "list")
    [row] = [line for line in listed.stdout.splitlines() if rx.url in line]
    assert [c.strip() for c in row.split("│")[-4:-1]] == ["0", "2", "0"]  # pending delivered failed


def test_unknown_event_exits_non_zero_with_a_clear_message(db_url):
    out = patron(db_url, "add", "https://example.com/hook", "-e", "order.deleted")
    assert out.returncode != 0
    assert 'Unknown event "order.deleted"' in out.stderr
    assert "Traceback" not in out.stderr
    out = patron(db_url, "add", "mailto:x@example.com", "-e", "*")
    assert out.returncode != 0
    assert "http:// or https://" in out.stderr
