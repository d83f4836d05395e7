"""Whatever orders arrive, in whatever chunks: every identity belongs to one live profile,
orders linked by shared identifiers end up in one profile, and the figures match the orders."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from patron.customers import figures
from patron.customers.model import UnionFind
from patron.customers.tables import customers, identities
from patron.db import UnitOfWork
from patron.orders.service import record_orders
from patron.orders.tables import orders
from patron.security.model import SYSTEM
from tests.conftest import _truncate_postgres
from tests.factories import make_org, order

POOL = {
    "phone": ["13800000001", "13800000002", "13800000003", "13800000004"],
    "wechat_openid": ["oA", "oB", "oC"],
    "member_code": ["M1", "M2", "M3"],
}

identifier_sets = st.dictionaries(st.sampled_from(sorted(POOL)),
                                  st.integers(0, 3), max_size=3).map(
    lambda d: {k: POOL[k][i % len(POOL[k])] for k, i in d.items()})

histories = st.lists(identifier_sets, min_size=1, max_size=25)
chunkings = st.lists(st.integers(1, 6), min_size=1, max_size=10)


def _reset(engine):
    if engine.dialect.name == "postgresql":
        _truncate_postgres(str(engine.url.render_as_string(hide_password=False)))
    else:
        from sqlalchemy import inspect

        from patron.db import metadata

        present = set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                # the audit log refuses DELETE (append-only); its chain simply goes on
                if table.name in present and table.name not in ("audit_log", "audit_chain_head"):
                    conn.execute(table.delete())
    from patron.org.service import clear_reference_cache, ensure_default_channels

    clear_reference_cache()
    with UnitOfWork(engine) as uow:
        ensure_default_channels(uow.c)
        uow.commit()
        make_org(uow)


def test_identity_resolution_invariants(engine):
    @settings(max_examples=25 if engine.dialect.name == "postgresql" else 60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(history=histories, chunks=chunkings)
    def check(history, chunks):
        _reset(engine)
        bodies = [order(f"P{i}", identifiers=ids) for i, ids in enumerate(history)]
        start, k = 0, 0
        while start < len(bodies):
            size = chunks[k % len(chunks)]
            with UnitOfWork(engine) as uow:
                out = record_orders(uow=uow, orders_in=bodies[start:start + size],
                                    source="api", actor=SYSTEM)
            assert {o.status for o in out} == {"created"}
            start, k = start + size, k + 1

        # Expected grouping: orders sharing an identifier (transitively) are one person.
        uf = UnionFind()
        owner = {}
        for i, ids in enumerate(history):
            uf.find(i)
            for kind, value in ids.items():
                key = (kind, value)
                if key in owner:
                    uf.union(owner[key], i)
                else:
                    owner[key] = i
        with UnitOfWork(engine) as uow:
            c = uow.c
            live = {r.id for r in c.execute(select(customers.c.id).where(
                customers.c.merged_into_id.is_(None)))}
            by_order = {r.external_id: r.customer_id
                        for r in c.execute(select(orders.c.external_id, orders.c.customer_id))}
            idents = c.execute(select(identities.c.customer_id)).scalars().all()
            assert set(idents) <= live
            assert len(idents) == len(owner)
            for i, ids in enumerate(history):
                cid = by_order[f"P{i}"]
                if not ids:
                    assert cid is None
                    continue
                assert cid in live
                for j in range(i):
                    if history[j]:
                        same = uf.find(i) == uf.find(j)
                        assert (by_order[f"P{j}"] == cid) == same, (i, j, history)
            groups = {uf.find(i) for i, ids in enumerate(history) if ids}
            assert len(live) == len(groups)
            assert figures.compare(c) == []

    check()
