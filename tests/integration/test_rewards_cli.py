"""``patron rewards ...`` as an operator runs it, in a real process."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import update

from patron.db import UnitOfWork
from patron.rewards.tables import rewards_items
from tests.rewards_factories import redeem, setup_program

PATRON = Path(sys.executable).parent / "patron"


def patron(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATRON_DATABASE_URL": db_url, "PATRON_LANG": "en", "COLUMNS": "200"}
    return subprocess.run([str(PATRON), "rewards", *args], env=env, capture_output=True,  # noqa: S603
                          text=True, timeout=60, check=False)


def test_an_operator_adds_an_item_lists_it_expires_lapsed_holds_and_verifies_stock(
        db_url, engine, tmp_path):
    now = dt.datetime.now(dt.UTC)
    with UnitOfWork(engine) as uow:
        member = setup_program(uow, {"13800000001": 500},
                               at=now - dt.timedelta(days=2))["13800000001"]
    spec = tmp_path / "mug.json"
    spec.write_text(json.dumps({"code": "MUG", "name": "Bean mug", "points_price": 100,
                                "stock": 3, "hold_minutes": 5,
                                "valid_from": (now - dt.timedelta(days=1)).isoformat()}))
    out = patron(db_url, "add", "--program", "BB", str(spec))
    assert out.returncode == 0, out.stderr
    item = json.loads(out.stdout)
    assert (item["code"], item["available"]) == ("MUG", 3)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"code": "BAD", "name": "x", "points_price": 0}))
    assert patron(db_url, "add", "--program", "BB", str(bad)).returncode != 0
    with UnitOfWork(engine) as uow:
        redeem(uow, item["id"], member, "k1", now=now - dt.timedelta(minutes=10))
    listed = json.loads(patron(db_url, "items", "--program", "BB").stdout)
    assert [(i["code"], i["reserved"], i["available"]) for i in listed] == [("MUG", 1, 3)]
    out = patron(db_url, "expire")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"redemptions_expired": 1, "units_returned": 1}
    assert patron(db_url, "verify").returncode == 0
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(rewards_items).values(sold=1))
        uow.commit()
    broken = patron(db_url, "verify")
    assert broken.returncode == 1 and json.loads(broken.stdout)["differences"] == 1
