"""Importing order files (CSV, Excel) through the one ingestion path, and column mappings.

``start_import`` checks the file (type, encoding, header against the canonical columns or a
saved mapping) and creates the job; ``run_import`` streams the rows, groups them into orders and
records them ~2,000 orders per transaction with :func:`patron.orders.service.record_orders`,
which makes a re-run import nothing twice. After each chunk the job row carries the progress and
the bad rows go to ``import_errors``; one audit entry is written per job.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import functools
import gc
import io
import logging
import multiprocessing
import queue
import re
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, func, insert, select, update

from patron.db import UnitOfWork, get_engine, utcnow
from patron.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from patron.gc_pause import collection_paused
from patron.i18n import t
from patron.imports.model import (
    ColumnMapping,
    FileOrder,
    FileRow,
    HeaderError,
    Layout,
    RowError,
    build_order,
    cell_text,
    check_mapping,
    group_orders,
    outcome_errors,
    read_row,
    resolve_header,
    text_row_reader,
)
from patron.imports.schemas import (
    ColumnMappingCreate,
    ColumnMappingRead,
    ColumnMappingUpdate,
    ImportErrorRead,
    ImportJobRead,
)
from patron.imports.tables import column_mappings, import_errors, import_jobs
from patron.orders.service import record_orders
from patron.security import audit
from patron.security.model import SYSTEM, Actor

log = logging.getLogger(__name__)

CHUNK_ORDERS = 2000
# With ``pipeline=True``, files of at least this many rows are read in a second process while
# the first records (see _ReaderProcess); smaller ones are read in-process, where starting it
# costs more than it gains. Not the default: on the shared 2-core machine it measured slower
# (docs/benchmarks.md, "Imports").
PIPELINE_MIN_ROWS = 10_000
# Chunks read ahead and waiting for the recording process: bounds the reader's memory.
READ_AHEAD_CHUNKS = 2
# A job with no committed chunk for this long has lost its process (a chunk takes seconds).
STALE_AFTER = dt.timedelta(minutes=10)
MAX_STORED_ERRORS = 10_000
CALAMINE_MAX_BYTES = 8 * 1024**2
_SNIFF_BYTES = 64 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # the pre-2007 .xls format


class ImportFileError(ValidationFailed):
    """The file cannot be imported at all (a 4xx; the CLI exits non-zero)."""


# --- Reading files ---------------------------------------------------------------------------


@dataclass(slots=True)
class ImportProgress:
    rows_read: int
    rows_total: int | None
    orders_created: int
    orders_duplicate: int
    rows_rejected: int


class OrderFile:
    """A CSV or .xlsx file read row by row in bounded memory: ``csv`` over a decoding stream,
    openpyxl's read-only mode (which parses the sheet XML as it goes) for Excel."""

    def __init__(self, path: Path, filename: str) -> None:
        self.path = path
        self.kind = detect_format(path, filename)
        self._close: list[Callable[[], None]] = []
        self.rows_total: int | None = None
        self._rows: Iterator[tuple[int, list[Any]]] = iter(())
        self.header: list[str] = []

    def __enter__(self) -> OrderFile:
        try:
            raw = self._csv_rows() if self.kind == "csv" else self._xlsx_rows()
            self._rows = self._after_header(raw)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for close in self._close:
            close()

    def _csv_rows(self) -> Iterator[tuple[int, list[Any]]]:
        encoding = _csv_encoding(self.path)
        binary = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
        self._close.append(binary.close)
        text = io.TextIOWrapper(binary, encoding=encoding, newline="")
        return enumerate(csv.reader(text), start=1)

    def _xlsx_rows(self) -> Iterator[tuple[int, list[Any]]]:
        # calamine reads a sheet ~7x faster than openpyxl but holds all of it in memory (about
        # 13x the file's size), so it serves files up to a size whose sheet fits comfortably;
        # openpyxl's read-only mode streams larger ones in bounded memory.
        if self.path.stat().st_size <= CALAMINE_MAX_BYTES:
            return self._xlsx_rows_calamine()
        return self._xlsx_rows_openpyxl()

    def _xlsx_rows_calamine(self) -> Iterator[tuple[int, list[Any]]]:
        from python_calamine import CalamineWorkbook

        try:
            wb = CalamineWorkbook.from_path(str(self.path))
            self._close.append(wb.close)
            sheet = wb.get_sheet_by_index(0)
        except Exception as exc:  # a corrupt or foreign zip fails in many ways
            raise ImportFileError("import_unreadable_file") from exc
        self.rows_total = max(sheet.height - 1, 0) or None
        # Rows come from the sheet's first row (leading blank rows included), so they count
        # as the sheet numbers them.
        return ((number, cells) for number, cells in enumerate(sheet.iter_rows(), start=1))

    def _xlsx_rows_openpyxl(self) -> Iterator[tuple[int, list[Any]]]:
        import openpyxl

        handle = open(self.path, "rb")  # noqa: SIM115 - closed in __exit__
        self._close.append(handle.close)
        try:
            # A file object rather than a path: openpyxl would refuse a name not ending .xlsx.
            wb = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        except Exception as exc:  # a corrupt or foreign zip fails in many ways
            raise ImportFileError("import_unreadable_file") from exc
        self._close.insert(0, wb.close)
        if not wb.worksheets:
            raise ImportFileError("import_empty_file")
        ws = wb.worksheets[0]
        self.rows_total = max((ws.max_row or 1) - 1, 0) or None
        # The stored dimensions may be wrong (files written by other tools); read to the end.
        ws.reset_dimensions()  # type: ignore[union-attr]
        return ((number, list(cells)) for number, cells in
                enumerate(ws.iter_rows(values_only=True), start=1))

    def _after_header(self, raw: Iterator[tuple[int, list[Any]]]) -> Iterator[
            tuple[int, list[Any]]]:
        try:
            for _number, cells in raw:
                header = [str(cell_text(c) or "") for c in cells]
                if any(header):
                    self.header = header
                    return raw
        except UnicodeDecodeError as exc:
            raise ImportFileError("import_bad_encoding") from exc
        except csv.Error as exc:
            raise ImportFileError("import_unreadable_file") from exc
        raise ImportFileError("import_empty_file")

    @staticmethod
    def _guarded(raw: Iterator[tuple[int, list[Any]]]) -> Iterator[tuple[int, list[Any]]]:
        try:
            yield from raw
        except UnicodeDecodeError as exc:
            raise ImportFileError("import_bad_encoding") from exc
        except csv.Error as exc:
            raise ImportFileError("import_unreadable_file") from exc

    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        """(row number as the user sees it, cells) after the header."""
        return self._guarded(self._rows)


