"""A file read in a second process while the first records gives exactly what reading it
in-process gives: the same rows in every table ingestion writes, the same error report, the same
counts, and the same on a re-run; on SQLite and PostgreSQL."""

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from patron.customers.tables import customer_figures, customers, identities
from patron.db import metadata
from patron.imports import service
from patron.imports.tables import import_errors
from patron.orders.tables import order_lines, order_payments, orders
from patron.org.service import clear_reference_cache
from patron.security.model import SYSTEM
from tests.factories import make_org
from tests.integration.test_import_orders import HEADER, import_file, write_csv, write_xlsx

pytestmark = pytest.mark.skipif(not service.pipeline_available(),
                                reason="no fork: the import reads in-process")

# Organisation tables survive a reset, so that store and channel ids stay the same; the audit
# trail is append-only (and compared by nobody here).
KEPT = {"channels", "stores", "brands", "regions"}


@pytest.fixture(autouse=True)
def small_files_take_the_reader_too(monkeypatch):
    monkeypatch.setattr(service, "PIPELINE_MIN_ROWS", 10)


def count_readers(monkeypatch) -> list[int]:
    started: list[int] = []
    real = service._ReaderProcess.__enter__

    def enter(self: Any) -> Any:
        started.append(1)
        return real(self)

    monkeypatch.setattr(service._ReaderProcess, "__enter__", enter)
    return started


def rows_of_a_file() -> list[list[str]]:
    """Orders of repeat customers over several chunks, a two-line order, and bad rows in the
    middle of the file and of a chunk."""
    rows = []
    for i in range(40):
        at = f"2026-03-{1 + i % 28:02d} {8 + i % 12:02d}:{i % 60:02d}:00"
        phone = f"138{i % 9:08d}" if i % 5 else ""
        store = "SH01" if i % 3 else "BJ01"
        rows.append([f"C-{i}", "pos", store, at, phone, "cash", "LATTE", "coffee", "1", "28",
                     "", ""])
        if i % 4 == 0:
            rows.append([f"C-{i}", "pos", store, "", "", "", "CAKE", "bakery", "2", "10", "1",
                         ""])
        if i == 17:
            rows.append(["B-1", "pos", "XX99", at, "", "", "LATTE", "", "1", "28", "", ""])
            rows.append(["B-2", "pos", "SH01", at, "", "", "LATTE", "", "lots", "28", "", ""])
            rows.append(["B-3", "pos", "SH01", "someday", "", "", "LATTE", "", "1", "28", "",
                         ""])
            rows.append(["B-4", "pos", "SH01", at, "12345", "", "LATTE", "", "1", "28", "", ""])
    return rows


def snapshot(uow: Any) -> dict[str, list[Any]]:
    """What ingestion wrote, without the columns that differ from run to run by design
    (the time of writing, values encrypted under a fresh nonce)."""
    def rows(table: Any, skip: set[str], order: list[Any]) -> list[Any]:
        cols = [c for c in table.columns if c.name not in skip]
        return [tuple(r) for r in uow.c.execute(select(*cols).order_by(*order))]

    return {
        "orders": rows(orders, {"created_at"}, [orders.c.id]),
        "order_lines": rows(order_lines, set(), [order_lines.c.order_id, order_lines.c.line_no]),
        "order_payments": rows(order_payments, {"id"}, [order_payments.c.order_id]),
        "customers": rows(customers, {"name", "birthday", "phone", "email", "updated_at"},
                          [customers.c.id]),
        "identities": rows(identities, {"value", "created_at"}, [identities.c.id]),
        "customer_figures": rows(customer_figures, {"updated_at"},
                                 [customer_figures.c.customer_id]),
        "import_errors": rows(import_errors, {"id", "job_id"},
                              [import_errors.c.row_number, import_errors.c.id]),
    }


def reset(uow: Any) -> None:
    """Empty everything but the organisation, with ids starting again where they started."""
    names = [t.name for t in metadata.sorted_tables
             if t.name not in KEPT and not t.name.startswith("audit")]
    if uow.c.dialect.name == "postgresql":
        quoted = ", ".join(f'"{n}"' for n in names)
        uow.c.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY"))
    else:
        for name in reversed(names):
            uow.c.execute(text(f'DELETE FROM "{name}"'))  # noqa: S608 - our own table names
        if uow.c.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'")
                         ).first():
            uow.c.execute(text("DELETE FROM sqlite_sequence WHERE name NOT IN "
                               "('channels', 'stores', 'brands', 'regions')"))
    uow.commit()
    clear_reference_cache()


