"""Single-order API ingestion under concurrent connections, against a trivial endpoint of the
same server under the same load.

The server is the real one (``uvicorn patron.app:create_app --factory``, uvloop + httptools
when installed, the webhook worker off) on a free loopback port, on the PostgreSQL benchmark
database. The load comes from ``wrk`` (C, an event loop per thread: a few percent of a core
at these rates), driven by the Lua scripts in ``benchmarks/wrk/``, so that the figure is the
server's and not the load generator's. Without ``wrk`` (and no root to install it) the load
comes from this process (asyncio + httpx), which costs the server most of a core; the table
says which generator was used. ``GET /healthz`` under the same settings is the anchor.

Each connection count is tried in turn; the figure is the fastest level at which both targets
held (at least 1,000 orders/s, every response a 201, p99 under 50 ms), else the best throughput
at which every response was a 201; the level is named in the figure and printed. After each
run the orders in the database are counted against the 201 responses. The CPU time of the
server's processes and of the database backends serving it is read from /proc around each
run and reported per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks.data import OrderStream
from benchmarks.results import percentile
from patron.db import UnitOfWork, get_engine
from patron.orders.tables import orders as orders_table
from patron.security import service as security
from patron.security.model import SYSTEM

WRK_DIR = Path(__file__).parent / "wrk"
# The single-order API's targets (issue 2): both at the same connection count.
RATE_TARGET = 1000.0  # orders/s, every response 201
P99_TARGET_MS = 50.0
WRK_THREADS = 2
WARMUP_SECONDS = 2.0

# A request: method, path, JSON body bytes or None.
Request = tuple[str, str, bytes | None]


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: Counter[int]
    p50: float
    p99: float
    # Socket errors and timeouts (wrk); a request that failed this way has no status.
    errors: dict[str, int] = field(default_factory=dict)
    # External ids of orders sent whose response had not come back when the run stopped.
    inflight: list[str] = field(default_factory=list)
    # CPU seconds spent during the run by the server's processes and by the database's
    # backends serving it (from /proc; None where /proc is not readable).
    server_cpu: float | None = None
    db_cpu: float | None = None

    def cpu_us(self, seconds: float | None) -> float | None:
        """CPU per answered request, in microseconds."""
        return seconds / self.requests * 1e6 if seconds is not None and self.requests else None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def only(self, status: int) -> bool:
        """Every request answered, and with this status."""
        return (self.requests > 0 and self.statuses.get(status, 0) == self.requests
                and not any(self.errors.values()))

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "seconds": round(self.seconds, 3),
                "rate": round(self.rate, 1), "p50_ms": round(self.p50, 3),
                "p99_ms": round(self.p99, 3),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "errors": {k: v for k, v in self.errors.items() if v},
                "cut_off_at_end": len(self.inflight),
                "server_cpu_us_per_request": _round(self.cpu_us(self.server_cpu)),
                "db_cpu_us_per_request": _round(self.cpu_us(self.db_cpu))}


def meets_targets(orders: LoadResult) -> bool:
    return orders.only(201) and orders.rate >= RATE_TARGET and orders.p99 < P99_TARGET_MS


def _us(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f} us"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_implementation() -> tuple[list[str], str]:
    """uvicorn's options and a label: uvloop + httptools when both are installed."""
    if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"):
        return ["--loop", "uvloop", "--http", "httptools"], "uvloop+httptools"
    return ["--loop", "asyncio", "--http", "h11"], "asyncio+h11"


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    implementation: str
    url: str = ""

    def pids(self) -> list[int]:
        """The server's process and its workers."""
        return [self.proc.pid, *_descendants(self.proc.pid)]

    def db_pids(self) -> list[int]:
        """The database backends connected to the benchmark database, but this one."""
        if not self.url.startswith("postgresql"):
            return []
        with get_engine(self.url).connect() as conn:
            return [int(r[0]) for r in conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")]


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU of each process (/proc/<pid>/stat), in seconds."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


@contextlib.contextmanager
def cpu_of(srv: Server | None) -> Iterator[list[float | None]]:
    """Yields [server CPU s, database CPU s], filled in when the block ends: the CPU of the
    processes present at both ends (a process that ends meanwhile is not counted)."""
    result: list[float | None] = [None, None]
    if srv is None or not Path("/proc/self/stat").exists():
        yield result
        return
    groups = [srv.pids(), srv.db_pids()]
    before = [cpu_seconds(g) for g in groups]
    yield result
    # Backends opened during the run (the pool growing) count from zero.
    groups[1] = sorted(set(groups[1]) | set(srv.db_pids()))
    for i, group in enumerate(groups):
        after = cpu_seconds(group)
        result[i] = sum(v - before[i].get(pid, 0.0) for pid, v in after.items())


@contextlib.contextmanager
def server(url: str, *, workers: int) -> Iterator[Server]:
    """Run the application in its own process(es) on a free loopback port."""
    port = free_port()
    env = {**os.environ, "PATRON_DATABASE_URL": url, "PATRON_WEBHOOKS_WORKER": "0",
           "PATRON_ANALYTICS_REFRESH_AT": "off"}  # no nightly refresh during the load
    options, implementation = server_implementation()
    cmd = [sys.executable, "-m", "uvicorn", "patron.app:create_app", "--factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           *options, "--log-level", "warning", "--no-access-log"]
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
        yield Server(base, proc, implementation, url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def create_key(url: str) -> str:
    """A cashier key allowed every store and channel."""
    with UnitOfWork(get_engine(url)) as uow:
        _id, key = security.create_api_key(uow=uow, actor=SYSTEM, name="benchmark",
                                           store_ids=[], channel_codes=[], role="cashier")
    return key


def find_wrk(log: Callable[[str], None] = lambda _m: None) -> str | None:
    """The ``wrk`` binary; installed from the Debian package when missing and we are root."""
    found = shutil.which("wrk")
    if found or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("wrk is not installed: apt-get install -y wrk ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "wrk"],
                ["sh", "-c", "apt-get update && apt-get install -y wrk"]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=600, check=True)  # noqa: S603
        except (OSError, subprocess.SubprocessError):
            continue
        if shutil.which("wrk"):
            return shutil.which("wrk")
    return None


# --- load generators -------------------------------------------------------------------------

class Wrk:
    """Load from ``wrk`` with the Lua scripts in benchmarks/wrk (they print one JSON line)."""

    def __init__(self, binary: str, *, key: str, customers: int, stores: int,
                 threads: int = WRK_THREADS) -> None:
        self.binary, self.key, self.threads = binary, key, threads
        self.customers, self.stores = customers, stores

    def label(self, connections: int) -> str:
        return f"wrk -t{min(self.threads, connections)} -c{connections}"

    def _run(self, base: str, script: str, *, connections: int, duration: float,
             env: dict[str, str]) -> LoadResult:
        cmd = [self.binary, f"-t{min(self.threads, connections)}", f"-c{connections}",
               f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency",
               "-s", str(WRK_DIR / script), base]
        full_env = {**os.environ, "LUA_PATH": f"{WRK_DIR}/?.lua;;", **env}
        done = subprocess.run(cmd, env=full_env, capture_output=True, text=True,  # noqa: S603
                              timeout=duration + 60, check=False)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PATRON_WRK_JSON ")),
                    None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}"
                               f"{done.stdout[-1000:]}")
        doc = json.loads(line.split(" ", 1)[1])
        return LoadResult(doc["requests"], doc["seconds"],
                          Counter({int(k): v for k, v in doc["statuses"].items()}),
                          doc["p50_ms"], doc["p99_ms"], errors=doc["errors"],
                          inflight=doc["inflight"])

    def healthz(self, base: str, *, connections: int, duration: float) -> LoadResult:
        return self._run(base, "healthz.lua", connections=connections, duration=duration,
                         env={})

    def orders(self, base: str, *, connections: int, duration: float, tag: str) -> LoadResult:
        return self._run(base, "orders.lua", connections=connections, duration=duration,
                         env={"PATRON_API_KEY": self.key, "PATRON_WRK_RUN": tag,
                              "PATRON_WRK_TRACK_IDS": "1",
                              "PATRON_WRK_CUSTOMERS": str(self.customers),
                              "PATRON_WRK_STORES": str(self.stores)})

    def paths(self, base: str, paths: list[str], *, connections: int,
              duration: float) -> LoadResult:
        with contextlib.ExitStack() as stack:
            import tempfile

            f = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".txt"))
            f.write("\n".join(paths) + "\n")
            f.flush()
            return self._run(base, "paths.lua", connections=connections, duration=duration,
                             env={"PATRON_API_KEY": self.key, "PATRON_WRK_PATHS": f.name})