def detect_format(path: Path, filename: str) -> str:
    """"csv" or "xlsx", from the content first and the name second."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ImportFileError("import_unreadable_file") from exc
    if size == 0:
        raise ImportFileError("import_empty_file")
    suffix = Path(filename).suffix.lower()
    if head.startswith(_ZIP_MAGIC):
        return "xlsx"
    if head.startswith(_OLE_MAGIC) or suffix == ".xls":
        raise ImportFileError("import_xls_not_supported")
    if suffix in (".csv", ".txt", ""):
        return "csv"
    raise ImportFileError("import_unsupported_file", params={"suffix": suffix})


def _csv_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) as the format says; GB18030, which Excel in China writes
    when saving as CSV, is accepted too rather than refusing such a file."""
    with open(path, "rb") as f:
        sample = f.read(_SNIFF_BYTES)
    if b"\x00" in sample:
        raise ImportFileError("import_unsupported_file", params={"suffix": path.suffix})
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8-sig"
    except UnicodeDecodeError:
        pass
    try:
        sample.decode("gb18030")
        return "gb18030"
    except UnicodeDecodeError as exc:
        raise ImportFileError("import_bad_encoding") from exc


def _estimate_rows(path: Path, kind: str, known: int | None) -> int | None:
    if kind != "csv":
        return known
    lines = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(lines - 1, 0) or None  # less the header; exact once the job is done


# --- Mappings --------------------------------------------------------------------------------


def _mapping_read(row: Any) -> ColumnMappingRead:
    return ColumnMappingRead(id=row.id, name=row.name, columns=row.columns or {},
                             defaults=row.defaults or {}, ignored=row.ignored or [],
                             datetime_format=row.datetime_format, created_at=row.created_at,
                             updated_at=row.updated_at)


def _domain_mapping(m: ColumnMappingRead) -> ColumnMapping:
    return ColumnMapping(name=m.name, columns=dict(m.columns), defaults=dict(m.defaults),
                         ignored=frozenset(m.ignored), datetime_format=m.datetime_format)


