"""Reading a member's stored value: operations and entries, newest first, paginated."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from patron.loyalty.service import need
from patron.org.tables import stores
from patron.security.model import Actor
from patron.storedvalue.service import _member, op_out
from patron.storedvalue.tables import sv_accounts, sv_entries, sv_lots, sv_operations


def _account_id(conn: Connection, actor: Actor, member_id: int) -> int | None:
    _member(conn, actor, member_id, visible=True)
    return conn.execute(select(sv_accounts.c.id).where(sv_accounts.c.member_id == member_id)
                        ).scalar()


def _empty(page: int, page_size: int) -> dict[str, Any]:
    return {"items": [], "total": 0, "page": page, "page_size": page_size}


def operations(conn: Connection, *, actor: Actor, member_id: int, page: int = 1,
               page_size: int = 50) -> dict[str, Any]:
    """Top-ups, spends, holds, refunds, cash-backs and adjustments, newest first."""
    need(actor, "stored_value.read")
    account = _account_id(conn, actor, member_id)
    if account is None:
        return _empty(page, page_size)
    o = sv_operations.c
    total = conn.execute(select(func.count()).where(o.account_id == account)).scalar_one()
    rows = conn.execute(select(sv_operations).where(o.account_id == account)
                        .order_by(o.id.desc()).limit(page_size)
                        .offset((page - 1) * page_size)).mappings()
    items = []
    for r in rows:
        out = op_out(conn, dict(r))
        out.pop("balance")
        out.pop("replayed")
        items.append(out)
    return {"items": items, "total": int(total), "page": page, "page_size": page_size}


def entries(conn: Connection, *, actor: Actor, member_id: int, page: int = 1,
            page_size: int = 50) -> dict[str, Any]:
    """The ledger: each entry with its operation, lot, the lot's store of top-up and the store
    where the money was used."""
    need(actor, "stored_value.read")
    account = _account_id(conn, actor, member_id)
    if account is None:
        return _empty(page, page_size)
    e, lt = sv_entries.c, sv_lots.c
    codes = {int(i): c for i, c in conn.execute(select(stores.c.id, stores.c.code))}
    total = conn.execute(select(func.count()).where(e.account_id == account)).scalar_one()
    rows = conn.execute(
        select(sv_entries, lt.store_id.label("lot_store_id"))
        .select_from(sv_entries.join(sv_lots, lt.id == e.lot_id))
        .where(e.account_id == account).order_by(e.id.desc()).limit(page_size)
        .offset((page - 1) * page_size)).mappings()
    items = [{"id": int(r["id"]), "operation_id": int(r["operation_id"]), "kind": r["kind"],
              "bucket": r["bucket"], "amount": r["amount"], "lot_id": int(r["lot_id"]),
              "topped_up_at": codes.get(r["lot_store_id"] or 0),
              "store": codes.get(r["store_id"] or 0), "actor": r["actor"],
              "at": r["created_at"]} for r in rows]
    return {"items": items, "total": int(total), "page": page, "page_size": page_size}
