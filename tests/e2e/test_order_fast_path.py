"""The single-order fast path (patron.orders.fast_path) answers exactly as the route does:
the same status, headers and body for every kind of request, whichever of the two answers it;
and it does answer the happy path itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from patron.app import create_app
from patron.db import UnitOfWork, get_engine
from patron.orders import fast_path
from patron.orders.tables import orders
from patron.security.tables import audit_log
from tests.factories import order


def _apps() -> tuple[Any, Any]:
    fast = create_app()
    slow = create_app()
    slow.user_middleware = [m for m in slow.user_middleware
                            if m.cls is not fast_path.SingleOrderFastPath]
    assert len(slow.user_middleware) == len(fast.user_middleware) - 1
    return fast, slow


async def _send(app: Any, body: Any, headers: dict[str, str], query: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://patron") as client:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await client.post(f"/api/v1/orders{query}", content=content, headers=headers)


def _post(app: Any, body: Any, headers: dict[str, str], query: str = "") -> httpx.Response:
    return asyncio.run(_send(app, body, headers, query))


def _same(a: httpx.Response, b: httpx.Response, *, ignore: tuple[str, ...] = ()) -> None:
    assert a.status_code == b.status_code
    ja, jb = a.json(), b.json()
    for name in ignore:
        ja.pop(name, None)
        jb.pop(name, None)
    assert ja == jb
    skip = {"content-length"} if ignore else set()
    assert ([(k, v) for k, v in a.headers.items() if k not in skip]
            == [(k, v) for k, v in b.headers.items() if k not in skip])


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Status codes the fast path answered itself (the rest went to the route)."""
    seen: list[int] = []
    real = fast_path._answer

    async def spy(scope: Any, body: bytes) -> Any:
        response = await real(scope, body)
        if response is not None:
            seen.append(response.status_code)
        return response

    monkeypatch.setattr(fast_path, "_answer", spy)
    return seen


def test_fast_and_routed_answers_are_the_same(db_url, pos_key, answered):
    fast, slow = _apps()
    auth = {"Authorization": f"Bearer {pos_key}", "Content-Type": "application/json"}
    phone = {"phone": "13900001111"}

    # The key's first use goes to the route, which looks it up and caches it.
    first = _post(fast, order("FP-0", identifiers=phone), auth)
    assert first.status_code == 201 and answered == []

    # New orders: same answer but for their own ids; the fast path answered its own.
    a = _post(fast, order("FP-1", identifiers=phone), auth)
    b = _post(slow, order("FP-2", identifiers=phone), auth)
    assert (a.status_code, answered) == (201, [201])
    _same(a, b, ignore=("external_id", "order_id"))
    assert a.json()["customer_id"] == b.json()["customer_id"] == first.json()["customer_id"]

    # Retries, conflicts and every refusal: byte for byte the same.
    cases: list[tuple[Any, dict[str, str], str]] = [
        (order("FP-1", identifiers=phone), auth, ""),  # a retry: 200
        (order("FP-1", identifiers=phone, discount="1.00"), auth, ""),  # 409
        (order("FP-3", store="BJ01"), auth, ""),  # out of the key's stores: 422
        (order("FP-4", channel="nowhere"), auth, ""),  # unknown channel: 422
        ({**order("FP-5"), "lines": [], "total": None}, auth, ""),  # neither lines nor total
        ({**order("FP-6"), "surprise": 1}, auth, "?lang=en"),  # unknown field, in English
        ({**order("FP-7"), "purchased_at": "yesterday"}, auth, ""),
        ([order("FP-8")], auth, ""),  # not an object
        (b'{"external_id": "FP-9", ', auth, ""),  # malformed JSON
        (order("FP-10"), {**auth, "Content-Type": "text/plain"}, ""),
        (order("FP-11"), {"Content-Type": "application/json"}, ""),  # no key: 401
        (order("FP-12"), {**auth, "Authorization": "Bearer pk_nope_x"}, ""),  # refused key
        (order("FP-13"), {**auth, "Accept-Language": "en"}, "?lang=zh"),  # a valid one: 201
    ]
    for body, headers, query in cases:
        fast_answer = _post(fast, body, headers, query)
        routed = _post(slow, body, headers, query)
        if fast_answer.status_code == 201:  # the routed twin was a retry of it
            assert routed.status_code == 200
            assert routed.json()["order_id"] == fast_answer.json()["order_id"]
            continue
        _same(fast_answer, routed)
    assert answered == [201, 200, 201]  # FP-1, its retry, FP-13: the rest went to the route

    with UnitOfWork(get_engine(db_url)) as uow:
        ids = [r[0] for r in uow.c.execute(select(orders.c.external_id))]
        assert sorted(ids) == ["FP-0", "FP-1", "FP-13", "FP-2"]
        audited = uow.c.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "orders.recorded")).scalar_one()
        assert audited == 4  # one entry per recorded order, whichever path took it


def test_a_body_over_the_limit_sent_in_chunks_is_still_a_413(db_url, pos_key, monkeypatch):
    # The body limit refuses a chunked body while it is read, which the fast path does first:
    # the route must still answer the translated 413, with nothing written.
    from patron.config import get_settings

    monkeypatch.setenv("PATRON_MAX_JSON_BODY_MB", "1")
    get_settings.cache_clear()
    try:
        fast, slow = _apps()
        big = json.dumps({**order("FP-big"), "padding": "x" * (2 * 1024 * 1024)}).encode()

        async def chunked(app: Any) -> httpx.Response:
            async def chunks() -> Any:
                for i in range(0, len(big), 65536):
                    yield big[i:i + 65536]

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://patron") as c:
                return await c.post("/api/v1/orders?lang=en", content=chunks(), headers={
                    "Authorization": f"Bearer {pos_key}", "Content-Type": "application/json"})

        _post(fast, order("FP-warm"), {"Authorization": f"Bearer {pos_key}",
                                       "Content-Type": "application/json"})  # caches the key
        answers = [asyncio.run(chunked(app)) for app in (fast, slow)]
        for r in answers:
            assert r.status_code == 413
            assert r.json()["error"]["code"] == "request_too_large"
        _same(*answers)
    finally:
        get_settings.cache_clear()
    with get_engine(db_url).connect() as conn:
        assert [r[0] for r in conn.execute(select(orders.c.external_id))] == ["FP-warm"]
