"""POS checkout commits per second and their p99 latency on PostgreSQL, next to the single-order
ingestion API measured on the same server, under the same load, in the same run.

A checkout commit does what a till's sale needs in one transaction: the key claimed, the member
locked, 10 points redeemed on a third of them, the order recorded through the orders area (with
identity resolution, figures and the points it earns), the response stored. The anchor is
``POST /api/v1/orders`` (one order through the group-committing single-order path, which earns
for members too) with the same ``wrk`` settings: the ratio says what the checkout's extra work
and its one-transaction-per-sale costs against plain ingestion.

The members (``members``, each with a million points so that no redemption is refused) belong
to a program of a brand of its own, at store ``CK01``. After each run the checkouts in the
database are counted against the 201 responses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select

from benchmarks import api_ingest
from benchmarks.results import Figure
from patron.checkout.tables import checkout_commits
from patron.db import UnitOfWork, get_engine
from patron.loyalty import service as loyalty
from patron.loyalty.schemas import AdjustIn, EnrolIn, ProgramIn
from patron.org import service as org
from patron.security.model import SYSTEM

STORE = "CK01"
MEMBERS = 500
P99_TARGET_MS = 50.0


def prepare(url: str, *, members: int = MEMBERS) -> list[str]:
    """A brand, its store and program, and members with points; their member codes."""
    engine = get_engine(url)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with UnitOfWork(engine) as uow:
        brand = org.create_brand(uow=uow, actor=SYSTEM, code="CKB", name="Checkout bench")
    with UnitOfWork(engine) as uow:
        org.create_store(uow=uow, actor=SYSTEM, code=STORE, name="收银基准店", city="上海",
                         brand_id=brand)
    with UnitOfWork(engine) as uow:
        loyalty.create_program(uow=uow, actor=SYSTEM, now=start, data=ProgramIn.model_validate(
            {"code": "CKP", "brand": "CKB", "name": "Bench club", "privacy_version": "1",
             "pending_days": 0, "tiers": [
                 {"code": "M", "name": "会员", "rank": 0, "benefits": {
                     "member_discount_percent": "0"}}]}))
    codes = []
    for i in range(members):
        with UnitOfWork(engine) as uow:
            member, _ = loyalty.enrol(uow=uow, actor=SYSTEM, program_code="CKP", now=start,
                                      body=EnrolIn.model_validate({
                                          "phone": f"139{i:08d}", "store": STORE,
                                          "source": "pos", "privacy": {"version": "1"}}))
            loyalty.adjust(uow=uow, actor=SYSTEM, member_id=member["id"], now=start,
                           body=AdjustIn(idempotency_key=f"bench-{i}", points=1_000_000,
                                         reason="benchmark balance"))
        codes.append(member["member_code"])
    return codes


def count_checkouts(url: str, tag: str, cut_off: list[str]) -> tuple[int, int]:
    """Checkouts of this run in the database, and how many of them had their response cut off
    when the load stopped."""
    c = checkout_commits.c
    with get_engine(url).connect() as conn:
        total = conn.execute(select(func.count()).where(
            c.order_number.startswith(f"{tag}-", autoescape=True))).scalar_one()
        written = 0
        for i in range(0, len(cut_off), 500):
            written += conn.execute(select(func.count()).where(
                c.order_number.in_(cut_off[i:i + 500]))).scalar_one()
    return int(total), int(written)


@contextlib.contextmanager
def _members_file(codes: list[str]) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="patron-members-") as f:
        f.write("\n".join(codes) + "\n")
        f.flush()
        yield f.name


def _wrk_checkout(gen: api_ingest.Wrk, base: str, *, members_file: str, connections: int,
                  duration: float, tag: str) -> api_ingest.LoadResult:
    return gen._run(base, "checkout.lua", connections=connections, duration=duration,
                    env={"PATRON_API_KEY": gen.key, "PATRON_WRK_RUN": tag,
                         "PATRON_WRK_TRACK_IDS": "1", "PATRON_WRK_ID_FIELD": "order_number",
                         "PATRON_WRK_MEMBERS": members_file, "PATRON_WRK_STORE": STORE})


def _httpx_checkout(gen: api_ingest.InProcess, base: str, *, codes: list[str],
                    connections: int, duration: float, tag: str) -> api_ingest.LoadResult:
    import random

    rnd = random.Random(7)

    def make(i: int) -> api_ingest.Request:
        points = 10 if i % 3 == 0 else 0
        body = {"idempotency_key": f"{tag}-{i}", "order_number": f"{tag}-{i}", "store": STORE,
                "member": {"member_code": codes[rnd.randrange(len(codes))]},
                "lines": [{"sku": "LATTE", "category": "coffee", "quantity": "1",
                           "unit_price_fen": 2800}],
                "redeem_points": points,
                "payments": [{"method": "wechat_pay", "amount_fen": 2800 - points}]}
        return "POST", "/api/v1/checkout/commits", json.dumps(body).encode()

    return api_ingest.drive(base, gen.key, make, clients=connections, duration=duration)


def run(url: str, generator: api_ingest.Wrk | api_ingest.InProcess, *, workers: int,
        connections: list[int], duration: float, members: int = MEMBERS,
        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    log(f"checkout: enrolling {members} members ...")
    codes = prepare(url, members=members)
    out: dict[str, Any] = {"workers": workers, "settings": [], "members": members,
                           "generator": "wrk" if isinstance(generator, api_ingest.Wrk)
                           else "httpx"}
    with _members_file(codes) as members_file, api_ingest.server(url, workers=workers) as srv:
        out["server"] = srv.implementation

        def checkout(conns: int, secs: float, tag: str) -> api_ingest.LoadResult:
            if isinstance(generator, api_ingest.Wrk):
                return _wrk_checkout(generator, srv.base, members_file=members_file,
                                     connections=conns, duration=secs, tag=tag)
            return _httpx_checkout(generator, srv.base, codes=codes, connections=conns,
                                   duration=secs, tag=tag)

        warmup = min(api_ingest.WARMUP_SECONDS, duration)
        generator.orders(srv.base, connections=connections[0], duration=warmup, tag="CKWARMO")
        checkout(connections[0], warmup, "CKWARM")
        for conns in connections:
            tag = f"CK{workers}c{conns}"
            orders = generator.orders(srv.base, connections=conns, duration=duration,
                                      tag=f"CKO{workers}c{conns}")
            commits = checkout(conns, duration, tag)
            time.sleep(1.0)  # commits cut off by the end of the run may still land
            in_db, cut_written = count_checkouts(url, tag, commits.inflight)
            created = commits.statuses.get(201, 0)
            out["settings"].append({
                "connections": conns, "orders": orders, "checkout": commits,
                "checkouts_in_db": in_db, "cut_off_written": cut_written,
                "db_matches": in_db - cut_written == created})
            log(f"  checkout, {workers} worker(s), {conns} connections: "
                f"{commits.rate:,.0f} commits/s (p99 {commits.p99:.1f} ms, statuses "
                f"{dict(commits.statuses)}); POST /orders {orders.rate:,.0f}/s "
                f"(p99 {orders.p99:.1f} ms); in the database {in_db} = {created} x 201 + "
                f"{cut_written} cut off")
    ok = [s for s in out["settings"] if s["checkout"].only(201) and s["db_matches"]]
    out["best"] = max(ok or out["settings"], key=lambda s: s["checkout"].rate)
    out["best_ok"] = bool(ok)
    return out


def figures(res: dict[str, Any]) -> list[Figure]:
    best = res["best"]
    w, c = res["workers"], best["connections"]
    tag = f"PG, {w} worker{'s' if w > 1 else ''}, {c} conns, {res['members']} members"
    commits: api_ingest.LoadResult = best["checkout"]
    orders: api_ingest.LoadResult = best["orders"]
    anchor = "single-order API POST /orders, same server and load"
    created = commits.statuses.get(201, 0)
    mismatch = best["checkouts_in_db"] - best["cut_off_written"] - created
    notes = {"server": res["server"], "generator": res["generator"],
             "best_all_201": res["best_ok"],
             "settings": [{"connections": s["connections"], "checkout": s["checkout"].summary(),
                           "orders": s["orders"].summary(),
                           "checkouts_in_db": s["checkouts_in_db"],
                           "cut_off_written": s["cut_off_written"],
                           "db_matches": s["db_matches"]} for s in res["settings"]]}
    return [
        Figure(f"checkout commits/s ({tag})", commits.rate, "commits/s", f"{anchor} (orders/s)",
               orders.rate, target="all 201", passed=commits.only(201), notes=notes,
               anchor_unit="orders/s"),
        Figure(f"checkout commit p99 ({tag})", commits.p99, "ms", f"{anchor} p99", orders.p99,
               higher_is_better=False, target=f"< {P99_TARGET_MS:.0f} ms",
               passed=commits.p99 < P99_TARGET_MS),
        Figure(f"checkouts in DB - 201s ({tag})", abs(mismatch), "count", "201 responses",
               created, target="0 (none lost or doubled)", passed=mismatch == 0,
               notes={"checkouts_in_db": best["checkouts_in_db"],
                      "cut_off_at_end": len(commits.inflight),
                      "cut_off_written": best["cut_off_written"]}),
    ]

