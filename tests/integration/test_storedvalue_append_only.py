"""Stored value's entries and bonus rule versions refuse UPDATE and DELETE in the database
itself (triggers of migration 0002), on SQLite and PostgreSQL; accounts, lots and operations,
whose figures legitimately change, still do."""

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from patron.db import UnitOfWork
from patron.storedvalue.tables import sv_bonus_rules, sv_entries
from patron.storedvalue.verify import verify
from tests.storedvalue_factories import refund, setup, spend, topup

APPEND_ONLY = {"sv_entries": (sv_entries, "amount", -1),
               "sv_bonus_rules": (sv_bonus_rules, "note", "rewritten")}


@pytest.mark.parametrize("table", sorted(APPEND_ONLY))
def test_stored_value_entries_and_rules_cannot_be_rewritten(engine, table):
    with UnitOfWork(engine) as uow:
        m = setup(uow)["member"]
        topup(uow, m, "500", "t1")
        s = spend(uow, m, "80", "s1")
        refund(uow, s["id"], "30", "r1")
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
