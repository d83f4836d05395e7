"""Stored value rules, pure Python, in integer fen: the bonus a top-up earns, how a spend splits
between principal and bonus and over the top-up lots, how refunds give money back, what a
cash-back of a top-up forfeits. No database, no HTTP (docs/stored-value.md)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

SPEND_ORDERS = ("bonus_first", "principal_first", "proportional")
FEN = Decimal("0.01")


def fen(value: Decimal | int | str) -> int:
    """Yuan to integer fen (exact for amounts given to the fen)."""
    return int((Decimal(value) * 100).to_integral_value(rounding=ROUND_HALF_UP))


def yuan(value: int) -> Decimal:
    return (Decimal(int(value)) / 100).quantize(FEN)


def round_half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    return (2 * numerator + denominator) // (2 * denominator)


class InsufficientBalance(Exception):
    def __init__(self, wanted: int, available: int) -> None:
        super().__init__(f"{wanted} wanted, {available} available")
        self.wanted = wanted
        self.available = available


class RefundTooLarge(Exception):
    def __init__(self, wanted: int, refundable: int) -> None:
        super().__init__(f"{wanted} wanted, {refundable} refundable")
        self.wanted = wanted
        self.refundable = refundable


# --- bonus rules ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BonusTier:
    min: int  # fen topped up at least
    bonus: int  # fen of bonus


def tiers_from_json(rows: Iterable[dict[str, Any]]) -> list[BonusTier]:
    return sorted((BonusTier(fen(r["min"]), fen(r["bonus"])) for r in rows),
                  key=lambda t: t.min)


def bonus_for(tiers: Sequence[BonusTier], amount: int) -> int:
    """The bonus of the highest threshold the top-up meets (one tier, not one per multiple:
    topping up 1,000 under "500 get 50, 1000 get 120" earns 120, not 2 x 50)."""
    best = 0
    for tier in sorted(tiers, key=lambda t: t.min):
        if amount >= tier.min:
            best = tier.bonus
    return best


# --- spending ------------------------------------------------------------------------------------

def split_spend(order: str, amount: int, principal: int, bonus: int) -> tuple[int, int]:
    """(principal, bonus) a spend of ``amount`` fen uses from an account holding ``principal``
    and ``bonus`` fen available, by the program's order.

    ``proportional``: the bonus share is amount x bonus / (principal + bonus), rounded half up
    to the fen; the principal share is the rest."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    if amount > principal + bonus:
        raise InsufficientBalance(amount, principal + bonus)
    if order == "bonus_first":
        b = min(amount, bonus)
        return amount - b, b
    if order == "principal_first":
        p = min(amount, principal)
        return p, amount - p
    if order != "proportional":
        raise ValueError(f"unknown spend order {order}")
    b = round_half_up(amount * bonus, principal + bonus)
    b = min(bonus, max(b, amount - principal))  # never more than either side holds
    return amount - b, b


@dataclass
class Lot:
    """What is left of one top-up (or positive adjustment) on the card."""

    id: int
    principal_left: int
    bonus_left: int
    principal_held: int = 0
    bonus_held: int = 0
    store_id: int | None = None
    bonus_expires_at: dt.datetime | None = None

    def bonus_expired(self, now: dt.datetime) -> bool:
        return self.bonus_expires_at is not None and self.bonus_expires_at <= now


def take_oldest_first(lots: Sequence[Lot], field: str, amount: int) -> dict[int, int]:
    """Take ``amount`` fen of ``field`` (``principal_left`` or ``bonus_left``) from the lots,
    oldest (lowest id) first. Returns {lot id: fen taken}."""
    out: dict[int, int] = {}
    need = amount
    for lot in sorted(lots, key=lambda lt: lt.id):
        if need == 0:
            break
        have = getattr(lot, field)
        n = min(have, need)
        if n > 0:
            out[lot.id] = n
            need -= n
    if need:
        raise InsufficientBalance(amount, amount - need)
    return out


def plan_spend(lots: Sequence[Lot], order: str, amount: int
               ) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """How a spend of ``amount`` fen is paid: (principal, bonus, {lot id: (principal, bonus)})."""
    principal = sum(lt.principal_left for lt in lots)
    bonus = sum(lt.bonus_left for lt in lots)
    p, b = split_spend(order, amount, principal, bonus)
    from_p = take_oldest_first(lots, "principal_left", p)
    from_b = take_oldest_first(lots, "bonus_left", b)
    per_lot = {lot: (from_p.get(lot, 0), from_b.get(lot, 0))
               for lot in sorted(set(from_p) | set(from_b))}
    return p, b, per_lot