def _check_can_import(actor: Actor) -> None:
    if not actor.can("import"):
        raise Forbidden("forbidden", params={"permission": "import"})


def list_mappings(*, uow: UnitOfWork) -> list[ColumnMappingRead]:
    rows = uow.c.execute(select(column_mappings).order_by(column_mappings.c.name))
    return [_mapping_read(r) for r in rows]


def get_mapping(*, uow: UnitOfWork, mapping_id: int | None = None,
                name: str | None = None) -> ColumnMappingRead:
    q = select(column_mappings)
    q = q.where(column_mappings.c.id == mapping_id) if mapping_id is not None else q.where(
        column_mappings.c.name == name)
    row = uow.c.execute(q).first()
    if row is None:
        if name is not None:
            raise NotFound("import_unknown_mapping", params={"name": name})
        raise NotFound("not_found")
    return _mapping_read(row)


def _validate_mapping(name: str, columns: dict[str, str], defaults: dict[str, str],
                      ignored: list[str], datetime_format: str | None) -> None:
    errors = check_mapping(columns=columns, defaults=defaults, ignored=ignored,
                           datetime_format=datetime_format)
    if not name.strip():
        errors.insert(0, FieldError("name", "missing"))
    if errors:
        raise ValidationFailed("validation_failed", fields=errors)


def _name_taken(uow: UnitOfWork, name: str, other_than: int | None = None) -> bool:
    q = select(column_mappings.c.id).where(column_mappings.c.name == name)
    if other_than is not None:
        q = q.where(column_mappings.c.id != other_than)
    return uow.c.execute(q).first() is not None


def create_mapping(*, uow: UnitOfWork, actor: Actor,
                   mapping: ColumnMappingCreate) -> ColumnMappingRead:
    """Save a named column mapping; names are unique."""
    _check_can_import(actor)
    _validate_mapping(mapping.name, mapping.columns, mapping.defaults, mapping.ignored,
                      mapping.datetime_format)
    if _name_taken(uow, mapping.name):
        raise Conflict("already_exists", fields=[FieldError("name", "already_exists")])
    now = utcnow()
    new_id = uow.c.execute(insert(column_mappings).values(
        name=mapping.name, columns=mapping.columns, defaults=mapping.defaults,
        ignored=mapping.ignored, datetime_format=mapping.datetime_format, created_at=now,
    ).returning(column_mappings.c.id)).scalar_one()
    audit.record(uow.c, actor, "import_mapping.created", entity="column_mapping",
                 entity_id=new_id, details=mapping.model_dump())
    uow.commit()
    return get_mapping(uow=uow, mapping_id=int(new_id))


def update_mapping(*, uow: UnitOfWork, actor: Actor, mapping_id: int,
                   changes: ColumnMappingUpdate) -> ColumnMappingRead:
    _check_can_import(actor)
    current = get_mapping(uow=uow, mapping_id=mapping_id)
    given = changes.model_dump(exclude_unset=True)
    merged = {**current.model_dump(), **{k: v for k, v in given.items()
                                         if v is not None or k == "datetime_format"}}
    _validate_mapping(merged["name"], merged["columns"], merged["defaults"], merged["ignored"],
                      merged["datetime_format"])
    if _name_taken(uow, merged["name"], other_than=mapping_id):
        raise Conflict("already_exists", fields=[FieldError("name", "already_exists")])
    uow.c.execute(update(column_mappings).where(column_mappings.c.id == mapping_id).values(
        name=merged["name"], columns=merged["columns"], defaults=merged["defaults"],
        ignored=merged["ignored"], datetime_format=merged["datetime_format"],
        updated_at=utcnow()))
    audit.record(uow.c, actor, "import_mapping.updated", entity="column_mapping",
                 entity_id=mapping_id, details=given)
    uow.commit()
    return get_mapping(uow=uow, mapping_id=mapping_id)


def delete_mapping(*, uow: UnitOfWork, actor: Actor, mapping_id: int) -> None:
    """Delete a mapping; past jobs that used it keep their results but no longer name it."""
    _check_can_import(actor)
    current = get_mapping(uow=uow, mapping_id=mapping_id)
    uow.c.execute(update(import_jobs).where(import_jobs.c.mapping_id == mapping_id)
                  .values(mapping_id=None))
    uow.c.execute(delete(column_mappings).where(column_mappings.c.id == mapping_id))
    audit.record(uow.c, actor, "import_mapping.deleted", entity="column_mapping",
                 entity_id=mapping_id, details={"name": current.name})
    uow.commit()


