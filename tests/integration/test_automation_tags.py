"""Automation tag steps on SQLite and PostgreSQL: an automation adds a manual tag, waits, and
removes it, each once (one history event and one audit entry each) however often the engine
runs; the tag functions are idempotent inside the caller's transaction; a step naming an
unknown or a rule tag is refused before anything is written."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from patron.automations import service
from patron.automations.schemas import AutomationIn
from patron.db import UnitOfWork
from patron.errors import Conflict, ValidationFailed
from patron.security.model import SYSTEM
from patron.security.tables import audit_log
from patron.tags import service as tags
from patron.tags.tables import customer_tags, tag_events
from tests.automation_factories import NOW, PHONES, create, entries, run, setup_program
from tests.factories import T0
from tests.loyalty_factories import buy

HOUR = dt.timedelta(hours=1)
RULE = {"match": "all",
        "conditions": [{"type": "identity", "kind": "phone", "op": "present"}]}
DAY = dt.timedelta(days=1)


def make_tag(engine, code="vip", definition=None):
    with UnitOfWork(engine) as uow:
        return tags.create_tag(uow=uow, actor=SYSTEM, code=code, name=code,
                               definition=definition, now=NOW)


def carriers(engine, tag_id):
    with UnitOfWork(engine, readonly=True) as uow:
        return sorted(uow.c.execute(select(customer_tags.c.customer_id).where(
            customer_tags.c.tag_id == tag_id)).scalars())


def events(engine, tag_id):
    e = tag_events.c
    with UnitOfWork(engine, readonly=True) as uow:
        return [(r.customer_id, r.action, r.source, r.actor, r.note) for r in uow.c.execute(
            select(e.customer_id, e.action, e.source, e.actor, e.note)
            .where(e.tag_id == tag_id).order_by(e.id))]


def audits(engine, tag_id):
    a = audit_log.c
    with UnitOfWork(engine, readonly=True) as uow:
        return [(r.action, r.actor_name) for r in uow.c.execute(
            select(a.action, a.actor_name).where(a.entity == "tag",
                                                 a.entity_id == str(tag_id),
                                                 a.action.in_(("tag.applied", "tag.removed")))
            .order_by(a.id))]


def test_an_automation_tags_and_untags_a_customer_exactly_once_even_when_run_twice(engine):
    club = setup_program(engine, members=2)
    vip = make_tag(engine)
    auto = create(engine, "vip-week", {"type": "first_purchase"}, steps=[
        {"action": "add_tag", "tag": "vip"},
        {"action": "wait", "days": 7},
        {"action": "remove_tag", "tag": "vip"}])
    customer = club["members"][0]["customer_id"]
    with UnitOfWork(engine) as uow:
        buy(uow, "O1", phone=PHONES[0], at=T0, now=T0 + dt.timedelta(minutes=1))
    run(engine, NOW + HOUR)
    run(engine, NOW + HOUR)  # a second round (or a second process): nothing more
    assert carriers(engine, vip["id"]) == [customer]
    assert events(engine, vip["id"]) == [
        (customer, "added", "automation", "automation:vip-week", "automation vip-week")]
    assert audits(engine, vip["id"]) == [("tag.applied", "automation:vip-week")]
    (entry,) = entries(engine, auto["id"])
    assert (entry["state"], entry["step"]) == ("active", 2)

    run(engine, NOW + HOUR + 7 * DAY)
    run(engine, NOW + HOUR + 7 * DAY)
    assert carriers(engine, vip["id"]) == []
    assert [x[:2] for x in events(engine, vip["id"])] == [(customer, "added"),
                                                          (customer, "removed")]
    assert audits(engine, vip["id"]) == [("tag.applied", "automation:vip-week"),
                                         ("tag.removed", "automation:vip-week")]
    (entry,) = entries(engine, auto["id"])
    assert entry["state"] == "done"


def test_the_tag_functions_are_idempotent_inside_the_callers_transaction(engine):
    club = setup_program(engine, members=1)
    vip = make_tag(engine)
    customer = club["members"][0]["customer_id"]
    with UnitOfWork(engine) as uow:
        assert tags.add_tag_in(uow.c, actor=SYSTEM, customer_id=customer, tag="vip",
                               now=NOW) == 1
        assert tags.add_tag_in(uow.c, actor=SYSTEM, customer_id=customer, tag="vip",
                               now=NOW) == 0
        uow.rollback()  # the caller's transaction decides: nothing is left
    assert carriers(engine, vip["id"]) == [] and events(engine, vip["id"]) == []
    assert audits(engine, vip["id"]) == []
    with UnitOfWork(engine) as uow:
        tags.add_tag_in(uow.c, actor=SYSTEM, customer_id=customer, tag="vip", now=NOW)
        tags.add_tag_in(uow.c, actor=SYSTEM, customer_id=customer, tag="vip", now=NOW)
        uow.commit()
    with UnitOfWork(engine) as uow:
        assert tags.remove_tag_in(uow.c, actor=SYSTEM, customer_id=customer, tag="vip",
                                  now=NOW) == 1
        assert tags.remove_tag_in(uow.c, actor=SYSTEM, customer_id=customer, tag="vip",
                                  now=NOW) == 0
        uow.commit()
    assert [x[1] for x in events(engine, vip["id"])] == ["added", "removed"]
    assert [x[0] for x in audits(engine, vip["id"])] == ["tag.applied", "tag.removed"]


def test_a_rule_tag_cannot_be_changed_by_a_step(engine):
    club = setup_program(engine, members=1)
    make_tag(engine, "buyers", definition=RULE)
    with UnitOfWork(engine) as uow, pytest.raises(Conflict):
        tags.add_tag_in(uow.c, actor=SYSTEM, customer_id=club["members"][0]["customer_id"],
                        tag="buyers", now=NOW)


def test_a_step_naming_an_unknown_or_a_rule_tag_is_refused(engine):
    setup_program(engine)
    make_tag(engine, "buyers", definition=RULE)
    body = AutomationIn.model_validate({
        "code": "tagged", "name": "tagged", "program": "BB", "definition": {
            "trigger": {"type": "first_purchase"},
            "steps": [{"action": "add_tag", "tag": "nope"},
                      {"action": "remove_tag", "tag": "buyers"}]}})
    with UnitOfWork(engine) as uow, pytest.raises(ValidationFailed) as exc:
        service.create(uow=uow, actor=SYSTEM, body=body, now=NOW)
    assert sorted((e.field, e.reason) for e in exc.value.fields) == [
        ("definition.steps.0.tag", "automation_tag_unknown"),
        ("definition.steps.1.tag", "automation_tag_is_rule")]