# --- refunds -------------------------------------------------------------------------------------

def refund_split(spent_principal: int, spent_bonus: int, refunded_principal: int,
                 refunded_bonus: int, amount: int) -> tuple[int, int]:
    """(principal, bonus) a refund of ``amount`` fen gives back to the card, in the proportions
    the spend used, cumulatively over the spend's refunds.

    After refunds totalling C of a spend of T that used B bonus, the bonus given back is
    B x C / T rounded half up to the fen; principal the rest. The last refund (C = T) gives
    back exactly what is left of each, so no rounding ever accumulates and the total never
    exceeds what was spent."""
    total = spent_principal + spent_bonus
    done = refunded_principal + refunded_bonus
    if amount <= 0:
        raise ValueError("amount must be positive")
    if amount > total - done:
        raise RefundTooLarge(amount, total - done)
    cumulative = done + amount
    target = spent_bonus if cumulative == total else round_half_up(cumulative * spent_bonus,
                                                                    total)
    b = min(max(target - refunded_bonus, 0), spent_bonus - refunded_bonus, amount)
    p = amount - b
    if p > spent_principal - refunded_principal:  # only reachable with odd history: stay exact
        p = spent_principal - refunded_principal
        b = amount - p
    return p, b


def give_back(used: dict[int, int], restored: dict[int, int], amount: int) -> dict[int, int]:
    """Spread ``amount`` fen given back over the lots a spend took from, newest lot first (the
    reverse of the oldest-first spending), each at most what the spend took from it and not yet
    given back. Returns {lot id: fen}."""
    out: dict[int, int] = {}
    need = amount
    for lot in sorted(used, reverse=True):
        if need == 0:
            break
        room = used[lot] - restored.get(lot, 0)
        n = min(room, need)
        if n > 0:
            out[lot] = n
            need -= n
    if need:
        raise RefundTooLarge(amount, amount - need)
    return out


def cashout_forfeit(lot_principal: int, lot_bonus: int, cashed_before: int,
                    forfeited_before: int, bonus_left: int, amount: int) -> int:
    """Bonus forfeited when ``amount`` fen of a top-up's principal is paid back in cash: the
    bonus in proportion to the principal paid back, cumulatively (B x C / P rounded half up,
    all of it when all the principal is paid back), as far as the lot still holds bonus. Bonus
    already spent is not taken back from the cash."""
    if lot_principal <= 0:
        return 0
    cumulative = cashed_before + amount
    target = lot_bonus if cumulative >= lot_principal else round_half_up(
        cumulative * lot_bonus, lot_principal)
    return max(0, min(target - forfeited_before, bonus_left))


# --- settlement ----------------------------------------------------------------------------------

def _party(store: Any) -> tuple[bool, str]:
    return (store is not None, str(store or ""))


def net_settlement(flows: dict[tuple[Any, Any], int]) -> list[dict[str, Any]]:
    """What each store owes another: ``flows[(a, b)]`` is principal taken in at store ``a``
    (which holds the cash) and spent at store ``b`` (which gave the goods). For each pair the
    two directions are netted; the store that holds more of the other's customers' cash pays
    the difference. ``None`` is head office (top-ups without a store)."""
    pairs: dict[tuple[Any, Any], int] = {}
    for (a, b), n in flows.items():
        if a == b or n == 0:
            continue
        key = (a, b) if _party(a) <= _party(b) else (b, a)
        pairs[key] = pairs.get(key, 0) + (n if key == (a, b) else -n)
    out = []
    for (a, b), n in pairs.items():
        if n > 0:
            out.append({"from": a, "to": b, "amount": n})
        elif n < 0:
            out.append({"from": b, "to": a, "amount": -n})
    return sorted(out, key=lambda r: (_party(r["from"]), _party(r["to"])))


# --- bonus expiry --------------------------------------------------------------------------------

def bonus_expiry(topped_up_at: dt.datetime, months: int | None, tz: str) -> dt.datetime | None:
    """When the bonus of a top-up expires: ``months`` later to the minute, in the program's time
    zone (the 31st becomes the month's last day); never when the program sets no expiry.
    Principal never expires."""
    if months is None:
        return None
    from patron.loyalty.model import lot_expiry

    return lot_expiry(topped_up_at, mode="rolling_months", months=months, tz=tz)