# --- Jobs ------------------------------------------------------------------------------------


def actor_key(actor: Actor) -> str:
    return f"{actor.type}:{actor.name}"[:120]


def save_upload(*, source: IO[bytes], filename: str) -> Path:
    """Copy an uploaded file under ``<data dir>/imports`` and return where it is."""
    from patron.config import get_settings

    settings = get_settings()
    cap = settings.import_max_upload_mb * 1024 * 1024  # PATRON_IMPORT_MAX_UPLOAD_MB
    folder = settings.data_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.\-]+", "_", Path(filename or "upload").name)[-100:]
    target = folder / f"{uuid.uuid4().hex}_{safe}"
    written = 0
    with open(target, "wb") as out:
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            if written > cap:
                out.close()
                target.unlink(missing_ok=True)
                raise ImportFileError("import_file_too_large")
            out.write(block)
    return target


def start_import(*, uow: UnitOfWork, actor: Actor, path: Path, filename: str,
                 mapping: str | None = None) -> int:
    """Check that the file can be imported (type, encoding, columns, at least one row) and
    create its job, queued. Raises :class:`ImportFileError` naming the problem otherwise."""
    _check_can_import(actor)
    column_mapping: ColumnMapping | None = None
    mapping_id: int | None = None
    if mapping:
        try:
            found = get_mapping(uow=uow, name=mapping)
        except NotFound as exc:
            raise ImportFileError("import_unknown_mapping", params={"name": mapping}, fields=[
                FieldError("mapping", "import_unknown_mapping", {"name": mapping})]) from exc
        column_mapping, mapping_id = _domain_mapping(found), found.id
        uow.rollback()  # no transaction (on SQLite: no write lock) while the file is read
    with OrderFile(path, filename) as f:
        if next(_data_rows(f, _layout(f, column_mapping)), None) is None:
            raise ImportFileError("import_no_rows")
    job_id = uow.c.execute(insert(import_jobs).values(
        filename=Path(filename).name[:300], mapping_id=mapping_id, status="queued",
        created_by=actor_key(actor), created_at=utcnow(),
    ).returning(import_jobs.c.id)).scalar_one()
    uow.commit()
    return int(job_id)


def _layout(f: OrderFile, mapping: ColumnMapping | None) -> Layout:
    try:
        return resolve_header(f.header, mapping)
    except HeaderError as exc:
        raise ImportFileError("import_bad_columns", fields=exc.errors) from exc


def _data_rows(f: OrderFile, layout: Layout) -> Iterator[Any]:
    # Every cell of a CSV file is text: read without a type check per cell.
    read = text_row_reader(layout) if f.kind == "csv" else functools.partial(
        read_row, layout=layout)
    for number, cells in f.rows():
        row = read(number, cells)
        if row is not None:
            yield row


def _built_chunks(f: OrderFile, layout: Layout, chunk_orders: int) -> Iterator[list[FileOrder]]:
    """The file's orders, built from their rows, a chunk at a time (in this process)."""
    groups = group_orders(_data_rows(f, layout))
    while True:
        chunk = list(islice(groups, chunk_orders))
        if not chunk:
            return
        yield [build_order(rows, layout.datetime_format) for rows in chunk]


def pipeline_available() -> bool:
    """Whether a reader process can be started cheaply: forked, it inherits the loaded modules,
    the file name and the mapping instead of importing and unpickling them (a spawned one
    would take about a second to start, as long as a 5,000-order file takes to import)."""
    return "fork" in multiprocessing.get_all_start_methods()


def _packed(order: FileOrder) -> tuple[Any, ...]:
    # Plain tuples pickle and unpickle several times faster than the dataclasses.
    return (order.payload, [(r.number, r.values) for r in order.rows], order.line_rows,
            order.errors)


def _unpacked(packed: tuple[Any, ...]) -> FileOrder:
    payload, rows, line_rows, errors = packed
    return FileOrder([FileRow(number, values) for number, values in rows], payload, line_rows,
                     errors)