class InProcess:
    """The fallback: asyncio + httpx in this process, sharing the cores with the server."""

    def __init__(self, *, key: str, stream: OrderStream) -> None:
        self.key, self.stream = key, stream

    def label(self, connections: int) -> str:
        return f"in-process httpx, {connections} clients"

    def healthz(self, base: str, *, connections: int, duration: float) -> LoadResult:
        return drive(base, self.key, lambda _i: ("GET", "/healthz", None),
                     clients=connections, duration=duration)

    def orders(self, base: str, *, connections: int, duration: float, tag: str) -> LoadResult:
        def make(i: int) -> Request:
            body = self.stream.order(20_000_000 + i, prefix=f"{tag}-")
            return "POST", "/api/v1/orders", json.dumps(body).encode()
        return drive(base, self.key, make, clients=connections, duration=duration)

    def paths(self, base: str, paths: list[str], *, connections: int,
              duration: float) -> LoadResult:
        return drive(base, self.key, lambda i: ("GET", paths[i % len(paths)], None),
                     clients=connections, duration=duration)


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
    return LoadResult(len(latencies), elapsed, statuses, percentile(latencies, 50),
                      percentile(latencies, 99))


def drive(base: str, key: str, make: Callable[[int], Request], *, clients: int,
          duration: float, max_requests: int = 200_000) -> LoadResult:
    return asyncio.run(_drive(base, key, make, clients=clients, duration=duration,
                              max_requests=max_requests))


