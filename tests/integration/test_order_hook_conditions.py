"""The configuration probe of order recording (patron.orders.hooks.orders_recorded): a hook is
skipped only when its area's ``orders_hook_applies`` condition is false, and that condition is
false exactly when the area's own configuration read (the one its hook starts with) finds
nothing. Walked through every state an area's configuration goes through, on both databases."""

from __future__ import annotations

from sqlalchemy import event, select, update

from patron.automations import hooks as automation_hooks
from patron.automations import service as automations
from patron.db import UnitOfWork
from patron.loyalty import hooks as loyalty_hooks
from patron.loyalty.earning import active_programs
from patron.loyalty.tables import loyalty_programs
from patron.orders.service import record_orders
from patron.security.model import SYSTEM
from patron.tags import hooks as tag_hooks
from patron.tags import service as tags
from patron.webhooks import service as webhooks
from patron.webhooks.model import EVENTS
from tests.automation_factories import create as create_automation
from tests.automation_factories import setup_program
from tests.factories import order


def _answers(engine) -> dict[str, tuple[bool, bool]]:  # type: ignore[no-untyped-def]
    """Per area: (the probe's condition, whether the area's own read found anything)."""
    with engine.connect() as conn:
        def probe(condition) -> bool:  # type: ignore[no-untyped-def]
            return bool(conn.execute(select(condition)).scalar_one())

        subs = webhooks.subscribers(conn, EVENTS)
        return {
            "loyalty": (probe(loyalty_hooks.orders_hook_applies()), bool(active_programs(conn))),
            "tags": (probe(tag_hooks.orders_hook_applies()), bool(tags.rule_tags(conn))),
            "automations": (probe(automation_hooks.orders_hook_applies()),
                            bool(automation_hooks.active_order_automations(conn))),
            # Active endpoints subscribed to no event of an order still answer yes: the
            # subscribers are then read and found empty, as before.
            "webhooks": (probe(webhooks.any_active_endpoint()),
                         any(subs.values()) or probe(webhooks.any_active_endpoint())),
        }


def _agree(engine) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    answers = _answers(engine)
    for area, (condition, found) in answers.items():
        assert condition == found, (area, condition, found)
    return {area: condition for area, (condition, _found) in answers.items()}


def _configuration_reads(engine, body) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if any(t in statement for t in ("loyalty_programs", "tags", "automations",
                                        "webhook_endpoints")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        with UnitOfWork(engine) as uow:
            out = record_orders(uow=uow, orders_in=[body], source="api", actor=SYSTEM)
        assert out[0].status == "created"
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return seen


def test_each_area_s_condition_is_its_own_configuration_read(engine):
    setup_program(engine, members=1)  # org, an active loyalty program, message templates
    assert _agree(engine)["loyalty"] is True
    with UnitOfWork(engine) as uow:
        uow.c.execute(update(loyalty_programs).values(status="closed"))
        uow.commit()
    assert _agree(engine) == {"loyalty": False, "tags": False, "automations": False,
                              "webhooks": False}
    # Nothing configured: one statement asks every area, and no area reads its configuration.
    reads = _configuration_reads(engine, order("P1", identifiers={"phone": "13800000001"}))
    assert len(reads) == 1 and reads[0].lstrip().upper().startswith("SELECT EXISTS")

    with UnitOfWork(engine) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="vip", name="VIP")  # manual: not a rule
    assert _agree(engine)["tags"] is False
    with UnitOfWork(engine) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="buyers", name="Buyers",
                        definition={"match": "all", "conditions": [
                            {"type": "purchases", "measure": "orders", "op": "gte", "value": 1}]})
    assert _agree(engine)["tags"] is True

    with UnitOfWork(engine) as uow:
        uow.c.execute(update(loyalty_programs).values(status="active"))
        uow.commit()
    auto = create_automation(engine, "each-order", {"type": "every_order"}, activate=False)
    assert _agree(engine)["automations"] is False  # a draft enters nobody
    with UnitOfWork(engine) as uow:
        automations.set_status(uow=uow, actor=SYSTEM, code="each-order", status="active")
    assert _agree(engine)["automations"] is True
    with UnitOfWork(engine) as uow:
        automations.set_status(uow=uow, actor=SYSTEM, code="each-order", status="paused")
    assert _agree(engine)["automations"] is False
    assert auto["code"] == "each-order"

    with UnitOfWork(engine) as uow:
        endpoint = webhooks.create_endpoint(uow=uow, actor=SYSTEM, url="https://example.com/h",
                                            events=["order.recorded"])
    assert _agree(engine)["webhooks"] is True
    with UnitOfWork(engine) as uow:
        webhooks.update_endpoint(uow=uow, actor=SYSTEM, endpoint_id=int(endpoint["id"]),
                                 active=False)
    assert _agree(engine)["webhooks"] is False


def test_configured_areas_still_act_on_the_orders(engine):
    # The probe lets through what is configured: a rule tag tags the buyer, an active
    # endpoint gets its delivery, in the order's transaction.
    setup_program(engine, members=0)
    with UnitOfWork(engine) as uow:
        tags.create_tag(uow=uow, actor=SYSTEM, code="buyers", name="Buyers",
                        definition={"match": "all", "conditions": [
                            {"type": "purchases", "measure": "orders", "op": "gte", "value": 1}]})
    with UnitOfWork(engine) as uow:
        webhooks.create_endpoint(uow=uow, actor=SYSTEM, url="https://example.com/h",
                                 events=["order.recorded"])
    reads = _configuration_reads(engine, order("P2", identifiers={"phone": "13800000002"}))
    assert len(reads) > 1  # the probe, then the configured areas' own reads
    from patron.tags.tables import customer_tags
    from patron.webhooks.tables import webhook_deliveries

    with engine.connect() as conn:
        assert conn.execute(select(customer_tags)).first() is not None
        events = [r.event for r in conn.execute(select(webhook_deliveries.c.event))]
    assert events == ["order.recorded"]
