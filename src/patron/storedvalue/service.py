"""Stored value use cases: settings and bonus rules; top-ups, spends, two-phase holds, refunds to
the card, cash-backs of a top-up and adjustments.

Each write has two forms. ``spend_in(conn, ...)`` (and ``topup_in``, ``hold_in``,
``commit_hold_in``, ``release_hold_in``, ``refund_in``, ``balance``) works inside a transaction
someone else owns and never commits: the POS checkout composes it with the order, coupons and
points in one transaction. ``spend(uow=..., ...)`` owns the transaction: it runs the inner
function, commits, and runs it again from the start after a conflict with a concurrent writer.

Every write locks the member's account row first (PostgreSQL ``SELECT ... FOR UPDATE``; SQLite's
single writer under ``BEGIN IMMEDIATE``), then replays a known idempotency key, releases the
account's expired holds, and only then reads the lots and applies the rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, func, insert, select, text, update

from patron.customers.queries import visible_customer
from patron.db import UnitOfWork, UTCDateTime, upsert, utcnow
from patron.errors import Conflict, NotFound
from patron.loyalty.service import _program, _store_id, invalid, need, request_hash, retrying
from patron.loyalty.tables import loyalty_members, loyalty_programs
from patron.org.tables import channels, stores
from patron.security import audit
from patron.security.model import Actor
from patron.storedvalue.model import (
    InsufficientBalance,
    Lot,
    RefundTooLarge,
    bonus_expiry,
    bonus_for,
    cashout_forfeit,
    fen,
    give_back,
    plan_spend,
    refund_split,
    take_oldest_first,
    tiers_from_json,
    yuan,
)
from patron.storedvalue.schemas import (
    AdjustIn,
    BonusRulesIn,
    CashoutIn,
    HoldIn,
    RefundIn,
    SettingsIn,
    SpendIn,
    TopUpIn,
)
from patron.storedvalue.tables import (
    sv_accounts,
    sv_bonus_rules,
    sv_entries,
    sv_lots,
    sv_operations,
    sv_programs,
)

T = TypeVar("T")
BUCKETS = ("principal", "bonus", "principal_held", "bonus_held")
LOT_FIELD = {"principal": "principal_left", "bonus": "bonus_left",
             "principal_held": "principal_held", "bonus_held": "bonus_held"}


class HoldExpired(Conflict):
    """Committing a hold that expired: its release was written (and is committed by the
    service wrapper) before the refusal."""

    def __init__(self) -> None:
        super().__init__("stored_value_hold_expired")


# --- plumbing -----------------------------------------------------------------------------------

def _owned(uow: UnitOfWork, inner: Callable[[Connection], T]) -> T:
    """Run ``inner`` in the unit of work's transaction and commit; again from the start after a
    conflict with a concurrent writer. A hold found expired is released and committed, then
    refused."""

    def work() -> T:
        try:
            out = inner(uow.c)
        except HoldExpired:
            uow.commit()
            raise
        uow.commit()
        return out

    return retrying(uow, work)


def _settings(conn: Connection, program_id: int) -> dict[str, Any]:
    row = conn.execute(select(sv_programs).where(sv_programs.c.program_id == program_id)
                       ).mappings().first()
    if row is None:
        raise Conflict("stored_value_not_enabled")
    return dict(row)


def _member(conn: Connection, actor: Actor, member_id: int, *, visible: bool) -> dict[str, Any]:
    """The loyalty member row; ``visible``: a store-scoped actor must see the member's customer
    profile (bought or registered at one of its stores)."""
    row = conn.execute(select(loyalty_members).where(loyalty_members.c.id == member_id)
                       ).mappings().first()
    if row is None:
        raise NotFound("member_not_found")
    if visible and actor.store_ids is not None:
        try:
            visible_customer(conn, actor, int(row["customer_id"]))
        except NotFound as exc:
            raise NotFound("member_not_found") from exc
    return dict(row)


def _lock_account(conn: Connection, *, program_id: int, member_id: int, create: bool,
                  now: dt.datetime) -> dict[str, Any] | None:
    """The member's account row, locked (created first when asked)."""
    if create:
        stmt = upsert(conn, sv_accounts).values(program_id=program_id, member_id=member_id,
                                                opened_at=now, updated_at=now)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["member_id"]))
    q = select(sv_accounts).where(sv_accounts.c.member_id == member_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def _lock_account_by_id(conn: Connection, account_id: int) -> dict[str, Any]:
    q = select(sv_accounts).where(sv_accounts.c.id == account_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return dict(conn.execute(q).mappings().one())


def _lot(r: Any) -> Lot:
    return Lot(int(r["id"]), fen(r["principal_left"]), fen(r["bonus_left"]),
               fen(r["principal_held"]), fen(r["bonus_held"]), r["store_id"],
               r["bonus_expires_at"])


class Book:
    """The entries one transaction writes for one account, and the lots and account figures
    they move. ``post`` changes the in-memory lots at once (so a plan made after releasing
    expired holds sees the money back); ``flush`` writes everything."""

    def __init__(self, conn: Connection, *, account: dict[str, Any], actor: Actor,
                 now: dt.datetime) -> None:
        self.conn = conn
        self.account_id = int(account["id"])
        self.program_id = int(account["program_id"])
        self.actor = actor
        self.now = now
        self.rows: list[dict[str, Any]] = []
        self.lot_deltas: dict[int, dict[str, int]] = {}
        self.account_delta = dict.fromkeys(BUCKETS, 0)
        l_ = sv_lots.c
        self.lots: dict[int, Lot] = {int(r["id"]): _lot(r) for r in conn.execute(
            select(sv_lots).where(l_.account_id == self.account_id,
                                  (l_.principal_left + l_.bonus_left + l_.principal_held
                                   + l_.bonus_held) > 0)).mappings()}

    def ensure_lots(self, ids: set[int]) -> None:
        missing = sorted(ids - set(self.lots))
        if missing:
            for r in self.conn.execute(select(sv_lots).where(sv_lots.c.id.in_(missing))
                                       ).mappings():
                self.lots[int(r["id"])] = _lot(r)

    def open_lots(self) -> list[Lot]:
        return sorted(self.lots.values(), key=lambda lt: lt.id)

    def post(self, op_id: int, kind: str, bucket: str, lot_id: int, amount: int,
             store_id: int | None) -> None:
        if amount == 0:
            return
        self.rows.append({"program_id": self.program_id, "account_id": self.account_id,
                          "operation_id": op_id, "lot_id": lot_id, "kind": kind,
                          "bucket": bucket, "amount": yuan(amount), "store_id": store_id,
                          "actor": self.actor.name, "created_at": self.now})
        lot = self.lots[lot_id]
        setattr(lot, LOT_FIELD[bucket], getattr(lot, LOT_FIELD[bucket]) + amount)
        self.lot_deltas.setdefault(lot_id, dict.fromkeys(BUCKETS, 0))[bucket] += amount
        self.account_delta[bucket] += amount

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(insert(sv_entries), self.rows)
            self.rows = []
        if self.lot_deltas:
            self.conn.execute(text(
                "UPDATE sv_lots SET principal_left = principal_left + :principal, "
                "bonus_left = bonus_left + :bonus, principal_held = principal_held + "
                ":principal_held, bonus_held = bonus_held + :bonus_held WHERE id = :id"),
                [{"id": lot, **d} for lot, d in sorted(self.lot_deltas.items())])
            self.lot_deltas = {}
        if any(self.account_delta.values()):
            # The CHECK constraints refuse any figure that would go below zero.
            self.conn.execute(text(
                "UPDATE sv_accounts SET principal = principal + :principal, "
                "bonus = bonus + :bonus, principal_held = principal_held + :principal_held, "
                "bonus_held = bonus_held + :bonus_held, updated_at = :now WHERE id = :id"
            ).bindparams(bindparam("now", type_=UTCDateTime())),
                {"id": self.account_id, "now": self.now, **self.account_delta})
            self.account_delta = dict.fromkeys(BUCKETS, 0)


def _hold_parts(conn: Connection, hold_id: int) -> dict[int, tuple[int, int]]:
    """For a hold: {lot id: (principal, bonus)} it reserved."""
    e = sv_entries.c
    out: dict[int, list[int]] = {}
    for lot_id, bucket, amount in conn.execute(
            select(e.lot_id, e.bucket, e.amount).where(
                e.operation_id == hold_id, e.kind == "hold",
                e.bucket.in_(("principal_held", "bonus_held")))):
        parts = out.setdefault(int(lot_id), [0, 0])
        parts[0 if bucket == "principal_held" else 1] += fen(amount)
    return {lot: (p, b) for lot, (p, b) in out.items()}


def _release(book: Book, hold: dict[str, Any], kind: str = "release") -> None:
    parts = _hold_parts(book.conn, int(hold["id"]))
    book.ensure_lots(set(parts))
    for lot, (p, b) in sorted(parts.items()):
        book.post(int(hold["id"]), kind, "principal_held", lot, -p, hold["store_id"])
        book.post(int(hold["id"]), kind, "bonus_held", lot, -b, hold["store_id"])
        book.post(int(hold["id"]), kind, "principal", lot, p, hold["store_id"])
        book.post(int(hold["id"]), kind, "bonus", lot, b, hold["store_id"])


def _release_expired(book: Book, now: dt.datetime) -> list[int]:
    """Release the account's holds past their expiry (lazily, by whichever write comes first;
    ``run_due`` does it for every account). Returns their ids; the caller marks them with
    :func:`_mark_expired` once the book is flushed."""
    o = sv_operations.c
    holds = [dict(r) for r in book.conn.execute(
        select(sv_operations).where(o.account_id == book.account_id, o.status == "held",
                                    o.hold_expires_at <= now).order_by(o.id)).mappings()]
    for h in holds:
        _release(book, h)
    return [int(h["id"]) for h in holds]


def _expire_bonus(book: Book, now: dt.datetime) -> int:
    """Expire the bonus left on lots past their bonus expiry (lazily, by whichever write comes
    first; ``run_due`` does it for every account): one ``expire`` operation per lot, under a key
    no client can send. Bonus held by an open hold stays with the hold; bonus that comes back to
    an expired lot (a release, a refund) expires at the next pass. Returns the fen expired."""
    due = [lt for lt in book.open_lots() if lt.bonus_left > 0 and lt.bonus_expired(now)]
    if not due:
        return 0
    conn = book.conn
    origin = {int(i): int(op) for i, op in conn.execute(
        select(sv_lots.c.id, sv_lots.c.operation_id).where(
            sv_lots.c.id.in_([lt.id for lt in due])))}
    o = sv_operations.c
    total = 0
    for lot in due:
        before = conn.execute(select(func.count()).where(
            o.kind == "expire", o.parent_id == origin[lot.id])).scalar_one()
        amount = lot.bonus_left
        op_id = _insert_op(conn, program_id=book.program_id, account_id=book.account_id,
                           kind="expire", idempotency_key=f"~expire:{lot.id}:{before + 1}",
                           request_hash="-", amount=yuan(amount), principal=yuan(0),
                           bonus=yuan(amount), status="done", store_id=lot.store_id,
                           parent_id=origin[lot.id], actor=book.actor.name, created_at=now,
                           finished_at=now)
        book.post(op_id, "expire", "bonus", lot.id, -amount, lot.store_id)
        _audit(conn, book.actor, "bonus_expired", book.account_id, {
            "operation_id": op_id, "lot_id": lot.id, "bonus": yuan(amount),
            "expired_at": lot.bonus_expires_at.isoformat() if lot.bonus_expires_at else None})
        total += amount
    return total


def _catch_up(book: Book, now: dt.datetime) -> list[int]:
    """Bring the card up to ``now`` before any rule applies: expired holds released, then bonus
    past its expiry expired. Returns the released holds' ids (see :func:`_mark_expired`)."""
    expired = _release_expired(book, now)
    _expire_bonus(book, now)
    return expired


def _mark_expired(conn: Connection, hold_ids: list[int], now: dt.datetime) -> None:
    if hold_ids:
        conn.execute(update(sv_operations).where(sv_operations.c.id.in_(hold_ids),
                                                 sv_operations.c.status == "held")
                     .values(status="expired", finished_at=now))


def _add_refunded(conn: Connection, op_id: int, principal: int, bonus: int) -> None:
    """The CHECK on sv_operations refuses a total beyond what the spend used."""
    conn.execute(text("UPDATE sv_operations SET refunded_principal = refunded_principal + :p, "
                      "refunded_bonus = refunded_bonus + :b WHERE id = :id"),
                 {"p": principal, "b": bonus, "id": op_id})


def _prior(conn: Connection, program_id: int, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(sv_operations).where(
        sv_operations.c.program_id == program_id,
        sv_operations.c.idempotency_key == key)).mappings().first()
    return dict(row) if row else None


def _replay(conn: Connection, prior: dict[str, Any], digest: str) -> dict[str, Any]:
    if prior["request_hash"] != digest:
        raise Conflict("idempotency_key_reused")
    return op_out(conn, prior, replay=True)


def _insert_op(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(sv_operations).values(**values)
                            .returning(sv_operations.c.id)).scalar_one())


def _get_op(conn: Connection, op_id: int) -> dict[str, Any]:
    return dict(conn.execute(select(sv_operations).where(sv_operations.c.id == op_id)
                             ).mappings().one())


def account_out(account: dict[str, Any] | None) -> dict[str, Any]:
    if account is None:
        zero = yuan(0)
        return {"principal": zero, "bonus": zero, "principal_held": zero, "bonus_held": zero,
                "spendable": zero}
    return {"principal": account["principal"], "bonus": account["bonus"],
            "principal_held": account["principal_held"], "bonus_held": account["bonus_held"],
            "spendable": account["principal"] + account["bonus"]}


def op_out(conn: Connection, op: dict[str, Any], *, replay: bool = False) -> dict[str, Any]:
    account = dict(conn.execute(select(sv_accounts).where(sv_accounts.c.id == op["account_id"])
                                ).mappings().one())
    store = None
    if op["store_id"] is not None:
        store = conn.execute(select(stores.c.code).where(stores.c.id == op["store_id"])).scalar()
    return {"id": int(op["id"]), "kind": op["kind"], "member_id": int(account["member_id"]),
            "amount": op["amount"], "principal": op["principal"], "bonus": op["bonus"],
            "refunded_principal": op["refunded_principal"],
            "refunded_bonus": op["refunded_bonus"], "status": op["status"],
            "hold_expires_at": op["hold_expires_at"], "store": store, "channel": op["channel"],
            "parent_id": op["parent_id"], "reference": op["reference"], "reason": op["reason"],
            "rule_version_id": op["rule_version_id"], "created_at": op["created_at"],
            "finished_at": op["finished_at"], "replayed": replay,
            "balance": account_out(account)}


def _audit(conn: Connection, actor: Actor, action: str, account_id: int,
           details: dict[str, Any]) -> None:
    audit.record(conn, actor, f"stored_value.{action}", entity="sv_account",
                 entity_id=account_id, details={k: (str(v) if hasattr(v, "quantize") else v)
                                                for k, v in details.items()})


# --- settings and bonus rules -------------------------------------------------------------------

def rule_in_force(conn: Connection, program_id: int, at: dt.datetime) -> dict[str, Any] | None:
    r = sv_bonus_rules.c
    row = conn.execute(select(sv_bonus_rules).where(r.program_id == program_id,
                                                    r.effective_from <= at)
                       .order_by(r.effective_from.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def program_out(conn: Connection, program: dict[str, Any], now: dt.datetime | None = None
                ) -> dict[str, Any]:
    row = conn.execute(select(sv_programs).where(sv_programs.c.program_id == program["id"])
                       ).mappings().first()
    current = rule_in_force(conn, int(program["id"]), now or utcnow())
    return {"program": program["code"], "enabled": row is not None,
            "spend_order": row["spend_order"] if row else None,
            "hold_minutes": row["hold_minutes"] if row else None,
            "bonus_expiry_months": row["bonus_expiry_months"] if row else None,
            "bonus_rules_in_force": None if current is None else {
                "version": current["version"], "effective_from": current["effective_from"],
                "tiers": current["tiers"]}}


def get_program(conn: Connection, *, actor: Actor, code: str) -> dict[str, Any]:
    need(actor, "stored_value.lookup")
    return program_out(conn, _program(conn, code))


def configure(*, uow: UnitOfWork, actor: Actor, code: str, body: SettingsIn,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """Offer stored value in a program, or change its spending order or hold time (from now
    on: spends already made keep the split they recorded)."""
    need(actor, "stored_value.manage")

    def inner(conn: Connection) -> dict[str, Any]:
        at = now or utcnow()
        program = _program(conn, code)
        values = body.model_dump()
        stmt = upsert(conn, sv_programs).values(program_id=program["id"], created_at=at,
                                                updated_at=at, updated_by=actor.name, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["program_id"], set_={
            **values, "updated_at": at, "updated_by": actor.name}))
        audit.record(conn, actor, "stored_value.configured", entity="loyalty_program",
                     entity_id=program["id"], details={"code": code, **values})
        return program_out(conn, program, at)

    return _owned(uow, inner)


def add_bonus_rules(*, uow: UnitOfWork, actor: Actor, code: str, body: BonusRulesIn,
                    now: dt.datetime | None = None) -> dict[str, Any]:
    """A new version of the bonus tiers from ``effective_from`` (now by default, never in the
    past: top-ups already made earned by the rules then in force)."""
    need(actor, "stored_value.manage")

    def inner(conn: Connection) -> dict[str, Any]:
        at = now or utcnow()
        program = _program(conn, code)
        _settings(conn, int(program["id"]))
        effective = body.effective_from or at
        if effective.tzinfo is None:
            raise invalid("effective_from", "timezone_required")
        if effective < at - dt.timedelta(minutes=1):  # a minute's grace for the caller's clock
            raise invalid("effective_from", "bonus_rules_in_past")
        r = sv_bonus_rules.c
        if conn.execute(select(r.id).where(r.program_id == program["id"],
                                           r.effective_from == effective)).first():
            raise invalid("effective_from", "rule_version_same_time")
        last = conn.execute(select(func.max(r.version)).where(r.program_id == program["id"])
                            ).scalar() or 0
        tiers = [{"min": str(t.min), "bonus": str(t.bonus)}
                 for t in sorted(body.tiers, key=lambda t: t.min)]
        rule_id = int(conn.execute(insert(sv_bonus_rules).values(
            program_id=program["id"], version=int(last) + 1, effective_from=effective,
            tiers=tiers, note=body.note, created_at=at, created_by=actor.name,
        ).returning(r.id)).scalar_one())
        audit.record(conn, actor, "stored_value.bonus_rules_versioned",
                     entity="loyalty_program", entity_id=program["id"],
                     details={"code": code, "version": int(last) + 1, "tiers": tiers,
                              "effective_from": effective.isoformat()})
        return {"id": rule_id, "version": int(last) + 1, "effective_from": effective,
                "tiers": tiers, "note": body.note}

    return _owned(uow, inner)


def list_bonus_rules(conn: Connection, *, actor: Actor, code: str) -> list[dict[str, Any]]:
    need(actor, "stored_value.lookup")
    program = _program(conn, code)
    r = sv_bonus_rules.c
    return [dict(row) for row in conn.execute(
        select(r.id, r.version, r.effective_from, r.tiers, r.note, r.created_at, r.created_by)
        .where(r.program_id == program["id"]).order_by(r.version)).mappings()]


# --- reading ------------------------------------------------------------------------------------

def balance(conn: Connection, *, actor: Actor, member_id: int,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """The member's principal, bonus and held money, what can be spent now, and what is left
    of each top-up with its bonus expiry date. Holds past their expiry count as spendable and
    bonus past its expiry as gone, even before a write records it."""
    need(actor, "stored_value.lookup")
    at = now or utcnow()
    member = _member(conn, actor, member_id, visible=False)
    account = conn.execute(select(sv_accounts).where(sv_accounts.c.member_id == member_id)
                           ).mappings().first()
    out = account_out(dict(account) if account else None)
    if account is not None:
        o, lt = sv_operations.c, sv_lots.c
        p, b = conn.execute(select(func.coalesce(func.sum(o.principal), 0),
                                   func.coalesce(func.sum(o.bonus), 0))
                            .where(o.account_id == account["id"], o.status == "held",
                                   o.hold_expires_at <= at)).one()
        gone = conn.execute(select(func.coalesce(func.sum(lt.bonus_left), 0)).where(
            lt.account_id == account["id"], lt.bonus_left > 0, lt.bonus_expires_at <= at)
        ).scalar_one()
        p, b, gone = fen(p), fen(b), fen(gone)
        if p or b or gone:
            out = {"principal": out["principal"] + yuan(p),
                   "bonus": out["bonus"] + yuan(b) - yuan(gone),
                   "principal_held": out["principal_held"] - yuan(p),
                   "bonus_held": out["bonus_held"] - yuan(b)}
            out["spendable"] = out["principal"] + out["bonus"]
    program = conn.execute(select(loyalty_programs.c.code).where(
        loyalty_programs.c.id == member["program_id"])).scalar()
    lots = []
    if account is not None:
        lt = sv_lots.c
        codes = {int(i): c for i, c in conn.execute(select(stores.c.id, stores.c.code))}
        for r in conn.execute(select(sv_lots).where(
                lt.account_id == account["id"],
                (lt.principal_left + lt.bonus_left + lt.principal_held + lt.bonus_held) > 0)
                .order_by(lt.id)).mappings():
            gone = r["bonus_expires_at"] is not None and r["bonus_expires_at"] <= at
            lots.append({"id": int(r["id"]), "topped_up_at": codes.get(r["store_id"] or 0),
                         "created_at": r["created_at"], "principal": r["principal_left"],
                         "bonus": yuan(0) if gone else r["bonus_left"],
                         "held": r["principal_held"] + r["bonus_held"],
                         "bonus_expires_at": r["bonus_expires_at"]})
    return {"member_id": member_id, "program": program,
            "account_id": int(account["id"]) if account else None, **out, "lots": lots}


# --- writing: inner functions (the caller owns the transaction) ---------------------------------

def _begin(conn: Connection, actor: Actor, *, member_id: int, visible: bool, kind: str,
           key: str, payload: dict[str, Any], store: str | None, create: bool,
           now: dt.datetime, store_required: bool = True,
           ) -> tuple[dict[str, Any], dict[str, Any], int | None, str, dict[str, Any] | None,
                      dict[str, Any] | None]:
    """What every member operation starts with: the member (scope), the program's settings,
    the store, the locked account, and a replay of a known key. Returns (member, settings,
    store id, request hash, account, replayed result)."""
    member = _member(conn, actor, member_id, visible=visible)
    program_id = int(member["program_id"])
    settings = _settings(conn, program_id)
    store_id = _store_id(conn, actor, store, required_when_scoped=store_required)
    digest = request_hash({"kind": kind, "member": member_id, **payload})
    account = _lock_account(conn, program_id=program_id, member_id=member_id, create=create,
                            now=now)
    prior = _prior(conn, program_id, key)
    if prior is not None:
        return member, settings, store_id, digest, account, _replay(conn, prior, digest)
    return member, settings, store_id, digest, account, None


def topup_in(conn: Connection, *, actor: Actor, member_id: int, body: TopUpIn,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """Put money on the member's card at a store (or through a channel): the principal paid and
    the bonus of the rules in force now, as one new lot."""
    need(actor, "stored_value.topup")
    at = now or utcnow()
    if body.store is None and body.channel is None:
        raise invalid("store", "store_or_channel_required")
    payload = {"amount": str(body.amount), "store": body.store, "channel": body.channel,
               "reference": body.reference}
    member, settings, store_id, digest, account, replay = _begin(
        conn, actor, member_id=member_id, visible=False, kind="topup",
        key=body.idempotency_key, payload=payload, store=body.store, create=True, now=at)
    if replay is not None:
        return replay
    assert account is not None
    if body.channel is not None and conn.execute(
            select(channels.c.id).where(channels.c.code == body.channel)).first() is None:
        raise invalid("channel", "unknown_channel", value=body.channel)
    program = conn.execute(select(loyalty_programs).where(
        loyalty_programs.c.id == member["program_id"])).mappings().one()
    if program["status"] != "active":
        raise Conflict("program_closed", params={"code": program["code"]})
    if member["status"] != "active":
        raise Conflict("member_closed")
    amount = fen(body.amount)
    rule = rule_in_force(conn, int(program["id"]), at)
    bonus = bonus_for(tiers_from_json(rule["tiers"]), amount) if rule else 0
    book = Book(conn, account=account, actor=actor, now=at)
    expired = _catch_up(book, at)
    op_id = _insert_op(conn, program_id=program["id"], account_id=account["id"], kind="topup",
                       idempotency_key=body.idempotency_key, request_hash=digest,
                       amount=yuan(amount), principal=yuan(amount), bonus=yuan(bonus),
                       status="done", store_id=store_id, channel=body.channel,
                       rule_version_id=rule["id"] if rule else None, reference=body.reference,
                       actor=actor.name, created_at=at, finished_at=at)
    expires = bonus_expiry(at, settings["bonus_expiry_months"], program["timezone"]) if (
        bonus) else None
    lot_id = int(conn.execute(insert(sv_lots).values(
        program_id=program["id"], account_id=account["id"], operation_id=op_id,
        store_id=store_id, channel=body.channel, principal=yuan(amount), bonus=yuan(bonus),
        principal_left=yuan(0), bonus_left=yuan(0), created_at=at, bonus_expires_at=expires,
    ).returning(sv_lots.c.id)).scalar_one())
    book.lots[lot_id] = Lot(lot_id, 0, 0, store_id=store_id, bonus_expires_at=expires)
    book.post(op_id, "topup", "principal", lot_id, amount, store_id)
    book.post(op_id, "topup", "bonus", lot_id, bonus, store_id)
    book.flush()
    _mark_expired(conn, expired, at)
    _audit(conn, actor, "topup", int(account["id"]), {
        "operation_id": op_id, "member_id": member_id, "amount": yuan(amount),
        "bonus": yuan(bonus), "key": body.idempotency_key, "store": body.store,
        "channel": body.channel, "rule_version": rule["version"] if rule else None})
    return op_out(conn, _get_op(conn, op_id))


def _spend_like(conn: Connection, *, actor: Actor, member_id: int, body: SpendIn,
                kind: str, now: dt.datetime | None) -> dict[str, Any]:
    need(actor, "stored_value.spend")
    at = now or utcnow()
    payload: dict[str, Any] = {"amount": str(body.amount), "store": body.store,
                               "reference": body.reference}
    minutes = getattr(body, "minutes", None)
    if kind == "hold":
        payload["minutes"] = minutes
    _member_row, settings, store_id, digest, account, replay = _begin(
        conn, actor, member_id=member_id, visible=False, kind=kind, key=body.idempotency_key,
        payload=payload, store=body.store, create=False, now=at)
    if replay is not None:
        return replay
    amount = fen(body.amount)
    if account is None:
        raise Conflict("insufficient_balance", params={"wanted": body.amount,
                                                       "available": yuan(0)})
    book = Book(conn, account=account, actor=actor, now=at)
    expired = _catch_up(book, at)
    try:
        p, b, per_lot = plan_spend(book.open_lots(), settings["spend_order"], amount)
    except InsufficientBalance as exc:
        raise Conflict("insufficient_balance", params={
            "wanted": yuan(exc.wanted), "available": yuan(exc.available)}) from exc
    extra: dict[str, Any] = {"status": "done", "finished_at": at}
    if kind == "hold":
        extra = {"status": "held", "finished_at": None, "hold_expires_at": at + dt.timedelta(
            minutes=minutes or int(settings["hold_minutes"]))}
    op_id = _insert_op(conn, program_id=account["program_id"], account_id=account["id"],
                       kind=kind, idempotency_key=body.idempotency_key, request_hash=digest,
                       amount=yuan(amount), principal=yuan(p), bonus=yuan(b),
                       store_id=store_id, reference=body.reference, actor=actor.name,
                       created_at=at, **extra)
    for lot, (lp, lb) in per_lot.items():
        if kind == "spend":
            book.post(op_id, "spend", "principal", lot, -lp, store_id)
            book.post(op_id, "spend", "bonus", lot, -lb, store_id)
        else:
            book.post(op_id, "hold", "principal", lot, -lp, store_id)
            book.post(op_id, "hold", "bonus", lot, -lb, store_id)
            book.post(op_id, "hold", "principal_held", lot, lp, store_id)
            book.post(op_id, "hold", "bonus_held", lot, lb, store_id)
    book.flush()
    _mark_expired(conn, expired, at)
    _audit(conn, actor, kind, int(account["id"]), {
        "operation_id": op_id, "member_id": member_id, "amount": yuan(amount),
        "principal": yuan(p), "bonus": yuan(b), "key": body.idempotency_key,
        "store": body.store, "reference": body.reference})
    return op_out(conn, _get_op(conn, op_id))


def spend_in(conn: Connection, *, actor: Actor, member_id: int, body: SpendIn,
             now: dt.datetime | None = None) -> dict[str, Any]:
    """Pay with the card now: principal and bonus split by the program's spending order, taken
    from the oldest top-ups first. Not enough money is a 409 and writes nothing."""
    return _spend_like(conn, actor=actor, member_id=member_id, body=body, kind="spend", now=now)


def hold_in(conn: Connection, *, actor: Actor, member_id: int, body: HoldIn,
            now: dt.datetime | None = None) -> dict[str, Any]:
    """Reserve money for a payment in steps; commit or release it, or it expires by itself after
    the program's hold time (or ``minutes``)."""
    return _spend_like(conn, actor=actor, member_id=member_id, body=body, kind="hold", now=now)


def _finish_hold(conn: Connection, *, actor: Actor, hold_id: int, action: str,
                 now: dt.datetime | None) -> dict[str, Any]:
    need(actor, "stored_value.spend")
    at = now or utcnow()
    o = sv_operations.c
    first = conn.execute(select(o.account_id, o.store_id, o.kind).where(o.id == hold_id)).first()
    if first is None or first.kind != "hold" or (
            actor.store_ids is not None and first.store_id not in actor.store_ids):
        raise NotFound("hold_not_found")
    account = _lock_account_by_id(conn, int(first.account_id))
    op = _get_op(conn, hold_id)
    done = {"commit": "committed", "release": "released"}[action]
    if op["status"] == done or (action == "release" and op["status"] == "expired"):
        return op_out(conn, op, replay=True)
    if op["status"] != "held":
        raise Conflict("hold_not_open", params={"status": op["status"]})
    book = Book(conn, account=account, actor=actor, now=at)
    expired = _catch_up(book, at)
    if hold_id in expired:
        book.flush()
        _mark_expired(conn, expired, at)
        _audit(conn, actor, "hold_expired", int(account["id"]), {"operation_id": hold_id})
        if action == "commit":
            raise HoldExpired()
        return op_out(conn, _get_op(conn, hold_id), replay=True)
    if action == "commit":
        parts = _hold_parts(conn, hold_id)
        book.ensure_lots(set(parts))
        for lot, (p, b) in sorted(parts.items()):
            book.post(hold_id, "spend", "principal_held", lot, -p, op["store_id"])
            book.post(hold_id, "spend", "bonus_held", lot, -b, op["store_id"])
    else:
        _release(book, op)
        _expire_bonus(book, at)  # bonus back in a lot past its expiry expires at once
    book.flush()
    _mark_expired(conn, expired, at)
    conn.execute(update(sv_operations).where(o.id == hold_id).values(status=done,
                                                                     finished_at=at))
    _audit(conn, actor, f"hold_{done}", int(account["id"]), {
        "operation_id": hold_id, "amount": op["amount"]})
    return op_out(conn, _get_op(conn, hold_id))


def commit_hold_in(conn: Connection, *, actor: Actor, hold_id: int,
                   now: dt.datetime | None = None) -> dict[str, Any]:
    """Turn a hold into a spend. Committing again returns the same result; a released hold is a
    409 ``hold_not_open``, an expired one a 409 ``hold_expired`` (after its release)."""
    return _finish_hold(conn, actor=actor, hold_id=hold_id, action="commit", now=now)


def release_hold_in(conn: Connection, *, actor: Actor, hold_id: int,
                    now: dt.datetime | None = None) -> dict[str, Any]:
    """Give held money back to its lots. Releasing again, or an expired hold, returns the hold
    as it is; a committed hold is a 409."""
    return _finish_hold(conn, actor=actor, hold_id=hold_id, action="release", now=now)


def _parent(conn: Connection, op_id: int, kinds: tuple[str, ...], missing: str
            ) -> dict[str, Any]:
    row = conn.execute(select(sv_operations).where(sv_operations.c.id == op_id)
                       ).mappings().first()
    if row is None or row["kind"] not in kinds:
        raise NotFound(missing)
    return dict(row)


def _lot_amounts(conn: Connection, op_ids: list[int], kinds: tuple[str, ...]
                 ) -> tuple[dict[int, int], dict[int, int]]:
    """Principal and bonus per lot moved by these operations' entries of these kinds, as
    positive fen (held buckets count with their money)."""
    if not op_ids:
        return {}, {}
    e = sv_entries.c
    principal: dict[int, int] = {}
    bonus: dict[int, int] = {}
    for lot_id, bucket, amount in conn.execute(
            select(e.lot_id, e.bucket, func.sum(e.amount)).where(
                e.operation_id.in_(op_ids), e.kind.in_(kinds))
            .group_by(e.lot_id, e.bucket)):
        target = principal if bucket in ("principal", "principal_held") else bonus
        target[int(lot_id)] = target.get(int(lot_id), 0) + abs(fen(amount))
    return principal, bonus


def refund_in(conn: Connection, *, actor: Actor, spend_id: int, body: RefundIn,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """Give (part of) a spend back to the card, in the proportions of principal and bonus the
    spend used (cumulatively over its refunds, rounded half up to the fen on the bonus, the last
    refund exact), to the lots it took them from. Never more than the spend used; the same key
    again returns the first result."""
    need(actor, "stored_value.spend")
    at = now or utcnow()
    parent = _parent(conn, spend_id, ("spend", "hold"), "spend_not_found")
    if actor.store_ids is not None and parent["store_id"] not in actor.store_ids:
        raise NotFound("spend_not_found")
    store_id = _store_id(conn, actor, body.store, required_when_scoped=False)
    account = _lock_account_by_id(conn, int(parent["account_id"]))
    digest = request_hash({"kind": "refund", "spend": spend_id, "amount": str(body.amount),
                           "store": body.store, "reference": body.reference})
    prior = _prior(conn, int(account["program_id"]), body.idempotency_key)
    if prior is not None:
        return _replay(conn, prior, digest)
    parent = _get_op(conn, spend_id)  # read again under the lock
    if parent["kind"] == "hold" and parent["status"] != "committed":
        raise Conflict("hold_not_committed", params={"status": parent["status"]})
    amount = fen(body.amount)
    try:
        p, b = refund_split(fen(parent["principal"]), fen(parent["bonus"]),
                            fen(parent["refunded_principal"]), fen(parent["refunded_bonus"]),
                            amount)
    except RefundTooLarge as exc:
        raise Conflict("refund_exceeds_spend", params={
            "wanted": yuan(exc.wanted), "refundable": yuan(exc.refundable)}) from exc
    used_p, used_b = _lot_amounts(conn, [spend_id], ("spend",))
    children = [int(i) for i in conn.execute(select(sv_operations.c.id).where(
        sv_operations.c.parent_id == spend_id, sv_operations.c.kind == "refund")).scalars()]
    back_p, back_b = _lot_amounts(conn, children, ("refund",))
    to_p, to_b = give_back(used_p, back_p, p), give_back(used_b, back_b, b)
    book = Book(conn, account=account, actor=actor, now=at)
    expired = _catch_up(book, at)
    book.ensure_lots(set(to_p) | set(to_b))
    op_id = _insert_op(conn, program_id=account["program_id"], account_id=account["id"],
                       kind="refund", idempotency_key=body.idempotency_key, request_hash=digest,
                       amount=yuan(amount), principal=yuan(p), bonus=yuan(b), status="done",
                       store_id=store_id, parent_id=spend_id, reference=body.reference,
                       actor=actor.name, created_at=at, finished_at=at)
    for lot in sorted(set(to_p) | set(to_b)):
        # Settlement nets a refund against the spend: it happened where the spend did.
        book.post(op_id, "refund", "principal", lot, to_p.get(lot, 0), parent["store_id"])
        book.post(op_id, "refund", "bonus", lot, to_b.get(lot, 0), parent["store_id"])
    _expire_bonus(book, at)  # bonus given back to a lot past its expiry expires at once
    book.flush()
    _mark_expired(conn, expired, at)
    _add_refunded(conn, spend_id, p, b)
    _audit(conn, actor, "refund", int(account["id"]), {
        "operation_id": op_id, "spend_id": spend_id, "amount": yuan(amount),
        "principal": yuan(p), "bonus": yuan(b), "key": body.idempotency_key,
        "store": body.store})
    return op_out(conn, _get_op(conn, op_id))


def cashout_in(conn: Connection, *, actor: Actor, topup_id: int, body: CashoutIn,
               now: dt.datetime | None = None) -> dict[str, Any]:
    """Pay back unused principal of a top-up in cash (all of it by default). The top-up's bonus
    is forfeited in proportion to the principal paid back, as far as it is still on the card.
    Needs ``stored_value.cashout``; audited with its reason."""
    need(actor, "stored_value.cashout")
    at = now or utcnow()
    parent = _parent(conn, topup_id, ("topup",), "topup_not_found")
    account_row = conn.execute(select(sv_accounts).where(
        sv_accounts.c.id == parent["account_id"])).mappings().one()
    _member(conn, actor, int(account_row["member_id"]), visible=True)
    store_id = _store_id(conn, actor, body.store)
    account = _lock_account_by_id(conn, int(parent["account_id"]))
    digest = request_hash({"kind": "cashout", "topup": topup_id,
                           "amount": None if body.amount is None else str(body.amount),
                           "reason": body.reason, "store": body.store})
    prior = _prior(conn, int(account["program_id"]), body.idempotency_key)
    if prior is not None:
        return _replay(conn, prior, digest)
    parent = _get_op(conn, topup_id)
    book = Book(conn, account=account, actor=actor, now=at)
    expired = _catch_up(book, at)
    lot_row = conn.execute(select(sv_lots).where(sv_lots.c.operation_id == topup_id)
                           ).mappings().one()
    book.ensure_lots({int(lot_row["id"])})
    lot = book.lots[int(lot_row["id"])]
    amount = lot.principal_left if body.amount is None else fen(body.amount)
    if amount == 0:
        raise Conflict("nothing_to_cash_out")
    if amount > lot.principal_left:
        raise Conflict("cashout_exceeds_unused", params={
            "wanted": yuan(amount), "unused": yuan(lot.principal_left)})
    forfeit = cashout_forfeit(fen(lot_row["principal"]), fen(lot_row["bonus"]),
                              fen(parent["refunded_principal"]), fen(parent["refunded_bonus"]),
                              lot.bonus_left, amount)
    op_id = _insert_op(conn, program_id=account["program_id"], account_id=account["id"],
                       kind="cashout", idempotency_key=body.idempotency_key, request_hash=digest,
                       amount=yuan(amount), principal=yuan(amount), bonus=yuan(forfeit),
                       status="done", store_id=store_id, parent_id=topup_id, reason=body.reason,
                       actor=actor.name, created_at=at, finished_at=at)
    book.post(op_id, "cashout", "principal", lot.id, -amount, store_id)
    book.post(op_id, "forfeit", "bonus", lot.id, -forfeit, store_id)
    book.flush()
    _mark_expired(conn, expired, at)
    _add_refunded(conn, topup_id, amount, forfeit)
    _audit(conn, actor, "cashout", int(account["id"]), {
        "operation_id": op_id, "topup_id": topup_id, "principal": yuan(amount),
        "bonus_forfeited": yuan(forfeit), "reason": body.reason, "key": body.idempotency_key,
        "store": body.store})
    return op_out(conn, _get_op(conn, op_id))


def adjust_in(conn: Connection, *, actor: Actor, member_id: int, body: AdjustIn,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """A manual correction of principal or bonus with a reason: money added forms a new lot (of
    the store named, if any); money taken comes from the oldest lots and never exceeds what the
    card holds. Needs ``stored_value.adjust``; audited with the reason."""
    need(actor, "stored_value.adjust")
    at = now or utcnow()
    payload = {"bucket": body.bucket, "amount": str(body.amount), "reason": body.reason,
               "store": body.store}
    member, settings, store_id, digest, account, replay = _begin(
        conn, actor, member_id=member_id, visible=True, kind="adjust",
        key=body.idempotency_key, payload=payload, store=body.store, create=body.amount > 0,
        now=at, store_required=False)
    if replay is not None:
        return replay
    amount = fen(body.amount)
    if account is None:
        raise Conflict("insufficient_balance", params={"wanted": -body.amount,
                                                       "available": yuan(0)})
    book = Book(conn, account=account, actor=actor, now=at)
    expired = _catch_up(book, at)
    taken: dict[int, int] = {}
    if amount < 0:
        try:
            taken = take_oldest_first(book.open_lots(), f"{body.bucket}_left", -amount)
        except InsufficientBalance as exc:
            raise Conflict("insufficient_balance", params={
                "wanted": yuan(exc.wanted), "available": yuan(exc.available)}) from exc
    split = {"principal": yuan(amount), "bonus": yuan(0)} if body.bucket == "principal" else {
        "principal": yuan(0), "bonus": yuan(amount)}
    op_id = _insert_op(conn, program_id=account["program_id"], account_id=account["id"],
                       kind="adjust", idempotency_key=body.idempotency_key, request_hash=digest,
                       amount=yuan(amount), status="done", store_id=store_id,
                       reason=body.reason, actor=actor.name, created_at=at, finished_at=at,
                       **split)
    if amount > 0:
        tz = conn.execute(select(loyalty_programs.c.timezone).where(
            loyalty_programs.c.id == member["program_id"])).scalar_one()
        expires = bonus_expiry(at, settings["bonus_expiry_months"], tz) if (
            body.bucket == "bonus") else None
        lot_id = int(conn.execute(insert(sv_lots).values(
            program_id=account["program_id"], account_id=account["id"], operation_id=op_id,
            store_id=store_id, principal=split["principal"], bonus=split["bonus"],
            principal_left=yuan(0), bonus_left=yuan(0), created_at=at,
            bonus_expires_at=expires,
        ).returning(sv_lots.c.id)).scalar_one())
        book.lots[lot_id] = Lot(lot_id, 0, 0, store_id=store_id, bonus_expires_at=expires)
        book.post(op_id, "adjust", body.bucket, lot_id, amount, store_id)
    for lot, n in taken.items():
        book.post(op_id, "adjust", body.bucket, lot, -n, store_id)
    book.flush()
    _mark_expired(conn, expired, at)
    _audit(conn, actor, "adjust", int(account["id"]), {
        "operation_id": op_id, "member_id": member_id, "bucket": body.bucket,
        "amount": yuan(amount), "reason": body.reason, "key": body.idempotency_key})
    return op_out(conn, _get_op(conn, op_id))


def catch_up_in(conn: Connection, *, actor: Actor, account_id: int,
                now: dt.datetime) -> tuple[int, int]:
    """Release one account's expired holds and expire its bonus past its date; returns (holds
    released, fen of bonus expired)."""
    account = _lock_account_by_id(conn, account_id)
    book = Book(conn, account=account, actor=actor, now=now)
    expired = _release_expired(book, now)
    bonus = _expire_bonus(book, now)
    book.flush()
    _mark_expired(conn, expired, now)
    for hold_id in expired:
        _audit(conn, actor, "hold_expired", account_id, {"operation_id": hold_id})
    return len(expired), bonus


# --- writing: service wrappers (own the transaction) ---------------------------------------------

def topup(*, uow: UnitOfWork, actor: Actor, member_id: int, body: TopUpIn,
          now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: topup_in(c, actor=actor, member_id=member_id, body=body,
                                          now=now))


def spend(*, uow: UnitOfWork, actor: Actor, member_id: int, body: SpendIn,
          now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: spend_in(c, actor=actor, member_id=member_id, body=body,
                                          now=now))


def hold(*, uow: UnitOfWork, actor: Actor, member_id: int, body: HoldIn,
         now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: hold_in(c, actor=actor, member_id=member_id, body=body,
                                         now=now))


def commit_hold(*, uow: UnitOfWork, actor: Actor, hold_id: int,
                now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: commit_hold_in(c, actor=actor, hold_id=hold_id, now=now))


def release_hold(*, uow: UnitOfWork, actor: Actor, hold_id: int,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: release_hold_in(c, actor=actor, hold_id=hold_id, now=now))


def refund(*, uow: UnitOfWork, actor: Actor, spend_id: int, body: RefundIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: refund_in(c, actor=actor, spend_id=spend_id, body=body,
                                           now=now))


def cashout(*, uow: UnitOfWork, actor: Actor, topup_id: int, body: CashoutIn,
            now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: cashout_in(c, actor=actor, topup_id=topup_id, body=body,
                                            now=now))


def adjust(*, uow: UnitOfWork, actor: Actor, member_id: int, body: AdjustIn,
           now: dt.datetime | None = None) -> dict[str, Any]:
    return _owned(uow, lambda c: adjust_in(c, actor=actor, member_id=member_id, body=body,
                                           now=now))


def run_due(*, uow: UnitOfWork, actor: Actor, now: dt.datetime | None = None,
            batch: int = 200) -> dict[str, Any]:
    """The job: release every hold past its expiry and expire every bonus past its date, a batch
    of accounts per transaction (writes on a card do the same for that card first)."""
    need(actor, "stored_value.adjust")
    at = now or utcnow()
    o, lt = sv_operations.c, sv_lots.c
    released = accounts = bonus = 0
    done: set[int] = set()
    while True:
        due = select(o.account_id.label("account_id")).where(
            o.status == "held", o.hold_expires_at <= at).union(
            select(lt.account_id).where(lt.bonus_left > 0, lt.bonus_expires_at <= at)).subquery()
        ids = [int(i) for i in uow.c.execute(
            select(due.c.account_id).distinct().order_by(due.c.account_id).limit(batch)
        ).scalars()]
        ids = [i for i in ids if i not in done]  # never loop on an account that stays due
        if not ids:
            break

        def inner(conn: Connection, ids: list[int] = ids) -> tuple[int, int]:
            results = [catch_up_in(conn, actor=actor, account_id=a, now=at) for a in ids]
            return sum(r[0] for r in results), sum(r[1] for r in results)

        holds, expired = _owned(uow, inner)
        released += holds
        bonus += expired
        accounts += len(ids)
        done.update(ids)
    uow.commit()
    return {"accounts": accounts, "holds_released": released, "bonus_expired": str(yuan(bonus))}
