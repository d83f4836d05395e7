"""``patron stored-value verify``: recompute every account, lot and operation from the entries
and report each difference. Each check is a few grouped queries; the comparison runs over
aggregates (one row per account, lot or operation), never over entries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, case, func, select

from patron.storedvalue.model import fen
from patron.storedvalue.tables import sv_accounts, sv_entries, sv_lots, sv_operations

LIMIT = 1000  # differences reported per check
FIGURES = ("principal", "bonus", "principal_held", "bonus_held")


def _sums(group: Any, where: Any = None) -> Any:
    """Entries summed by ``group`` and bucket: {group value: {bucket: fen}}."""
    e = sv_entries.c
    cols = [func.coalesce(func.sum(case((e.bucket == b, e.amount), else_=0)), 0).label(b)
            for b in FIGURES]
    q = select(group, *cols).group_by(group)
    if where is not None:
        q = q.where(where)
    return q


def _rows(conn: Connection, q: Any) -> dict[int, dict[str, int]]:
    return {int(r[0]): {b: fen(r._mapping[b]) for b in FIGURES} for r in conn.execute(q)}


def _fig(row: Any, names: dict[str, str]) -> dict[str, int]:
    return {b: fen(row[col]) for b, col in names.items()}


def check_accounts(conn: Connection) -> list[dict[str, Any]]:
    """Each account's figures equal the sums of its entries by bucket."""
    sums = _rows(conn, _sums(sv_entries.c.account_id))
    out = []
    for r in conn.execute(select(sv_accounts).order_by(sv_accounts.c.id)).mappings():
        have = _fig(r, {b: b for b in FIGURES})
        want = sums.get(int(r["id"]), dict.fromkeys(FIGURES, 0))
        if have != want:
            out.append({"check": "account_figures", "account_id": int(r["id"]),
                        "stored": have, "entries": want})
    return out[:LIMIT]


def check_lots(conn: Connection) -> list[dict[str, Any]]:
    """Each lot's remaining and held money equal the sums of its entries; what it was given
    equals its top-up (or adjustment)."""
    sums = _rows(conn, _sums(sv_entries.c.lot_id))
    given = _rows(conn, _sums(sv_entries.c.operation_id,
                              sv_entries.c.kind.in_(("topup", "adjust"))))
    out = []
    names = {"principal": "principal_left", "bonus": "bonus_left",
             "principal_held": "principal_held", "bonus_held": "bonus_held"}
    for r in conn.execute(select(sv_lots).order_by(sv_lots.c.id)).mappings():
        have = _fig(r, names)
        want = sums.get(int(r["id"]), dict.fromkeys(FIGURES, 0))
        if have != want:
            out.append({"check": "lot_figures", "lot_id": int(r["id"]), "stored": have,
                        "entries": want})
        first = given.get(int(r["operation_id"]), {})
        # An adjustment's own lot got its positive entry; a top-up's both.
        if (fen(r["principal"]), fen(r["bonus"])) != (max(first.get("principal", 0), 0),
                                                        max(first.get("bonus", 0), 0)):
            out.append({"check": "lot_given", "lot_id": int(r["id"])})
    return out[:LIMIT]


def check_operations(conn: Connection) -> list[dict[str, Any]]:
    """Each top-up's entries are its principal and bonus; each spend (and committed hold) took
    its principal and bonus; each open hold holds them; each refund and cash-back moved its
    amounts, and its parent's refunded figures are the sum of its children."""
    e = sv_entries.c
    o = sv_operations.c
    moved = {}
    for r in conn.execute(select(e.operation_id, e.kind, e.bucket, func.sum(e.amount))
                          .group_by(e.operation_id, e.kind, e.bucket)):
        moved[(int(r[0]), r[1], r[2])] = fen(r[3])

    def m(op: int, kind: str, *buckets: str) -> int:
        return sum(moved.get((op, kind, b), 0) for b in buckets)

    children: dict[int, list[int]] = {}
    out = []
    for r in conn.execute(select(sv_operations).order_by(o.id)).mappings():
        op, kind = int(r["id"]), r["kind"]
        p, b = fen(r["principal"]), fen(r["bonus"])
        want: tuple[int, ...] = (p, b)
        if kind == "topup":
            got: tuple[int, ...] = (m(op, "topup", "principal"), m(op, "topup", "bonus"))
        elif kind == "spend":
            got = (-m(op, "spend", "principal"), -m(op, "spend", "bonus"))
        elif kind == "hold":
            # held, then exactly one of: still held, committed (spent), released or expired
            got = (m(op, "hold", "principal_held"), m(op, "hold", "bonus_held"),
                   -m(op, "spend", "principal_held"), -m(op, "spend", "bonus_held"),
                   -m(op, "release", "principal_held"), -m(op, "release", "bonus_held"))
            spent = (p, b) if r["status"] == "committed" else (0, 0)
            back = (p, b) if r["status"] in ("released", "expired") else (0, 0)
            want = (p, b, *spent, *back)
        elif kind == "refund":
            got = (m(op, "refund", "principal"), m(op, "refund", "bonus"))
        elif kind == "cashout":
            got = (-m(op, "cashout", "principal"), -m(op, "forfeit", "bonus"))
        elif kind == "expire":
            got = (0, -m(op, "expire", "bonus"))
        else:
            got = (m(op, "adjust", "principal"), m(op, "adjust", "bonus"))
        if got != want:
            out.append({"check": "operation_entries", "operation_id": op, "kind": kind,
                        "operation": want, "entries": got})
        if r["parent_id"] is not None and kind in ("refund", "cashout"):
            children.setdefault(int(r["parent_id"]), []).append(op)
    ops = {int(r["id"]): r for r in conn.execute(
        select(o.id, o.principal, o.bonus, o.refunded_principal, o.refunded_bonus)).mappings()}
    for op, r in ops.items():
        kids = children.get(op, [])
        want = (sum(fen(ops[k]["principal"]) for k in kids),
                sum(fen(ops[k]["bonus"]) for k in kids))
        if (fen(r["refunded_principal"]), fen(r["refunded_bonus"])) != want:
            out.append({"check": "refunded_figures", "operation_id": op,
                        "stored": (fen(r["refunded_principal"]), fen(r["refunded_bonus"])),
                        "children": want})
    held: dict[int, tuple[int, int]] = {}
    for r in conn.execute(select(o.account_id, func.sum(o.principal), func.sum(o.bonus))
                          .where(o.kind == "hold", o.status == "held").group_by(o.account_id)):
        held[int(r[0])] = (fen(r[1]), fen(r[2]))
    for r in conn.execute(select(sv_accounts.c.id, sv_accounts.c.principal_held,
                                 sv_accounts.c.bonus_held)):
        if (fen(r[1]), fen(r[2])) != held.get(int(r[0]), (0, 0)):
            out.append({"check": "open_holds", "account_id": int(r[0]),
                        "stored": (fen(r[1]), fen(r[2])), "holds": held.get(int(r[0]))})
    return out[:LIMIT]


def verify(conn: Connection) -> dict[str, Any]:
    checks = {"account_figures": check_accounts, "lot_figures": check_lots,
              "operations": check_operations}
    differences: list[dict[str, Any]] = []
    for check in checks.values():
        differences.extend(check(conn))
    accounts = conn.execute(select(func.count()).select_from(sv_accounts)).scalar_one()
    return {"checked": {"accounts": int(accounts)}, "checks": list(checks),
            "differences": differences}
