import pytest


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unknown_page_is_an_html_404_for_browsers_and_json_for_the_api(client):
    r = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    r = client.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_malformed_json_body_is_a_422_not_a_500(client, pos_key):
    r = client.post("/api/v1/orders", content=b"{not json",
                    headers={"Authorization": f"Bearer {pos_key}",
                             "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_numbers_no_column_can_hold_are_refused_with_a_422(owner):
    """What the fuzzer found: a count filter or a merged id past 64 bits reached the database
    driver (a 500). The schema now bounds them."""
    r = owner.get("/api/v1/customers", params={"min_orders": 2**70})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "query.min_orders"
    r = owner.get("/api/v1/customers", params={"min_net_spend": "1e40"})
    assert r.status_code == 422
    r = owner.post("/api/v1/customers/merge", json={"customer_ids": [2**64, 1], "reason": "x"})
    assert r.status_code == 422


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_value_the_database_refuses_is_a_422_whatever_route_let_it_through(db_url, owner):
    """The safety net under the schemas: SQLite's driver refusing to bind an integer past 64
    bits (OverflowError) and PostgreSQL refusing a value out of its column's range (DataError)
    answer 422 with a reason, and the transaction is rolled back."""
    from sqlalchemy import text

    from patron.db import UnitOfWork, get_engine

    app = owner.app

    def overflow() -> None:
        with UnitOfWork(get_engine()) as uow:
            uow.c.execute(text("SELECT :n"), {"n": 2**70})
            uow.c.execute(text("SELECT CAST(:n AS SMALLINT)"), {"n": 10**6})

    app.add_api_route("/api/v1/test-out-of-range", overflow, methods=["GET"])
    r = owner.get("/api/v1/test-out-of-range")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["fields"][0]["reason"] == "value_out_of_range"