def job_summary(job: Any) -> tuple[Any, ...]:
    return (job.status, job.error, job.rows_read, job.rows_total, job.orders_created,
            job.orders_duplicate, job.rows_rejected, job.errors_stored,
            [(e.row, e.column, e.reason, e.params, e.value, e.message) for e in job.errors])


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_pipelined_import_writes_and_reports_exactly_what_the_in_process_one_does(
        uow, tmp_path, monkeypatch, kind):
    make_org(uow)
    readers = count_readers(monkeypatch)
    write = write_csv if kind == "csv" else write_xlsx
    path = write(tmp_path / f"orders.{kind}", HEADER, rows_of_a_file())
    results = {}
    for pipeline in (False, True):
        reset(uow)
        seen: list[Any] = []
        first = import_file(uow, path, chunk_orders=7, pipeline=pipeline, progress=seen.append)
        contents = snapshot(uow)
        again = import_file(uow, path, chunk_orders=7, pipeline=pipeline)
        results[pipeline] = (job_summary(first), contents, job_summary(again), snapshot(uow),
                             [(p.rows_read, p.orders_created, p.rows_rejected) for p in seen])
    assert readers == [1, 1]  # the two pipelined imports, none of the others
    in_process, pipelined = results[False], results[True]
    assert pipelined == in_process
    first, contents, again, after_rerun, progress = pipelined
    assert first[4:7] == (40, 0, 4)  # created, duplicate, rejected
    assert [(row, column, reason) for row, column, reason, *_ in first[8]] == [
        (25, "store", "unknown_store"), (26, "quantity", "decimal_parsing"),
        (27, "purchased_at", "datetime_parsing"), (28, "phone", "phone_invalid")]
    assert again[4:7] == (0, 40, 4)
    assert after_rerun["orders"] == contents["orders"]
    assert len(progress) == 8  # seven chunks of seven orders (44 in all), then the end


def test_a_reader_starts_only_when_asked_for_and_the_file_is_large(uow, tmp_path, monkeypatch):
    make_org(uow)
    started = count_readers(monkeypatch)
    monkeypatch.setattr(service, "PIPELINE_MIN_ROWS", 10_000)
    path = write_csv(tmp_path / "orders.csv", HEADER, rows_of_a_file())
    import_file(uow, path, pipeline=True)
    monkeypatch.setattr(service, "PIPELINE_MIN_ROWS", 10)
    import_file(uow, path)
    assert started == []
    job = import_file(uow, path, pipeline=True)
    assert started == [1]
    assert (job.orders_duplicate, job.rows_rejected) == (40, 4)


def test_a_file_that_turns_unreadable_midway_fails_the_job_at_the_same_point(uow, tmp_path,
                                                                             monkeypatch):
    make_org(uow)
    rows = [[f"U-{i}", "pos", "SH01", "2026-03-02 10:30", "", "", "LATTE", "", "1", "28", "", ""]
            for i in range(3000)]
    path = write_csv(tmp_path / "cut.csv", HEADER, rows)
    with open(path, "ab") as f:
        f.write("U-x,pos,SH01,2026-03-02 10:30,,,LATTE,,1,28,,\n".encode("gb18030")
                + "门店".encode("gb18030") + b"\n")
    readers = count_readers(monkeypatch)
    job = import_file(uow, path, chunk_orders=1000, pipeline=True)
    assert readers == [1]
    assert (job.status, job.error, job.orders_created) == ("failed", "import_bad_encoding", 2000)


def test_a_reader_that_dies_fails_the_job_without_hanging(uow, tmp_path, monkeypatch):
    make_org(uow)

    def die(*_args: Any) -> None:
        os._exit(3)

    monkeypatch.setattr(service, "_read_in_child", die)
    monkeypatch.setattr(service._ReaderProcess, "POLL_SECONDS", 0.05)
    path: Path = write_csv(tmp_path / "orders.csv", HEADER, rows_of_a_file())
    job = import_file(uow, path, pipeline=True)
    assert (job.status, job.error, job.orders_created) == ("failed", "import_failed", 0)
    assert service.get_job(uow=uow, actor=SYSTEM, job_id=job.id).status == "failed"
