"""Whatever a caller sends, Patron answers with a 2xx or a 4xx naming the problem: never a 500,
never a half-written order."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from patron.db import UnitOfWork, get_engine
from patron.orders.tables import order_lines, orders
from tests.factories import order

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=40), st.sampled_from(["", "0", "-1", "1e309", "NaN",
                                                           "2026-02-30T10:00:00", "SH01",
                                                           "pos", "13812341234"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=12)

FIELDS = ["external_id", "channel", "store", "purchased_at", "identifiers", "lines",
          "payments", "discount", "total", "customer"]


@st.composite
def mangled_orders(draw):
    body = order(f"H-{draw(st.integers(0, 10**6))}")
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        body[key] = draw(json_values)
    lines = body.get("lines")
    if draw(st.booleans()) and isinstance(lines, list) and lines and isinstance(lines[0], dict):
        line = dict(body["lines"][0])
        line[draw(st.sampled_from(["quantity", "unit_price", "discount", "amount", "sku"]))] = \
            draw(json_values)
        body["lines"] = [line]
    return body


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_mangled_orders_never_cause_a_server_error(client, pos_key, db_url):
    headers = {"Authorization": f"Bearer {pos_key}"}

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=mangled_orders())
    def check(body):
        r = client.post("/api/v1/orders", json=body, headers=headers)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"]
        r = client.post("/api/v1/orders/batch", json={"orders": [body]}, headers=headers)
        assert r.status_code < 500, (body, r.text)

    check()
    with UnitOfWork(get_engine(db_url)) as uow:
        n_orders = uow.c.execute(select(func.count()).select_from(orders)).scalar_one()
        bad = uow.c.execute(select(func.count()).select_from(orders).where(
            orders.c.line_count != select(func.count()).select_from(order_lines).where(
                order_lines.c.order_id == orders.c.id).scalar_subquery())).scalar_one()
    assert bad == 0  # every recorded order has all its lines
    assert n_orders >= 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_arbitrary_json_bodies_never_cause_a_server_error(client, pos_key, users):
    from tests.e2e.conftest import login

    login(client, "owner")
    headers = {"Authorization": f"Bearer {pos_key}"}
    paths = ["/api/v1/orders", "/api/v1/orders/batch", "/api/v1/returns", "/api/v1/stores",
             "/api/v1/users", "/api/v1/api-keys", "/api/v1/customers/merge"]

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=json_values, path=st.sampled_from(paths), keyed=st.booleans())
    def check(body, path, keyed):
        r = client.post(path, json=body, headers=headers if keyed else {})
        assert r.status_code < 500, (path, body, r.text)

    check()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("raw", [b'{"external_id": NaN}', b'{"total": Infinity}',
                                 b'[1, 2', b'\xff\xfe', b'{"lines": [{"quantity": -Infinity}]}'])
def test_non_json_numbers_and_broken_bodies_are_422(client, pos_key, raw):
    r = client.post("/api/v1/orders", content=raw,
                    headers={"Authorization": f"Bearer {pos_key}",
                             "Content-Type": "application/json"})
    assert r.status_code == 422, r.text


def _id_routes():
    from patron.app import create_app

    for path, ops in create_app().openapi()["paths"].items():
        if "{" in path:
            for method in sorted(ops):
                yield method.upper(), path


@pytest.mark.parametrize("raw_id", ["99999999999999999999", "9223372036854775808", "-1", "0"])
def test_out_of_range_ids_in_any_path_are_4xx_never_500(owner, raw_id):
    import re

    client = owner
    seen = 0
    for method, path in _id_routes():
        url = re.sub(r"\{[^}]+\}", raw_id, path)
        r = client.request(method, url, json={})
        assert r.status_code < 500, (method, url, r.status_code, r.text[:300])
        seen += 1
    assert seen > 20
