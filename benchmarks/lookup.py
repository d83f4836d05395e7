"""Customer lookup latency on the imported data against a bare primary-key SELECT.

Both run on the same connection through the same driver, interleaved one by one, so the ratio
is the cost of the lookup's work (identity index, join to the profile and its figures) over the
cost of the cheapest round trip the database can do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select

from benchmarks.data import OrderStream
from benchmarks.results import percentile
from patron.customers.tables import customer_figures, customers, identities
from patron.db import get_engine
from patron.errors import NotFound
from patron.security.model import SYSTEM, Actor

CASHIER = Actor(type="api_key", id=None, name="bench-till", role="cashier")

SAMPLES = 2000


def lookup_by_identity(conn: Connection, kind: str, value: str) -> Any:
    """What a till's "who is this?" costs: identity -> profile + figures, one query.

    Used while the customers area has no service-level lookup of its own."""
    q = (select(customers, customer_figures.c.order_count, customer_figures.c.net_spend,
                customer_figures.c.last_order_at)
         .select_from(identities.join(customers, customers.c.id == identities.c.customer_id)
                      .outerjoin(customer_figures,
                                 customer_figures.c.customer_id == customers.c.id))
         .where(identities.c.kind == kind, identities.c.namespace == "",
                identities.c.value == value))
    return conn.execute(q).mappings().first()


def _service_lookup() -> tuple[str, Callable[[Connection, str, str], Any]]:
    """The customers area's own till lookup when it exists, else the query above."""
    try:
        from patron.customers.queries import lookup_member
    except ImportError:
        return "identities join (bench query)", lookup_by_identity

    def fn(conn: Connection, kind: str, value: str) -> Any:
        try:
            return lookup_member(conn, actor=CASHIER, kind=kind, value=value)
        except NotFound:
            return None
    return "patron.customers.queries.lookup_member", fn


def _search() -> Callable[[Connection, str], Any] | None:
    try:
        from patron.customers.queries import search_customers
    except ImportError:
        return None

    def fn(conn: Connection, q: str) -> Any:
        return search_customers(conn, actor=SYSTEM, q=q)
    return fn


def phones(stream: OrderStream, count: int, samples: int = SAMPLES, seed: int = 11
           ) -> list[str]:
    """E.164 phones of customers the import has seen (orders 0..count-1 name them)."""
    rng = random.Random(seed)
    out: list[str] = []
    tries = 0
    while len(out) < samples and tries < samples * 20:
        tries += 1
        cust = stream.customer_of(rng.randrange(count))
        if cust is not None and cust.phone_e164:
            out.append(cust.phone_e164)
    return out


def run(url: str, stream: OrderStream, count: int, samples: int = SAMPLES) -> dict[str, Any]:
    engine = get_engine(url)
    values = phones(stream, count, samples)
    label, lookup_fn = _service_lookup()
    search_fn = _search()
    found = searched = 0
    lookup_ms: list[float] = []
    search_ms: list[float] = []
    pk_ms: list[float] = []
    with engine.connect() as conn:
        conn = conn.execution_options(patron_readonly=True)
        max_id = conn.execute(select(customers.c.id).order_by(customers.c.id.desc())
                              .limit(1)).scalar_one()
        rng = random.Random(3)
        for value in values[:20]:  # warm the statement caches
            lookup_fn(conn, "phone", value)
            conn.execute(select(customers).where(customers.c.id == 1)).first()
        for value in values:
            t0 = time.perf_counter()
            row = lookup_fn(conn, "phone", value)
            t1 = time.perf_counter()
            conn.execute(select(customers).where(customers.c.id == rng.randint(1, max_id))
                         ).first()
            t2 = time.perf_counter()
            found += row is not None
            lookup_ms.append((t1 - t0) * 1000)
            pk_ms.append((t2 - t1) * 1000)
            if search_fn is not None:
                # As typed at a counter: the national number, no +86.
                t3 = time.perf_counter()
                hits = search_fn(conn, value[3:])
                search_ms.append((time.perf_counter() - t3) * 1000)
                searched += bool(hits)
        conn.rollback()
    out: dict[str, Any] = {
        "label": label, "samples": len(values), "found": found,
        "p50": percentile(lookup_ms, 50), "p99": percentile(lookup_ms, 99),
        "pk_p50": percentile(pk_ms, 50), "pk_p99": percentile(pk_ms, 99),
    }
    if search_fn is not None:
        out.update(search_found=searched, search_p50=percentile(search_ms, 50),
                   search_p99=percentile(search_ms, 99))
    return out