def _read_in_child(path: Path, filename: str, layout: Layout, chunk_orders: int,
                   out: Any) -> None:
    """The reader process: the file's chunks of built orders into ``out``, then ("end",), or
    ("failed", message key) where the file turned out unreadable, ("crashed", traceback) on
    anything else. A put blocks while READ_AHEAD_CHUNKS chunks wait."""
    gc.disable()  # short-lived, and everything it allocates is freed by reference counting
    try:
        with OrderFile(path, filename) as f:
            for chunk in _built_chunks(f, layout, chunk_orders):
                out.put(("chunk", [_packed(o) for o in chunk]))
        out.put(("end",))
    except ImportFileError as exc:
        out.put(("failed", exc.message))
    except BaseException:  # the parent logs it and fails the job
        out.put(("crashed", traceback.format_exc()))


class _ReaderProcess:
    """Reading, grouping and building a file's orders in a second process while this one
    records the chunk before: parsing is pure Python and holds the GIL, so a thread would not
    overlap it with the recording. Chunks come back in file order through a bounded queue;
    what the reader fails on (an undecodable row midway) fails the job at the same point as
    in-process reading, after the chunks before it were recorded."""

    POLL_SECONDS = 1.0

    def __init__(self, path: Path, filename: str, layout: Layout, chunk_orders: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._queue: Any = ctx.Queue(maxsize=READ_AHEAD_CHUNKS)
        self._process = ctx.Process(target=_read_in_child, name="patron-import-reader",
                                    args=(path, filename, layout, chunk_orders, self._queue),
                                    daemon=True)

    def __enter__(self) -> _ReaderProcess:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():  # stopped early: the recording failed
            self._process.kill()
        self._process.join()
        self._queue.close()

    def chunks(self) -> Iterator[list[FileOrder]]:
        while True:
            message = self._next()
            if message[0] == "chunk":
                yield [_unpacked(o) for o in message[1]]
            elif message[0] == "end":
                return
            elif message[0] == "failed":
                raise ImportFileError(message[1])
            else:
                raise RuntimeError(f"the import's reader process failed:\n{message[1]}")

    def _next(self) -> tuple[Any, ...]:
        while True:
            try:
                return self._queue.get(timeout=self.POLL_SECONDS)  # type: ignore[no-any-return]
            except queue.Empty:
                if self._process.is_alive():
                    continue
            try:  # it may have exited right after its last put
                return self._queue.get(timeout=self.POLL_SECONDS)  # type: ignore[no-any-return]
            except queue.Empty:
                raise RuntimeError("the import's reader process stopped, exit code "
                                   f"{self._process.exitcode}") from None


@dataclass(slots=True)
class _Counters:
    rows_read: int = 0
    orders_created: int = 0
    orders_duplicate: int = 0
    rows_rejected: int = 0
    errors_stored: int = 0


def run_import(*, uow: UnitOfWork, actor: Actor, job_id: int, path: Path,
               progress: Callable[[ImportProgress], None] | None = None,
               chunk_orders: int = CHUNK_ORDERS, pipeline: bool = False) -> ImportJobRead:
    """Import a started job's file. Each chunk of orders is one transaction; the job row shows
    the progress after each. A file that turns out unreadable midway fails the job (what was
    recorded stays recorded, and a re-run skips it). Returns the finished job.

    ``pipeline``: read a file of ``PIPELINE_MIN_ROWS`` rows or more in a second process while
    this one records, where a process can be forked; it pays only when a core is idle. The
    results are the same either way."""
    job = uow.c.execute(select(import_jobs).where(import_jobs.c.id == job_id)).one()
    mapping = None
    if job.mapping_id is not None:
        mapping = _domain_mapping(get_mapping(uow=uow, mapping_id=job.mapping_id))
    # Reading the file's header and counting its lines holds no transaction: on SQLite it
    # would hold the one write lock that the tills' orders need too.
    uow.rollback()
    counts = _Counters()
    rows_total: int | None = None
    failure: str | None = None
    try:
        with OrderFile(path, job.filename) as f:
            layout = _layout(f, mapping)
            rows_total = _estimate_rows(path, f.kind, f.rows_total)
            _set_job(uow, job_id, status="running", rows_total=rows_total,
                     heartbeat_at=utcnow())
            uow.commit()
            with contextlib.ExitStack() as stack:
                if pipeline and (rows_total or 0) >= PIPELINE_MIN_ROWS and pipeline_available():
                    reader = stack.enter_context(
                        _ReaderProcess(path, job.filename, layout, chunk_orders))
                    chunks = reader.chunks()
                else:
                    chunks = _built_chunks(f, layout, chunk_orders)
                while True:
                    # Reading, grouping and recording a chunk allocate many short-lived
                    # objects: no cyclic collection in between (see patron.gc_pause).
                    with collection_paused():
                        chunk = next(chunks, None)
                        if chunk is None:
                            break
                        _import_chunk(uow, actor, job_id, layout, chunk, counts)
                    if progress:
                        progress(ImportProgress(counts.rows_read, rows_total,
                                                counts.orders_created, counts.orders_duplicate,
                                                counts.rows_rejected))
    except ImportFileError as exc:
        failure = exc.message
    except Exception:
        log.exception("import job %s failed", job_id)
        failure = "import_failed"
    if uow.c.in_transaction():
        uow.rollback()
    status = "failed" if failure else "done"
    _set_job(uow, job_id, status=status, error=failure, finished_at=utcnow(),
             rows_total=counts.rows_read if not failure else rows_total, **_counter_values(counts))
    audit.record(uow.c, actor, "import.finished", entity="import_job", entity_id=job_id,
                 outcome="ok" if not failure else "failed",
                 details={"filename": job.filename, "mapping": mapping.name if mapping else None,
                          "status": status, "error": failure, **_counter_values(counts)})
    uow.commit()
    if progress:
        progress(ImportProgress(counts.rows_read, counts.rows_read, counts.orders_created,
                                counts.orders_duplicate, counts.rows_rejected))
    return get_job(uow=uow, actor=actor, job_id=job_id, errors_limit=0)


def run_uploaded_import(*, actor: Actor, job_id: int, path: Path) -> None:
    """Run a job in its own unit of work (a background task), then delete the uploaded file
    when the job is done; a failed job's file stays for a re-run from the command line."""
    with UnitOfWork(get_engine()) as uow:
        job = run_import(uow=uow, actor=actor, job_id=job_id, path=path)
    if job.status == "done":
        path.unlink(missing_ok=True)


def _counter_values(c: _Counters) -> dict[str, int]:
    return {"rows_read": c.rows_read, "orders_created": c.orders_created,
            "orders_duplicate": c.orders_duplicate, "rows_rejected": c.rows_rejected}


def _set_job(uow: UnitOfWork, job_id: int, **values: Any) -> None:
    uow.c.execute(update(import_jobs).where(import_jobs.c.id == job_id).values(**values))


def _import_chunk(uow: UnitOfWork, actor: Actor, job_id: int, layout: Layout,
                  built: list[FileOrder], counts: _Counters) -> None:
    """Record a chunk and, in the same transaction, its bad rows and the job's progress: the
    job's counts never disagree with what was committed, and a chunk costs one commit."""
    sendable = [o for o in built if o.payload is not None]
    settled: list[_Counters] = []

    def settle(conn: Any, outcomes: list[Any]) -> None:
        # Runs again if record_orders retries the chunk: it starts from ``counts`` each time.
        after = _Counters(**{f: getattr(counts, f) for f in _Counters.__slots__})
        after.rows_read += sum(len(o.rows) for o in built)
        errors: list[RowError] = []
        for o in built:
            if o.payload is None:
                errors.extend(o.errors)
                after.rows_rejected += len(o.rows)
        for o, outcome in zip(sendable, outcomes, strict=True):
            if outcome.status == "created":
                after.orders_created += 1
            elif outcome.status == "duplicate":
                after.orders_duplicate += 1
            elif outcome.status == "conflict":
                after.rows_rejected += len(o.rows)
                errors.append(RowError(o.first_row, "order_id", "import_order_conflict", {
                    "fields": ", ".join(d["field"] for d in outcome.differences)},
                    value=outcome.external_id))
            else:
                after.rows_rejected += len(o.rows)
                errors.extend(outcome_errors(o, outcome.errors))
        room = MAX_STORED_ERRORS - after.errors_stored
        if errors and room > 0:
            errors.sort(key=lambda e: e.row)
            conn.execute(insert(import_errors), [
                {"job_id": job_id, "row_number": e.row,
                 "column": layout.column_name(e.column) or None,
                 "reason": e.reason, "params": {k: str(v) for k, v in e.params.items()},
                 "value": e.value} for e in errors[:room]])
            after.errors_stored += min(room, len(errors))
        conn.execute(update(import_jobs).where(import_jobs.c.id == job_id).values(
            heartbeat_at=utcnow(), **_counter_values(after)))
        settled[:] = [after]

    if sendable:
        record_orders(uow=uow, orders_in=[o.payload for o in sendable],  # type: ignore[misc]
                      source="import", actor=actor, audit_each=False, before_commit=settle)
    else:
        settle(uow.c, [])
        uow.commit()
    after = settled[0]
    for name in _Counters.__slots__:
        setattr(counts, name, getattr(after, name))


def _job_read(row: Any, lang: str, errors: list[Any], errors_stored: int) -> ImportJobRead:
    return ImportJobRead(
        id=row.id, filename=row.filename, mapping=row.mapping_name, status=row.status,
        rows_total=row.rows_total, rows_read=row.rows_read, orders_created=row.orders_created,
        orders_duplicate=row.orders_duplicate, rows_rejected=row.rows_rejected, error=row.error,
        error_message=t(row.error, lang) if row.error else None, created_by=row.created_by,
        created_at=row.created_at, finished_at=row.finished_at, errors_stored=errors_stored,
        errors=[ImportErrorRead(row=e.row_number, column=e.column, reason=e.reason,
                                message=t(e.reason, lang, **(e.params or {})),
                                params=e.params or {}, value=e.value) for e in errors])


def _jobs_query(actor: Actor) -> Any:
    q = select(import_jobs, column_mappings.c.name.label("mapping_name")).outerjoin(
        column_mappings, column_mappings.c.id == import_jobs.c.mapping_id)
    if actor.store_ids is not None:
        # A store-scoped actor sees only its own imports: their errors quote its rows.
        q = q.where(import_jobs.c.created_by == actor_key(actor))
    return q


def get_job(*, uow: UnitOfWork, actor: Actor, job_id: int, lang: str | None = None,
            errors_offset: int = 0, errors_limit: int = 100) -> ImportJobRead:
    """A job's progress and counts, with a page of its bad rows in file order."""
    sweep_interrupted(uow=uow)
    row = uow.c.execute(_jobs_query(actor).where(import_jobs.c.id == job_id)).first()
    if row is None:
        raise NotFound("not_found")
    stored = uow.c.execute(select(func.count()).select_from(import_errors).where(
        import_errors.c.job_id == job_id)).scalar_one()
    errors = []
    if errors_limit > 0:
        errors = list(uow.c.execute(
            select(import_errors).where(import_errors.c.job_id == job_id)
            .order_by(import_errors.c.row_number, import_errors.c.id)
            .offset(errors_offset).limit(errors_limit)))
    return _job_read(row, lang or actor.language, errors, int(stored))


def sweep_interrupted(*, uow: UnitOfWork, now: dt.datetime | None = None) -> int:
    """Mark failed the jobs whose process stopped without finishing them: queued or running,
    and no committed chunk for ``STALE_AFTER``. What they recorded stays recorded; importing
    the file again skips it. Returns how many were marked."""
    now = now or utcnow()
    j = import_jobs.c
    stale = (j.status.in_(("queued", "running"))
             & (func.coalesce(j.heartbeat_at, j.created_at) < now - STALE_AFTER))
    ids = [int(i) for i in uow.c.execute(select(j.id).where(stale)).scalars()]
    if not ids:
        return 0
    uow.c.execute(update(import_jobs).where(j.id.in_(ids), stale)
                  .values(status="failed", error="import_interrupted", finished_at=now))
    for job_id in ids:
        audit.record(uow.c, SYSTEM, "import.interrupted", entity="import_job", entity_id=job_id,
                     outcome="failed", details={"stale_after_s": STALE_AFTER.total_seconds()})
    uow.commit()
    return len(ids)


def list_jobs(*, uow: UnitOfWork, actor: Actor, limit: int = 50,
              lang: str | None = None) -> list[ImportJobRead]:
    """The latest jobs first, without their bad rows."""
    sweep_interrupted(uow=uow)
    rows = uow.c.execute(_jobs_query(actor).order_by(import_jobs.c.id.desc()).limit(limit))
    return [_job_read(r, lang or actor.language, [], 0) for r in rows]