# --- the measurement -------------------------------------------------------------------------

def count_orders(url: str, tag: str, cut_off: list[str]) -> tuple[int, int]:
    """Orders of this run in the database, and how many of them are among the orders whose
    response was cut off when the load stopped."""
    prefix = f"{tag}-"
    with get_engine(url).connect() as conn:
        total = conn.execute(select(func.count()).where(
            orders_table.c.external_id.startswith(prefix, autoescape=True))).scalar_one()
        written = 0
        for i in range(0, len(cut_off), 500):
            written += conn.execute(select(func.count()).where(
                orders_table.c.external_id.in_(cut_off[i:i + 500]))).scalar_one()
    return int(total), int(written)


def lookup_route_exists() -> bool:
    from patron.app import create_app

    return any(getattr(r, "path", "") == "/api/v1/customers/lookup"
               for r in create_app().routes)


def lookup_paths(phones: list[str]) -> list[str]:
    from urllib.parse import quote

    return [f"/api/v1/customers/lookup?kind=phone&value={quote(p)}" for p in phones]


def load_generator(url: str, stream: OrderStream, *, stores: int,
                   log: Callable[[str], None] = lambda _m: None) -> Wrk | InProcess:
    key = create_key(url)
    binary = find_wrk(log)
    if binary is None:
        log("wrk unavailable: falling back to the in-process httpx load (it shares the cores)")
        return InProcess(key=key, stream=stream)
    return Wrk(binary, key=key, customers=stream.customers, stores=stores)


def run(url: str, generator: Wrk | InProcess, *, workers: int, connections: list[int],
        duration: float, phones: list[str], run_no: int,
        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    out: dict[str, Any] = {"workers": workers, "settings": [],
                           "generator": "wrk" if isinstance(generator, Wrk) else "httpx"}
    with server(url, workers=workers) as srv:
        out["server"] = srv.implementation
        # Warm-up: connections, statement caches, the key and store caches; not counted.
        warmup = min(WARMUP_SECONDS, duration)
        generator.healthz(srv.base, connections=connections[0], duration=warmup)
        generator.orders(srv.base, connections=connections[0], duration=warmup,
                         tag=f"WARM{run_no}")
        for conns in connections:
            tag = f"API{run_no}c{conns}"
            with cpu_of(srv) as cpu:
                health = generator.healthz(srv.base, connections=conns, duration=duration)
            health.server_cpu, health.db_cpu = cpu
            with cpu_of(srv) as cpu:
                orders = generator.orders(srv.base, connections=conns, duration=duration,
                                          tag=tag)
            orders.server_cpu, orders.db_cpu = cpu
            # Orders cut off by the end of the run may still be written: let them land.
            time.sleep(1.0)
            in_db, cut_written = count_orders(url, tag, orders.inflight)
            created = orders.statuses.get(201, 0)
            setting = {"connections": conns, "load": generator.label(conns),
                       "healthz": health, "orders": orders, "orders_in_db": in_db,
                       "cut_off_written": cut_written,
                       # Every 201 has its order, no order without a 201 (but those cut off).
                       "db_matches": in_db - cut_written == created}
            out["settings"].append(setting)
            log(f"  {workers} worker(s), {conns} connections: {orders.rate:,.0f} orders/s "
                f"(p50 {orders.p50:.1f} ms, p99 {orders.p99:.1f} ms, statuses "
                f"{dict(orders.statuses)}), /healthz {health.rate:,.0f}/s "
                f"(p99 {health.p99:.1f} ms); CPU per order: server "
                f"{_us(orders.cpu_us(orders.server_cpu))}, database "
                f"{_us(orders.cpu_us(orders.db_cpu))}, per /healthz "
                f"{_us(health.cpu_us(health.server_cpu))}; "
                f"in the database {in_db} = {created} x 201 + {cut_written} cut off")
        ok = [s for s in out["settings"] if s["orders"].only(201) and s["db_matches"]]
        # Both targets must hold at one level: such a level is reported first (the fastest
        # of them); otherwise the best rate at which every response was a 201.
        both = [s for s in ok if meets_targets(s["orders"])]
        pool = both or ok or out["settings"]
        out["best"] = max(pool, key=lambda s: s["orders"].rate)
        out["best_ok"] = bool(ok)
        out["targets_met_at"] = [s["connections"] for s in both]
        best = out["best"]
        log(f"  {workers} worker(s): reported at {best['connections']} connections ("
            + ("both targets held there" if both else
               "every response 201, best rate; both targets held at no level" if ok else
               "no level had every response 201") + ")")
        if phones and lookup_route_exists():
            lookup_conns = 4
            paths = lookup_paths(phones)
            out["lookup_connections"] = lookup_conns
            out["lookup_healthz"] = generator.healthz(srv.base, connections=lookup_conns,
                                                      duration=duration / 2)
            out["lookup"] = generator.paths(srv.base, paths, connections=lookup_conns,
                                            duration=duration / 2)
    return out
