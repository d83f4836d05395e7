"""Cross-sell on SQLite and PostgreSQL: rules counted in SQL from recorded orders, stored
recommendations and who may read them, the commands, and the demo generator's affinities
found again (with the recommender beating popularity on a holdout)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from patron.analytics import crosssell_service as service
from patron.analytics.crosssell_tables import (
    crosssell_evaluation_runs,
    crosssell_rules,
    customer_recommendations,
)
from patron.app import create_app
from patron.cli import app
from patron.customers.tables import identities
from patron.db import UnitOfWork, get_engine
from patron.demo.generator import plan, window
from patron.demo.seed import seed_organisation
from patron.demo.service import load_generated
from patron.errors import Forbidden, NotFound, ValidationFailed
from patron.orders.service import record_orders
from patron.security import service as security
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import T0, make_org, order

runner = CliRunner()
PASSWORD = "correct-horse-9"
A, B = "13800000001", "13800000002"


def line(sku: str, category: str) -> dict:
    return {"sku": sku, "category": category, "quantity": "1", "unit_price": "20.00"}


LATTE, CROISSANT = line("LATTE", "coffee"), line("CROISSANT", "bakery")
AMERICANO, TEA = line("AMERICANO", "coffee"), line("TEA", "tea")


def record_baskets(uow: UnitOfWork) -> dict[str, int]:
    """The hand-checked basket set of the unit tests: 5 orders; coffee in 3, bakery in 3, tea
    in 2; coffee+bakery together in 2, tea+bakery in 1. A buys in Shanghai, B in Beijing."""
    ids = make_org(uow)
    outcomes = record_orders(uow=uow, actor=SYSTEM, source="api", orders_in=[
        order("O1", at=T0, identifiers={"phone": A}, lines=[LATTE, CROISSANT]),
        order("O2", at=T0 + dt.timedelta(days=1), identifiers={"phone": A},
              lines=[LATTE, CROISSANT]),
        order("O3", at=T0 + dt.timedelta(days=2), identifiers={"phone": A}, lines=[AMERICANO]),
        order("O4", store="BJ01", at=T0, identifiers={"phone": B}, lines=[TEA, CROISSANT]),
        order("O5", store="BJ01", at=T0 + dt.timedelta(days=3), identifiers={"phone": B},
              lines=[TEA]),
    ])
    assert all(o.status == "created" for o in outcomes)
    return ids


def customer(uow: UnitOfWork, phone: str) -> int:
    from patron.customers.model import normalize_identity
    from patron.customers.protect import identity_is

    return uow.c.execute(select(identities.c.customer_id).where(
        identity_is(normalize_identity("phone", phone).value))).scalar_one()


def by_pair(rules: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["antecedent"], r["consequent"]): r for r in rules}


def test_category_and_sku_rules_from_recorded_orders_match_the_hand_count(uow) -> None:
    record_baskets(uow)
    result = service.refresh_rules(uow=uow, actor=SYSTEM, level="category", min_support=0,
                                   min_confidence=0)
    assert result["baskets"] == 5 and result["rules"] == 4
    rules = by_pair(result["top"])
    assert rules[("coffee", "bakery")]["support"] == pytest.approx(0.4)
    assert rules[("coffee", "bakery")]["confidence"] == pytest.approx(2 / 3, abs=1e-6)
    assert rules[("coffee", "bakery")]["lift"] == pytest.approx(10 / 9, abs=1e-6)
    assert rules[("tea", "bakery")]["lift"] == pytest.approx(5 / 6, abs=1e-6)
    assert result["top"][0]["lift"] > 1 > result["top"][-1]["lift"]

    sku = service.refresh_rules(uow=uow, actor=SYSTEM, level="sku", min_support=0.3,
                                min_confidence=0.5)
    # Only LATTE+CROISSANT (2 of 5 orders) reaches 30% support.
    assert [(r["antecedent"], r["consequent"]) for r in sku["top"]] == [
        ("LATTE", "CROISSANT"), ("CROISSANT", "LATTE")]
    assert sku["top"][0]["confidence"] == 1.0
    assert sku["top"][0]["lift"] == pytest.approx(5 / 3, abs=1e-6)


def test_store_rules_count_only_that_stores_orders_and_a_refresh_replaces_them(uow) -> None:
    record_baskets(uow)
    first = service.refresh_rules(uow=uow, actor=SYSTEM, store="SH01", min_support=0,
                                  min_confidence=0)
    assert first["scope"] == "store:SH01" and first["baskets"] == 3
    # In Shanghai every bakery order holds coffee: confidence 1, lift 1 (no tea there).
    assert by_pair(first["top"])[("bakery", "coffee")]["confidence"] == 1.0
    assert all("tea" not in (r["antecedent"], r["consequent"]) for r in first["top"])
    service.refresh_rules(uow=uow, actor=SYSTEM, min_support=0, min_confidence=0)
    again = service.refresh_rules(uow=uow, actor=SYSTEM, store="SH01", min_support=0,
                                  min_confidence=0.9)
    stored = uow.c.execute(select(crosssell_rules.c.scope, func.count())
                           .group_by(crosssell_rules.c.scope)).all()
    assert dict(stored) == {"overall": 4, "store:SH01": again["rules"]}
    assert again["rules"] == 1  # bakery -> coffee; coffee -> bakery has confidence 2/3
    listed = service.list_rules(uow.c, actor=SYSTEM, store="SH01")
    assert [(r["antecedent"], r["consequent"]) for r in listed["rules"]] == [
        ("bakery", "coffee")]
    assert uow.c.execute(select(func.count()).select_from(audit_log).where(
        audit_log.c.action == "analytics.crosssell_rules_refreshed")).scalar_one() == 3


def test_bad_options_and_foreign_stores_are_refused_before_any_write(uow) -> None:
    ids = record_baskets(uow)
    with pytest.raises(ValidationFailed) as bad_level:
        service.refresh_rules(uow=uow, actor=SYSTEM, level="brand")
    assert bad_level.value.fields[0].field == "level"
    with pytest.raises(ValidationFailed) as bad_support:
        service.refresh_rules(uow=uow, actor=SYSTEM, min_support=1.5)
    assert bad_support.value.fields[0].field == "min_support"
    with pytest.raises(ValidationFailed) as unknown:
        service.refresh_rules(uow=uow, actor=SYSTEM, store="NOPE")
    assert unknown.value.fields[0].reason == "unknown_store"
    manager = Actor(type="user", id=1, name="m", role="manager",
                    store_ids=frozenset({ids["SH01"]}))
    with pytest.raises(Forbidden):
        service.refresh_rules(uow=uow, actor=manager, store="BJ01")
    with pytest.raises(Forbidden):
        service.refresh_rules(uow=uow, actor=manager)  # overall: every store's orders
    with pytest.raises(Forbidden):
        service.refresh_recommendations(uow=uow, actor=manager)
    assert service.refresh_rules(uow=uow, actor=manager, store="SH01")["baskets"] == 3
    assert uow.c.execute(select(func.count()).select_from(crosssell_rules).where(
        crosssell_rules.c.scope != "store:SH01")).scalar_one() == 0


def test_recommendations_leave_out_regular_products_and_fall_back_to_popular_ones(uow) -> None:
    ids = record_baskets(uow)
    first = service.refresh_recommendations(uow=uow, actor=SYSTEM, as_of=dt.date(2026, 3, 31))
    assert first["customers"] == 2
    a, b = customer(uow, A), customer(uow, B)
    # B buys TEA regularly (2 orders) and CROISSANT once: CROISSANT -> LATTE (seen in 2
    # orders) ranks first, then the most popular SKUs except TEA.
    got_b = service.recommendations_for(uow.c, actor=SYSTEM, customer_id=b)
    assert [(r["sku"], r["source"]) for r in got_b["recommendations"]] == [
        ("LATTE", "rules"), ("CROISSANT", "popular"), ("AMERICANO", "popular")]
    # A buys LATTE and CROISSANT regularly: every rule points at those, so popularity only.
    got_a = service.recommendations_for(uow.c, actor=SYSTEM, customer_id=a)
    assert [(r["sku"], r["source"]) for r in got_a["recommendations"]] == [
        ("TEA", "popular"), ("AMERICANO", "popular")]
    rows = uow.c.execute(select(customer_recommendations).order_by(
        customer_recommendations.c.customer_id, customer_recommendations.c.rank)).all()
    again = service.refresh_recommendations(uow=uow, actor=SYSTEM, as_of=dt.date(2026, 3, 31))
    assert again["customers"] == 2
    rows_again = uow.c.execute(select(customer_recommendations).order_by(
        customer_recommendations.c.customer_id, customer_recommendations.c.rank)).all()
    assert [r[:5] for r in rows_again] == [r[:5] for r in rows]  # idempotent
    assert uow.c.execute(select(func.count()).select_from(audit_log).where(
        audit_log.c.action == "analytics.recommendations_refreshed")).scalar_one() == 2
    # Nothing bought by the day before the first order: nothing to recommend from.
    assert service.refresh_recommendations(uow=uow, actor=SYSTEM,
                                           as_of=dt.date(2026, 3, 1))["customers"] == 0
    manager = Actor(type="user", id=1, name="m", role="manager",
                    store_ids=frozenset({ids["SH01"]}))
    with pytest.raises(NotFound):
        service.recommendations_for(uow.c, actor=manager, customer_id=b)
    assert service.recommendations_for(uow.c, actor=manager, customer_id=a)["customer_id"] == a


def test_rules_and_recommendations_over_http_respect_the_callers_stores(db_url) -> None:
    with UnitOfWork(get_engine(db_url)) as uow:
        ids = record_baskets(uow)
        for name, role, stores in (("owner", "owner", []),
                                   ("manager", "manager", [ids["SH01"]])):
            security.create_user(uow=uow, actor=SYSTEM, username=name, password=PASSWORD,
                                 role=role, store_ids=stores)
        service.refresh_rules(uow=uow, actor=SYSTEM, min_support=0, min_confidence=0)
        service.refresh_recommendations(uow=uow, actor=SYSTEM, as_of=dt.date(2026, 3, 31))
        a, b = customer(uow, A), customer(uow, B)
    with TestClient(create_app()) as client:
        def login(name: str) -> None:
            r = client.post("/api/v1/auth/login", json={"username": name,
                                                         "password": PASSWORD})
            assert r.status_code == 200, r.text

        login("owner")
        r = client.get("/api/v1/analytics/rules", params={"level": "category"})
        assert r.status_code == 200, r.text
        assert r.json()["scope"] == "overall" and len(r.json()["rules"]) == 4
        assert client.get("/api/v1/analytics/rules", params={"level": "x"}).status_code == 422
        r = client.get(f"/api/v1/customers/{b}/recommendations")
        assert r.status_code == 200 and r.json()["recommendations"][0]["sku"] == "LATTE"
        assert client.get("/api/v1/customers/999999/recommendations").status_code == 404
        client.post("/api/v1/auth/logout")
        client.cookies.clear()
        login("manager")
        assert client.get("/api/v1/analytics/rules").status_code == 403
        r = client.get("/api/v1/analytics/rules", params={"store": "SH01"})
        assert r.status_code == 200 and r.json()["rules"] == []  # not refreshed for SH01
        assert client.get(f"/api/v1/customers/{b}/recommendations").status_code == 404
        assert client.get(f"/api/v1/customers/{a}/recommendations").status_code == 200


def test_commands_print_json_store_the_evaluation_and_reject_bad_dates(db_url) -> None:
    with UnitOfWork(get_engine(db_url)) as uow:
        record_baskets(uow)
    env = {"PATRON_LANG": "en"}
    rules = runner.invoke(app, ["analytics", "rules", "--level", "sku", "--min-support", "0.3",
                                "--min-confidence", "0.5"], env=env)
    assert rules.exit_code == 0, rules.output
    assert json.loads(rules.output)["rules"] == 2
    rec = runner.invoke(app, ["analytics", "recommend", "--as-of", "2026-03-31"], env=env)
    assert rec.exit_code == 0, rec.output
    assert json.loads(rec.output)["customers"] == 2
    ev = runner.invoke(app, ["analytics", "recommend-evaluate", "--cutoff", "2026-03-04",
                             "--holdout-days", "30"], env=env)
    assert ev.exit_code == 0, ev.output
    out = json.loads(ev.output)
    # Both bought before 4 March and from it: A a first AMERICANO (O3, never sold before the
    # cutoff, so neither method can name it), B TEA again (nothing new).
    assert out["customers"] == 2 and out["customers_with_new_products"] == 1
    assert out["recommender"]["hits"] == 0 and out["popularity"]["hits"] == 0
    bad = runner.invoke(app, ["analytics", "recommend-evaluate", "--cutoff", "4 March"],
                        env=env)
    assert bad.exit_code != 0 and "Not a date" in bad.output
    bad_level = runner.invoke(app, ["analytics", "rules", "--level", "brand"], env=env)
    assert bad_level.exit_code != 0 and "category" in bad_level.output
    assert "Traceback" not in bad.output + bad_level.output
    with UnitOfWork(get_engine(db_url)) as uow:
        run = uow.c.execute(select(crosssell_evaluation_runs)).mappings().one()
        assert run["cutoff"] == dt.date(2026, 3, 4) and run["customers"] == 2


def test_generated_affinities_are_found_and_the_recommender_beats_popularity(uow) -> None:
    # 400 people over 2024 (about 2000 orders): the generator anchors baskets on a category
    # and adds its affinities (coffee -> bakery, skincare -> makeup).
    start, end = window(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    seed_organisation(uow=uow, actor=SYSTEM)
    report = load_generated(uow=uow, actor=SYSTEM,
                            config=plan(start=start, end=end, customers=400, seed=11),
                            chunk_size=1000)
    assert report.rejected == 0 and report.created > 1500
    rules = service.refresh_rules(uow=uow, actor=SYSTEM, level="category", min_support=0.01,
                                  min_confidence=0.1, top=100)
    found = by_pair(rules["top"])
    assert found[("coffee", "bakery")]["lift"] > 1.5
    assert found[("bakery", "coffee")]["lift"] > 1.5
    assert found[("skincare", "makeup")]["lift"] > 1.5
    result = service.evaluate_recommendations(uow=uow, actor=SYSTEM,
                                              cutoff=dt.date(2024, 10, 1), holdout_days=60)
    assert result["customers"] >= 50
    assert result["recommender"]["hit_rate"] > result["popularity"]["hit_rate"] + 0.1
