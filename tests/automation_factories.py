"""Builders for automation and campaign tests: the loyalty test program with members who
consent to SMS, a coupon template, a message template using Patron's variables, automations."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, func, select

from patron.automations import service
from patron.automations.engine import run_due
from patron.automations.schemas import AutomationIn
from patron.automations.tables import automation_entries, automation_step_runs
from patron.db import UnitOfWork
from patron.messaging import service as messaging
from patron.messaging.tables import messages
from patron.security.model import SYSTEM
from tests.coupon_factories import make_template
from tests.factories import T0, make_org
from tests.loyalty_factories import enrol, make_program

NOW = T0 + dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)
PHONES = [f"1380000{n:04d}" for n in range(1, 200)]


def setup_program(engine: Engine, members: int = 3, *, sms: bool = True) -> dict[str, Any]:
    """Org, program BB, ``members`` members consenting to SMS (or not), coupon template TEN,
    message template 'welcome' (name, tier, points, coupon code and expiry)."""
    with UnitOfWork(engine) as uow:
        make_org(uow)
        make_program(uow)
    out: dict[str, Any] = {"members": []}
    with UnitOfWork(engine) as uow:
        for phone in PHONES[:members]:
            out["members"].append(enrol(uow, phone, marketing={"sms": sms},
                                        name=f"会员{phone[-2:]}"))
    with UnitOfWork(engine) as uow:
        out["coupon"] = make_template(uow, now=T0 - 30 * DAY)
    with UnitOfWork(engine) as uow:
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "welcome", "variables": ["name", "tier", "points", "coupon_code",
                                             "coupon_expires_on"],
            "body_zh": "{{ name }}，您是{{ tier }}，积分 {{ points }}。券码 {{ coupon_code }}，"
                       "{{ coupon_expires_on }} 前有效。",
            "body_en": "{{ name }}: {{ coupon_code }} until {{ coupon_expires_on }}"})
        messaging.create_template(uow=uow, actor=SYSTEM, values={
            "code": "hello", "variables": ["name", "points"],
            "body_zh": "{{ name }}，您有 {{ points }} 积分。"})
    return out


def definition(trigger: dict[str, Any], steps: list[dict[str, Any]] | None = None,
               **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"trigger": trigger, **extra}
    if "variants" not in extra:
        out["steps"] = steps if steps is not None else [
            {"action": "send_message", "channel": "sms", "template": "hello"}]
    return out


def create(engine: Engine, code: str, trigger: dict[str, Any],
           steps: list[dict[str, Any]] | None = None, *, activate: bool = True,
           now: dt.datetime = NOW, **extra: Any) -> dict[str, Any]:
    body = AutomationIn.model_validate({"code": code, "name": f"auto {code}", "program": "BB",
                                        "definition": definition(trigger, steps, **extra)})
    with UnitOfWork(engine) as uow:
        out = service.create(uow=uow, actor=SYSTEM, body=body, now=now)
    if activate:
        with UnitOfWork(engine) as uow:
            out = service.set_status(uow=uow, actor=SYSTEM, code=code, status="active", now=now)
    return out


def run(engine: Engine, now: dt.datetime = NOW) -> Any:
    return run_due(engine=engine, now=now)


def entries(engine: Engine, automation_id: int | None = None) -> list[dict[str, Any]]:
    e = automation_entries.c
    q = select(automation_entries).order_by(e.id)
    if automation_id is not None:
        q = q.where(e.automation_id == automation_id)
    with UnitOfWork(engine, readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(q).mappings()]


def step_runs(engine: Engine) -> list[dict[str, Any]]:
    with UnitOfWork(engine, readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(select(automation_step_runs).order_by(
            automation_step_runs.c.id)).mappings()]


def outbox(engine: Engine) -> list[dict[str, Any]]:
    with UnitOfWork(engine, readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(select(messages).order_by(messages.c.id))
                .mappings()]


def count(engine: Engine, table: Any) -> int:
    with UnitOfWork(engine, readonly=True) as uow:
        return int(uow.c.execute(select(func.count()).select_from(table)).scalar_one())
