"""The ledger's append-only tables refuse UPDATE and DELETE in the database itself (triggers of
migration 0002), on SQLite and PostgreSQL; the tables whose rows legitimately change still do."""

import datetime as dt
import json

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from patron.db import UnitOfWork
from patron.loyalty import service
from patron.loyalty.jobs import run_due
from patron.loyalty.schemas import HoldIn, RedeemIn
from patron.loyalty.tables import (
    loyalty_consents,
    loyalty_entries,
    loyalty_lot_moves,
    loyalty_lots,
    loyalty_operations,
    loyalty_rule_versions,
    loyalty_tier_history,
)
from patron.loyalty.verify import verify
from patron.security.model import SYSTEM
from tests.factories import T0, make_org
from tests.loyalty_factories import buy, enrol, give_back, make_program

APPEND_ONLY = {
    "loyalty_entries": (loyalty_entries, "points", -1),
    "loyalty_lot_moves": (loyalty_lot_moves, "points", -1),
    "loyalty_tier_history": (loyalty_tier_history, "reason", "upgrade"),
    "loyalty_consents": (loyalty_consents, "granted", False),
    "loyalty_rule_versions": (loyalty_rule_versions, "note", "rewritten"),
}


@pytest.fixture
def ledger(uow):
    """A member with every kind of row: earnings, a redemption (lot moves), a hold committed,
    a partial return, tier history, consents, rule versions."""
    make_org(uow)
    make_program(uow)
    m = enrol(uow)
    buy(uow, "O1")
    buy(uow, "O2", at=T0 + dt.timedelta(hours=1))
    now = T0 + dt.timedelta(hours=2)
    service.redeem(uow=uow, actor=SYSTEM, member_id=m["id"], now=now,
                   body=RedeemIn(idempotency_key="r1", points=50, store="SH01"))
    h = service.hold(uow=uow, actor=SYSTEM, member_id=m["id"], now=now,
                     body=HoldIn(idempotency_key="h1", points=20, store="BJ01"))
    service.commit_hold(uow=uow, actor=SYSTEM, hold_id=h["id"], now=now)
    give_back(uow, "R1", "O2", at=T0 + dt.timedelta(hours=3), full=True)
    return m


@pytest.mark.parametrize("table", sorted(APPEND_ONLY))
def test_an_append_only_ledger_table_refuses_update_and_delete(engine, ledger, table):
    tbl, column, value = APPEND_ONLY[table]
    with UnitOfWork(engine) as u:
        count = u.c.execute(select(func.count()).select_from(tbl)).scalar_one()
    assert count > 0
    with UnitOfWork(engine) as u, pytest.raises(IntegrityError, match="append-only"):
        u.c.execute(update(tbl).values({column: value}))
    with UnitOfWork(engine) as u, pytest.raises(IntegrityError, match="append-only"):
        u.c.execute(delete(tbl))
    with UnitOfWork(engine) as u:
        assert u.c.execute(select(func.count()).select_from(tbl)).scalar_one() == count
        assert verify(u.c)["differences"] == []


def test_tables_with_running_figures_still_change_and_the_ledger_verifies(engine, ledger,
                                                                            db_url):
    # Lots keep running remaining points, holds change status: the daily job expiring
    # everything a year later writes to both, and the ledger still adds up.
    with UnitOfWork(engine) as u:
        stats = run_due(uow=u, actor=SYSTEM, now=T0 + dt.timedelta(days=400))
        assert stats["points_expired"] > 0
        assert u.c.execute(select(func.sum(loyalty_lots.c.remaining))).scalar_one() == 0
        assert u.c.execute(select(loyalty_operations.c.status).where(
            loyalty_operations.c.kind == "hold")).scalar_one() == "committed"
    from patron.cli import app

    result = CliRunner().invoke(app, ["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["differences"] == 0
