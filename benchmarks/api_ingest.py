"""Single-order API ingestion under concurrent clients, against a trivial endpoint of the same
server under the same load.

The server is the real one (``uvicorn patron.app:create_app --factory``) on a free loopback
port, on the PostgreSQL benchmark database. The load generator is this process (asyncio +
httpx, keep-alive connections); it shares the machine's cores with the server and PostgreSQL,
which is why ``GET /healthz`` under the same generator is the anchor: it measures what the
server + generator can do when the endpoint does no work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.data import OrderStream
from benchmarks.results import percentile
from patron.db import UnitOfWork, get_engine
from patron.security import service as security
from patron.security.model import SYSTEM

# A request: method, path, JSON body bytes or None.
Request = tuple[str, str, bytes | None]


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter[int]
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 3),
                "rate": round(self.rate, 1), "p50_ms": round(self.p50, 3),
                "p99_ms": round(self.p99, 3),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(url: str, *, workers: int) -> Iterator[str]:
    """Run the application in its own process(es) on a free loopback port."""
    port = free_port()
    env = {**os.environ, "PATRON_DATABASE_URL": url}
    cmd = [sys.executable, "-m", "uvicorn", "patron.app:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,  # noqa: S603
                            stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the server exited early:\n{err[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_key(url: str) -> str:
    with UnitOfWork(get_engine(url)) as uow:
        _id, key = security.create_api_key(uow=uow, actor=SYSTEM, name="benchmark",
                                           store_ids=[], channel_codes=[], role="cashier")
    return key


async def _drive(base: str, key: str, make: Callable[[int], Request], *, clients: int,
                 duration: float, max_requests: int) -> LoadResult:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counter = iter(range(max_requests))
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=30) as client:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() >= deadline:
                    return
                method, path, body = make(i)
                t0 = time.perf_counter()
                resp = await client.request(method, path, content=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[resp.status_code] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return LoadResult(len(latencies), elapsed, statuses, latencies)


def drive(base: str, key: str, make: Callable[[int], Request], *, clients: int,
          duration: float, max_requests: int = 200_000) -> LoadResult:
    return asyncio.run(_drive(base, key, make, clients=clients, duration=duration,
                              max_requests=max_requests))


def order_requests(stream: OrderStream, *, offset: int, prefix: str) -> Callable[[int], Request]:
    """Distinct new orders (their own external ids) from the same customers as the import."""
    def make(i: int) -> Request:
        body = stream.order(offset + i, prefix=prefix)
        return "POST", "/api/v1/orders", json.dumps(body).encode()
    return make


def healthz(_i: int) -> Request:
    return "GET", "/healthz", None


def lookup_route_exists() -> bool:
    from patron.app import create_app

    return any(getattr(r, "path", "") == "/api/v1/customers/lookup"
               for r in create_app().routes)


def lookup_requests(phones: list[str]) -> Callable[[int], Request]:
    from urllib.parse import quote

    def make(i: int) -> Request:
        value = quote(phones[i % len(phones)])
        return "GET", f"/api/v1/customers/lookup?kind=phone&value={value}", None
    return make


def run(url: str, stream: OrderStream, *, imported: int, workers: int, clients: int,
        duration: float, phones: list[str], run_no: int) -> dict[str, Any]:
    key = create_key(url)
    out: dict[str, Any] = {"workers": workers, "clients": clients}
    with server(url, workers=workers) as base:
        offset = 10_000_000 * (run_no + 1) + imported
        prefix = f"API{run_no}-"
        # Warm-up: connections, statement caches, the key cache; not counted.
        drive(base, key, healthz, clients=clients, duration=min(1.0, duration / 4))
        drive(base, key, order_requests(stream, offset=offset + 5_000_000, prefix="W" + prefix),
              clients=clients, duration=min(1.0, duration / 4))
        out["healthz"] = drive(base, key, healthz, clients=clients, duration=duration)
        out["orders"] = drive(base, key, order_requests(stream, offset=offset, prefix=prefix),
                              clients=clients, duration=duration)
        if phones and lookup_route_exists():
            lookup_clients = min(clients, 4)
            out["lookup_healthz"] = drive(base, key, healthz, clients=lookup_clients,
                                          duration=duration / 2)
            out["lookup"] = drive(base, key, lookup_requests(phones), clients=lookup_clients,
                                  duration=duration / 2)
    return out
