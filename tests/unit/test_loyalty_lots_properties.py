"""The lot engine against a naive reference model.

The reference keeps every point as a separate token with its expiry date and state; spending
takes the tokens that expire soonest, expiry drops expired tokens, a clawback takes the order's
own tokens first. It is slow and obviously right. Hypothesis drives both through random
sequences of earning, time passing, redemptions, holds (committed, released or left to expire),
adjustments and returns, the Wallet rebuilt from "stored" rows before each operation exactly as
the service does, and checks that balances and every lot agree, and that the ledger's
invariants hold after every step.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from patron.loyalty.model import Entry, InsufficientPoints, Lot, Wallet

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


# --- the reference: one token per point -----------------------------------------------------

@dataclass
class Token:
    lot: int
    earned_at: dt.datetime
    available_at: dt.datetime
    expires_at: dt.datetime
    state: str = "pending"  # pending | available | held:<op> | spent | expired | clawed | debt


@dataclass
class Reference:
    tokens: list[Token] = field(default_factory=list)
    owed: int = 0
    expired_by_lot: dict[int, int] = field(default_factory=dict)
    excused_by_lot: dict[int, int] = field(default_factory=dict)

    def order(self, toks: list[Token]) -> list[Token]:
        return sorted(toks, key=lambda t: (t.expires_at, t.earned_at, t.lot))

    def spendable(self, now: dt.datetime) -> list[Token]:
        return self.order([t for t in self.tokens
                           if t.state == "available" and t.expires_at > now])

    def repay(self, toks: list[Token]) -> None:
        for t in self.order(toks):
            if self.owed == 0:
                return
            if t.state == "available":
                t.state = "debt"
                self.owed -= 1

    def catch_up(self, now: dt.datetime, holds: dict[int, dict]) -> None:
        for op, h in holds.items():
            if h["status"] == "held" and h["expires_at"] <= now:
                self.release(op)
                h["status"] = "expired"
        for lot in sorted({t.lot for t in self.tokens if t.state == "pending"
                           and t.available_at <= now},
                          key=lambda lot: (min(t.available_at for t in self.tokens
                                               if t.lot == lot), lot)):
            toks = [t for t in self.tokens if t.lot == lot and t.state == "pending"]
            for t in toks:
                t.state = "available"
            self.repay(toks)
        for t in self.tokens:
            if t.state == "available" and t.expires_at <= now:
                t.state = "expired"
                self.expired_by_lot[t.lot] = self.expired_by_lot.get(t.lot, 0) + 1

    def earn(self, lot: int, n: int, earned: dt.datetime, available: dt.datetime,
             expires: dt.datetime, now: dt.datetime) -> None:
        toks = [Token(lot, earned, available, expires,
                      "pending" if available > now else "available") for _ in range(n)]
        self.tokens.extend(toks)
        if available <= now:
            self.repay(toks)

    def take(self, n: int, now: dt.datetime, state: str) -> bool:
        toks = self.spendable(now)
        if len(toks) < n:
            return False
        for t in toks[:n]:
            t.state = state
        return True

    def release(self, op: int) -> None:
        toks = [t for t in self.tokens if t.state == f"held:{op}"]
        for t in toks:
            t.state = "available"
        self.repay(toks)

    def commit(self, op: int) -> None:
        for t in self.tokens:
            if t.state == f"held:{op}":
                t.state = "spent"

    def clawback(self, lot: int, n: int, policy: str, now: dt.datetime) -> None:
        own = [t for t in self.tokens if t.lot == lot and (
            t.state == "pending" or (t.state == "available" and t.expires_at > now))]
        pending_first = [t for t in own if t.state == "pending"]
        for t in self.order(pending_first)[:n]:
            t.state = "clawed"
            n -= 1
        if n == 0:
            return
        own = [t for t in own if t.state == "available"]
        for t in self.order(own)[:n]:
            t.state = "clawed"
            n -= 1
        excusable = self.expired_by_lot.get(lot, 0) - self.excused_by_lot.get(lot, 0)
        excused = min(n, max(0, excusable))
        self.excused_by_lot[lot] = self.excused_by_lot.get(lot, 0) + excused
        n -= excused
        for t in self.spendable(now)[:n]:
            t.state = "clawed"
            n -= 1
        if policy == "owe":
            self.owed += n

    def figures(self) -> dict[str, int]:
        count = {"available": 0, "pending": 0, "held": 0}
        for t in self.tokens:
            if t.state in ("available", "pending"):
                count[t.state] += 1
            elif t.state.startswith("held:"):
                count["held"] += 1
        return {**count, "owed": self.owed}

    def lots(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for t in self.tokens:
            out.setdefault(t.lot, 0)
            if t.state in ("available", "pending"):
                out[t.lot] += 1
        return out


# --- the system under test, stored and reloaded as the service does -------------------------

@dataclass
class Stored:
    lots: dict[int, Lot] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("available", "owed", "pending", "held", "growth"), 0))
    entries: list[tuple[Entry, dict[int, int]]] = field(default_factory=list)
    holds: dict[int, dict] = field(default_factory=dict)  # op -> {status, expires_at, taken}
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def wallet(self, now: dt.datetime) -> Wallet:
        f = self.figures
        extra = {lot for h in self.holds.values() if h["status"] == "held"
                 for lot in h["taken"]}
        lots = [Lot(lt.ref, lt.points, lt.remaining, lt.earned_at, lt.available_at,
                    lt.expires_at, lt.activated, order_id=lt.order_id)
                for lt in self.lots.values()
                if lt.remaining > 0 or not lt.activated or lt.ref in extra]
        w = Wallet(1, available=f["available"], owed=f["owed"], pending=f["pending"],
                   held=f["held"], growth=f["growth"], lots=lots)
        for op, h in sorted(self.holds.items()):
            if h["status"] == "held" and h["expires_at"] <= now:
                w.release(h["taken"], cause=("operation", str(op)), now=now)
                h["status"] = "expired"
        w.activate_due(now)
        w.expire_due(now)
        return w

    def save(self, w: Wallet) -> dict[int, int]:
        real: dict[int, int] = {}
        for lt in w.lots.values():
            if lt.ref < 0:
                real[lt.ref] = next(self.ids)
        for lt in w.lots.values():
            ref = real.get(lt.ref, lt.ref)
            self.lots[ref] = Lot(ref, lt.points, lt.remaining, lt.earned_at, lt.available_at,
                                 lt.expires_at, lt.activated, order_id=lt.order_id)
        for e in w.entries:
            self.entries.append((e, {real.get(r, r): n for r, n in e.moves.items()}))
        for k, d in zip(("available", "owed", "pending", "held", "growth"), w.deltas(),
                        strict=True):
            self.figures[k] += d
        return real

    def check_invariants(self) -> None:
        f = self.figures
        assert min(f.values()) >= 0, f
        assert f["available"] == 0 or f["owed"] == 0, f
        by_bucket = {"available": 0, "pending": 0, "held": 0, "growth": 0}
        moved: dict[int, int] = {}
        for e, moves in self.entries:
            assert e.points != 0
            by_bucket[e.bucket] += e.points
            for ref, n in moves.items():
                moved[ref] = moved.get(ref, 0) + n
        assert by_bucket["available"] == f["available"] - f["owed"]
        assert by_bucket["pending"] == f["pending"] and by_bucket["held"] == f["held"]
        for lt in self.lots.values():
            assert 0 <= lt.remaining <= lt.points
            assert lt.remaining == lt.points + moved.get(lt.ref, 0), lt
        assert f["available"] == sum(lt.remaining for lt in self.lots.values() if lt.activated)
        assert f["pending"] == sum(lt.remaining for lt in self.lots.values()
                                   if not lt.activated)


steps = st.lists(st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 40), st.sampled_from([0, 3, 10]),
              st.sampled_from([5, 20, 60]), st.integers(0, 30)),
    st.tuples(st.just("wait"), st.integers(1, 25)),
    st.tuples(st.just("redeem"), st.integers(1, 60)),
    st.tuples(st.just("hold"), st.integers(1, 60), st.integers(1, 3)),
    st.tuples(st.just("settle"), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("adjust"), st.integers(-30, 30)),
    st.tuples(st.just("return"), st.integers(0, 10), st.integers(1, 40),
              st.sampled_from(["owe", "write_off"])),
), min_size=1, max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
# Two returns of one order whose points partly expired and partly were spent: only what
# expired is excused, once.
@example([("earn", 10, 0, 5, 0), ("wait", 1), ("redeem", 4), ("wait", 10),
          ("earn", 20, 0, 60, 0), ("return", 0, 5, "owe"), ("return", 0, 5, "owe")])
# A debt paid by points that were pending when it arose.
@example([("earn", 10, 0, 20, 0), ("earn", 5, 3, 20, 0), ("redeem", 10),
          ("return", 0, 10, "owe"), ("wait", 4), ("redeem", 1)])
def test_lot_engine_agrees_with_the_one_token_per_point_model(plan):
    ref, sut = Reference(), Stored()
    now = T0
    earned_lots: list[tuple[int, int]] = []  # (lot id, points earned)
    clawed: dict[int, int] = {}
    excused: dict[int, int] = {}  # per lot, as the order's earning row keeps it
    op_ids = itertools.count(1)
    open_holds: list[int] = []
    for step in plan:
        kind = step[0]
        if kind == "wait":
            now += step[1] * DAY
            ref_holds = {op: dict(h) for op, h in sut.holds.items()}
            w = sut.wallet(now)
            sut.save(w)
            ref.catch_up(now, ref_holds)
        else:
            ref_holds = {op: dict(h) for op, h in sut.holds.items()}
            w = sut.wallet(now)
            ref.catch_up(now, ref_holds)
            if kind == "earn":
                _, n, window, lifetime, back = step
                earned_at = now - back * DAY  # an offline till's late order
                lot = w.earn(n, 0, cause=("order", str(next(op_ids))), earned_at=earned_at,
                             available_at=earned_at + window * DAY,
                             expires_at=earned_at + lifetime * DAY, now=now)
                w.expire_due(now)
                real = sut.save(w)
                assert lot is not None
                lot_id = real[lot.ref]
                earned_lots.append((lot_id, n))
                ref.earn(lot_id, n, earned_at, earned_at + window * DAY,
                         earned_at + lifetime * DAY, now)
                ref.catch_up(now, {})
            elif kind == "redeem":
                ok_ref = ref.take(step[1], now, "spent")
                try:
                    w.redeem(step[1], cause=("operation", str(next(op_ids))), now=now)
                    ok = True
                except InsufficientPoints:
                    ok = False
                assert ok == ok_ref
                sut.save(w)
            elif kind == "hold":
                op = next(op_ids)
                ok_ref = ref.take(step[1], now, f"held:{op}")
                try:
                    picked = w.hold(step[1], cause=("operation", str(op)), now=now)
                    ok = True
                except InsufficientPoints:
                    ok = False
                assert ok == ok_ref
                sut.save(w)
                if ok:
                    sut.holds[op] = {"status": "held", "expires_at": now + step[2] * DAY,
                                     "taken": {lt.ref: n for lt, n in picked}}
                    open_holds.append(op)
            elif kind == "settle":
                live = [op for op in open_holds if sut.holds[op]["status"] == "held"]
                if live:
                    op = live[step[1] % len(live)]
                    h = sut.holds[op]
                    if step[2]:
                        w.commit(sum(h["taken"].values()), cause=("operation", str(op)))
                        ref.commit(op)
                    else:
                        w.release(h["taken"], cause=("operation", str(op)), now=now)
                        w.expire_due(now)
                        ref.release(op)
                        ref.catch_up(now, {})
                    h["status"] = "committed" if step[2] else "released"
                sut.save(w)
            elif kind == "adjust":
                n = step[1]
                if n > 0:
                    lot = w.credit(n, kind="adjust", cause=("operation", str(next(op_ids))),
                                   now=now, expires_at=now + 30 * DAY)
                    real = sut.save(w)
                    ref.earn(real[lot.ref], n, now, now, now + 30 * DAY, now)
                elif n < 0:
                    ok_ref = ref.take(-n, now, "spent")
                    try:
                        w.debit(-n, kind="adjust", cause=("operation", str(next(op_ids))),
                                now=now)
                        ok = True
                    except InsufficientPoints:
                        ok = False
                    assert ok == ok_ref
                    sut.save(w)
                else:
                    sut.save(w)
            elif kind == "return":
                _, which, n, policy = step
                if not earned_lots:
                    sut.save(w)
                else:
                    lot_id, earned = earned_lots[which % len(earned_lots)]
                    n = min(n, earned - clawed.get(lot_id, 0))
                    lot = w.lots.get(lot_id)
                    if lot is None:  # not an open lot: load it as the service does
                        s = sut.lots[lot_id]
                        lot = Lot(s.ref, s.points, s.remaining, s.earned_at, s.available_at,
                                  s.expires_at, s.activated)
                        w.lots[lot_id] = lot
                    gone = -sum(m.get(lot_id, 0) for e, m in sut.entries if e.kind == "expire")
                    out = w.clawback(n, 0, cause=("return", str(next(op_ids))), lot=lot,
                                     expired_on_lot=gone,
                                     excused_before=excused.get(lot_id, 0),
                                     policy=policy, now=now)
                    excused[lot_id] = excused.get(lot_id, 0) + out.excused
                    sut.save(w)
                    ref.clawback(lot_id, n, policy, now)
                    clawed[lot_id] = clawed.get(lot_id, 0) + n
                    assert out.clawed + out.excused + out.written_off == n
        figures = {k: sut.figures[k] for k in ("available", "pending", "held", "owed")}
        assert figures == ref.figures(), (step, figures, ref.figures())
        assert {ref_: lt.remaining for ref_, lt in sut.lots.items()} == ref.lots()
        sut.check_invariants()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 90)), min_size=1, max_size=12),
       st.integers(0, 400), st.integers(1, 120))
def test_redemption_never_touches_an_expired_lot_even_before_the_expiry_job(lots, redeem, day):
    now = T0 + day * DAY
    w = Wallet(1)
    for n, life in lots:
        w.earn(n, 0, cause=("order", "x"), earned_at=T0, available_at=T0,
               expires_at=T0 + life * DAY, now=T0)
    # Expiry has not run: the expired lots still hold points, yet none may be spent.
    live = sum(n for n, life in lots if T0 + life * DAY > now)
    if redeem > live:
        try:
            w.redeem(redeem, cause=("operation", "1"), now=now)
        except InsufficientPoints as exc:
            assert exc.available == live
        else:
            raise AssertionError("redeemed more than the unexpired points")
    else:
        picked = w.redeem(redeem, cause=("operation", "1"), now=now)
        assert all(lt.expires_at > now for lt, _ in picked)
        # soonest-expiring first: every lot left untouched expires no sooner than any used one
        used = {lt.ref for lt, _ in picked}
        full = [lt for lt, n in picked if lt.remaining == 0]
        if full:
            last_full = max(lt.expires_at for lt in full)
            for lt in w.lots.values():
                if lt.ref not in used and lt.expires_at > now:
                    assert lt.expires_at >= last_full
