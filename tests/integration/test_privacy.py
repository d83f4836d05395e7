"""Personal-information rights on SQLite and PostgreSQL: a data-subject request is recorded with
its deadline; a copy of everything held about the person; correction; deletion that leaves none
of the person's values anywhere in the database while order amounts, ledgers and figures keep
their sums; the retention job; the personalised-marketing opt-out ledger."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from patron.customers.custom_fields import update_customer
from patron.customers.service import merge_customers
from patron.customers.tables import customer_figures, customers
from patron.db import metadata
from patron.errors import Conflict, Forbidden, ValidationFailed
from patron.loyalty.tables import loyalty_entries, loyalty_members
from patron.loyalty.verify import verify
from patron.messaging.service import enqueue_in
from patron.orders.service import record_orders
from patron.orders.tables import orders
from patron.privacy import service
from patron.security.model import SYSTEM, Actor
from patron.security.tables import audit_log
from tests.factories import T0, make_org, order
from tests.loyalty_factories import PHONE, START, enrol, make_program

NOW = T0 + dt.timedelta(days=3)
E164 = "+86" + PHONE
EMAIL = "lin.xiaomei@example.cn"
NAME = "林小美"
OPENID = "oXq3w-privacy-openid-4471"
OTHER_PHONE = "13987654321"
OTHER_OPENID = "oXq3w-second-profile-9902"
ANALYST = Actor(type="user", id=7, name="ana", role="analyst")


def _person(uow) -> dict:
    """A member with a name, email and birthday, two orders (phone + openid), a profile merged
    into hers (another phone and openid), and a message sent to her."""
    make_org(uow)
    make_program(uow)
    member = enrol(uow, PHONE, name=NAME)
    customer_id = int(member["customer_id"])
    record_orders(uow=uow, source="api", actor=SYSTEM, now=T0, orders_in=[
        order("P-1", identifiers={"phone": PHONE, "wechat_openid": OPENID}),
        order("P-2", at=T0 + dt.timedelta(days=1), identifiers={"phone": PHONE}),
        order("P-3", identifiers={"phone": OTHER_PHONE, "wechat_openid": OTHER_OPENID})])
    other = int(uow.c.execute(select(orders.c.customer_id).where(
        orders.c.external_id == "P-3")).scalar_one())
    assert other != customer_id
    merge_customers(uow=uow, survivor_id=customer_id, merged_id=other, reason="same person",
                    actor=SYSTEM)
    update_customer(uow=uow, actor=SYSTEM, customer_id=customer_id,
                    changes={"email": EMAIL, "birthday": "1990-07-14"})
    enqueue_in(uow.c, customer_id=customer_id, channel="sms", template="points_expiring",
               variables={"program": "Bean Club", "member_code": member["member_code"],
                          "points": 71, "expires_on": "2027-03-02", "balance": 120},
               purpose="transactional", dedupe_key="privacy-test", now=NOW)
    uow.commit()
    return {"customer_id": customer_id, "member": member, "merged_id": other}


def _dump(uow) -> str:
    """Every value of every row of every table, as one text."""
    parts = []
    for table in metadata.sorted_tables:
        for row in uow.c.execute(select(table)).all():
            parts.append(json.dumps([str(v) for v in row], ensure_ascii=False))
    return "\n".join(parts)


def _sums(uow, customer_id: int) -> dict:
    return {
        "orders": uow.c.execute(select(func.count(), func.sum(orders.c.total_amount)).where(
            orders.c.customer_id == customer_id)).one(),
        "figures": uow.c.execute(select(customer_figures.c.order_count,
                                        customer_figures.c.net_spend).where(
            customer_figures.c.customer_id == customer_id)).one(),
        "ledger": uow.c.execute(select(func.count(), func.sum(loyalty_entries.c.points))
                                ).one(),
    }


def test_a_request_gets_a_deadline_and_shows_overdue_after_it(uow):
    p = _person(uow)
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="access", source="store", now=NOW)
    assert r["status"] == "open" and r["due_at"] == NOW + dt.timedelta(days=15)
    assert r["overdue"] is False and r["days_left"] == 15
    later = NOW + dt.timedelta(days=16)
    (late,) = service.list_requests(uow.c, actor=SYSTEM, overdue=True, now=later)
    assert late["id"] == r["id"] and late["overdue"] and late["days_left"] == -1
    assert service.list_requests(uow.c, actor=SYSTEM, overdue=True, now=NOW) == []


def test_bad_requests_name_the_field_and_write_nothing(uow):
    p = _person(uow)
    with pytest.raises(ValidationFailed) as bad:
        service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="forget-me", source="fax", now=NOW)
    assert {f.field for f in bad.value.fields} == {"kind", "source"}
    uow.rollback()
    with pytest.raises(Forbidden):
        service.create_request(uow=uow, actor=ANALYST, customer_id=p["customer_id"],
                               kind="access", source="store", now=NOW)
    uow.rollback()
    assert service.list_requests(uow.c, actor=SYSTEM) == []


def test_the_copy_holds_every_row_about_the_person_and_no_secret(uow):
    p = _person(uow)
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="access", source="app", now=NOW)
    copy = service.person_copy(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               request_id=r["id"], now=NOW)
    text = json.dumps(copy, ensure_ascii=False)
    tables = copy["tables"]
    assert {c["id"] for c in tables["customers"]} == {p["customer_id"], p["merged_id"]}
    assert {o["external_id"] for o in tables["orders"]} == {"P-1", "P-2", "P-3"}
    assert len(tables["order_lines"]) == 6
    assert {i["value"] for i in tables["identities"]} >= {E164, OPENID, OTHER_OPENID}
    assert tables["loyalty_members"][0]["member_code"] == p["member"]["member_code"]
    assert tables["loyalty_consents"] and tables["messages"] and tables["customer_merges"]
    assert EMAIL in text and NAME in text
    assert not any(k.endswith(("_hash", "salt")) for rows in tables.values()
                   for row in rows for k in row)
    assert service.get_request(uow.c, actor=SYSTEM, request_id=r["id"])["status"] == "done"
    entry = uow.c.execute(select(audit_log).where(audit_log.c.action == "privacy.copy_made")
                          ).mappings().one()
    assert str(p["customer_id"]) == entry["entity_id"] and EMAIL not in json.dumps(
        entry["details"])


def test_deletion_leaves_no_personal_value_anywhere_and_keeps_every_sum(uow):
    p = _person(uow)
    before = _sums(uow, p["customer_id"])
    for value in (PHONE, EMAIL, NAME, OPENID, OTHER_OPENID, OTHER_PHONE):
        assert value in _dump(uow)
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="deletion", source="email", now=NOW)
    done = service.erase(uow=uow, actor=SYSTEM, request_id=r["id"], now=NOW)
    assert done["status"] == "done" and done["outcome"]["erased"]["profiles"] == 2
    dump = _dump(uow)
    for value in (PHONE, EMAIL, NAME, OPENID, OTHER_OPENID, OTHER_PHONE, "1990-07-14",
                  p["member"]["member_code"]):
        assert value not in dump, value
    assert _sums(uow, p["customer_id"]) == before
    assert verify(uow.c)["differences"] == []
    member = uow.c.execute(select(loyalty_members).where(
        loyalty_members.c.customer_id == p["customer_id"])).mappings().one()
    assert member["status"] == "closed"
    row = uow.c.execute(select(customers).where(customers.c.id == p["customer_id"])
                        ).mappings().one()
    assert row["phone"] is None and row["name"] is None and row["custom_fields"] == {}
    # Asking again is refused with a clear reason; the copy now holds nothing personal.
    with pytest.raises(Conflict) as again:
        service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="deletion", source="email", now=NOW)
    assert again.value.message == "customer_erased"
    uow.rollback()
    copy = json.dumps(service.person_copy(uow=uow, actor=SYSTEM,
                                          customer_id=p["customer_id"], now=NOW))
    assert PHONE not in copy and EMAIL not in copy


def test_a_new_order_with_an_erased_phone_starts_a_new_profile(uow):
    p = _person(uow)
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="deletion", source="store", now=NOW)
    service.erase(uow=uow, actor=SYSTEM, request_id=r["id"], now=NOW)
    (out,) = record_orders(uow=uow, source="api", actor=SYSTEM, now=NOW, orders_in=[
        order("P-9", at=NOW, identifiers={"phone": PHONE})])
    assert out.customer_id != p["customer_id"]


def test_deletion_waits_while_stored_value_is_outstanding(uow):
    from patron.storedvalue import service as sv
    from patron.storedvalue.schemas import BonusRulesIn, SettingsIn, TopUpIn

    p = _person(uow)
    sv.configure(uow=uow, actor=SYSTEM, code="BB", now=START,
                 body=SettingsIn(spend_order="proportional", hold_minutes=15))
    sv.add_bonus_rules(uow=uow, actor=SYSTEM, code="BB", now=START,
                       body=BonusRulesIn.model_validate({"tiers": []}))
    sv.topup(uow=uow, actor=SYSTEM, member_id=p["member"]["id"], now=T0,
             body=TopUpIn.model_validate({"idempotency_key": "t1", "amount": "100",
                                          "store": "SH01"}))
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="deletion", source="store", now=NOW)
    with pytest.raises(Conflict) as refused:
        service.erase(uow=uow, actor=SYSTEM, request_id=r["id"], now=NOW)
    assert refused.value.message == "privacy_stored_value_outstanding"
    uow.rollback()
    assert PHONE in _dump(uow)
    assert service.get_request(uow.c, actor=SYSTEM, request_id=r["id"])["status"] == "open"


def test_a_correction_changes_the_fields_and_closes_the_request_together(uow):
    p = _person(uow)
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="correction", source="phone", now=NOW)
    with pytest.raises(ValidationFailed):
        service.correct(uow=uow, actor=SYSTEM, request_id=r["id"],
                        changes={"email": "not an email"}, now=NOW)
    uow.rollback()
    assert service.get_request(uow.c, actor=SYSTEM, request_id=r["id"])["status"] == "open"
    done = service.correct(uow=uow, actor=SYSTEM, request_id=r["id"],
                           changes={"email": "xm.lin@example.cn"}, now=NOW)
    assert done["status"] == "done" and done["outcome"]["fields"] == ["email"]
    assert uow.c.execute(select(customers.c.email).where(
        customers.c.id == p["customer_id"])).scalar_one() == "xm.lin@example.cn"
    with pytest.raises(Conflict):
        service.erase(uow=uow, actor=SYSTEM, request_id=r["id"], now=NOW)


def test_retention_anonymises_only_customers_inactive_past_the_period(uow):
    p = _person(uow)
    bought = T0 + dt.timedelta(days=300)
    record_orders(uow=uow, source="api", actor=SYSTEM, now=bought, orders_in=[
        order("Q-1", at=bought, identifiers={"phone": "13700000001"})])
    recent = int(uow.c.execute(select(orders.c.customer_id).where(
        orders.c.external_id == "Q-1")).scalar_one())
    # 400 days after T0, with a one-year period: the person (last active a day after T0) is
    # anonymised; the buyer of day 300 is not.
    at = T0 + dt.timedelta(days=400)
    dry = service.retention_run(uow=uow, actor=SYSTEM, now=at, inactive_days=365, dry_run=True)
    assert dry["dry_run"] and dry["anonymised"] == 1 and dry["candidates"] == 1
    assert PHONE in _dump(uow)
    run = service.retention_run(uow=uow, actor=SYSTEM, now=at, inactive_days=365)
    assert run["anonymised"] == 1 and run["finished_at"] is not None
    dump = _dump(uow)
    assert PHONE not in dump and "13700000001" in dump
    erased = {int(r) for r in uow.c.execute(select(
        metadata.tables["privacy_erasures"].c.customer_id)).scalars()}
    assert erased == {p["customer_id"]} and recent not in erased
    # Running again finds nobody new.
    assert service.retention_run(uow=uow, actor=SYSTEM, now=at,
                                 inactive_days=365)["candidates"] == 0


def test_opting_out_of_personalised_marketing_is_a_ledger_and_a_filter(uow):
    p = _person(uow)
    cid = p["customer_id"]
    assert service.personalisation(uow.c, cid) == {"allowed": True, "history": []}
    service.set_personalisation(uow=uow, actor=SYSTEM, customer_id=cid, allowed=False,
                                source="app", now=NOW)
    service.set_personalisation(uow=uow, actor=SYSTEM, customer_id=cid, allowed=False,
                                source="app", now=NOW)  # no change, no new row
    state = service.personalisation(uow.c, cid)
    assert state["allowed"] is False and len(state["history"]) == 1
    assert set(uow.c.execute(service.personalisation_opted_out()).scalars()) == {cid}
    service.set_personalisation(uow=uow, actor=SYSTEM, customer_id=cid, allowed=True,
                                source="store", now=NOW + dt.timedelta(days=1))
    assert list(uow.c.execute(service.personalisation_opted_out()).scalars()) == []
    assert len(service.personalisation(uow.c, cid)["history"]) == 2
    with pytest.raises(Forbidden):
        service.set_personalisation(uow=uow, actor=ANALYST, customer_id=cid, allowed=False,
                                    source="app")


def test_money_is_untouched_by_an_erasure(uow):
    p = _person(uow)
    total = uow.c.execute(select(func.sum(orders.c.total_amount))).scalar_one()
    r = service.create_request(uow=uow, actor=SYSTEM, customer_id=p["customer_id"],
                               kind="deletion", source="store", now=NOW)
    service.erase(uow=uow, actor=SYSTEM, request_id=r["id"], now=NOW)
    assert uow.c.execute(select(func.sum(orders.c.total_amount))).scalar_one() == total
    assert isinstance(total, Decimal)


def test_a_marketing_export_names_its_channel_and_holds_only_consenting_customers(uow):
    import csv

    from patron.customers.export import export_customers

    make_org(uow)
    make_program(uow)
    yes = enrol(uow, "13800000001", marketing={"sms": True})
    enrol(uow, "13800000002", marketing={"sms": False, "email": True})
    with pytest.raises(ValidationFailed) as bad:
        export_customers(uow=uow, actor=SYSTEM, filters=None, fmt="csv", purpose="marketing")
    assert [f.field for f in bad.value.fields] == ["consent"]
    uow.rollback()
    path = export_customers(uow=uow, actor=SYSTEM, filters={"consent": "sms"}, fmt="csv",
                            purpose="marketing")
    with path.open(encoding="utf-8-sig") as fh:
        fh.readline()  # the export's watermark (requester and time), then the header
        rows = list(csv.DictReader(fh))
    assert [int(r["id"]) for r in rows] == [int(yes["customer_id"])]
    entry = uow.c.execute(select(audit_log.c.details).where(
        audit_log.c.action == "customers.exported")).scalars().all()[-1]
    assert entry["filters"] == {"consent": "sms"} and entry["purpose"] == "marketing"
