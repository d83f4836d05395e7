"""Group commit for single-order requests.

Each till posts one order per request. Written one by one, every order pays a transaction, a
commit (a disk flush on PostgreSQL) and a dozen round trips. The batcher lets concurrent
requests of one server process share them: while one group of orders is being written, new
requests queue; the next group takes all that queued (up to ``MAX_BATCH``), as soon as one of
``MAX_IN_FLIGHT`` writing slots is free. Under low load a group is a single order and nothing
waits; under high load groups grow with the time a write takes. Each request still gets its
own outcome: created, duplicate, conflict or rejected.

Orders of different callers (API keys, users) are written in separate groups, because the
caller's store and channel scope applies to every order of a ``record_orders`` call.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread

from patron.db import UnitOfWork, get_engine
from patron.orders.schemas import OrderIn, OrderOutcome
from patron.orders.service import record_orders
from patron.security.model import Actor

MAX_BATCH = 200
# Groups one process writes at the same time. With two, a request arriving during a write
# starts at once in the free slot instead of waiting for that write to end (two groups meet as
# groups of two server processes always have: figures rows locked in key order, the audit head
# last, a lost race retried). Measured on the 2-core machine (docs/benchmarks.md): two slots
# halve the groups and so cost 20-30 % more CPU per order, and the CPU is what runs out first;
# one slot stays the default.
MAX_IN_FLIGHT = 1


@dataclass
class _Pending:
    order: OrderIn
    actor: Actor
    future: asyncio.Future[OrderOutcome]


@dataclass
class OrderBatcher:
    max_batch: int = MAX_BATCH
    max_in_flight: int = MAX_IN_FLIGHT
    queue: list[_Pending] = field(default_factory=list)
    in_flight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def submit(self, order: OrderIn, actor: Actor) -> OrderOutcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[OrderOutcome] = loop.create_future()
        self.queue.append(_Pending(order, actor, future))
        self._start_writers(loop)
        return await future

    def _start_writers(self, loop: asyncio.AbstractEventLoop) -> None:
        while self.queue and self.in_flight < self.max_in_flight:
            batch, self.queue = self.queue[:self.max_batch], self.queue[self.max_batch:]
            self.in_flight += 1
            task = loop.create_task(self._write_batch(batch))
            self.tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self.tasks.discard)

    async def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            groups: dict[Any, list[_Pending]] = defaultdict(list)
            for p in batch:
                a = p.actor
                groups[(a.type, a.id, a.role, a.store_ids, a.channel_codes)].append(p)
            for group in groups.values():
                try:
                    outcomes = await to_thread.run_sync(_write, group)
                except Exception as exc:  # noqa: BLE001 - handed to each waiting request
                    for p in group:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                for p, outcome in zip(group, outcomes, strict=True):
                    if not p.future.done():
                        p.future.set_result(outcome)
        finally:
            self.in_flight -= 1
            # What queued while this batch was written goes next.
            self._start_writers(asyncio.get_running_loop())


def _write(group: list[_Pending]) -> list[OrderOutcome]:
    with UnitOfWork(get_engine()) as uow:
        outcomes = record_orders(uow=uow, orders_in=[p.order for p in group], source="api",
                                 actor=group[0].actor,
                                 request_ips=[p.actor.ip for p in group])
    # Outcome indexes are positions in the group; each request sees its order as index 0.
    return [o.model_copy(update={"index": 0}) for o in outcomes]
