from sqlalchemy import Column, ForeignKey, Integer, String, Table, Text

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.redact import Redacted, RedactedJSON

# A named mapping from a file layout's column names to Patron's canonical columns, e.g. how a
# platform's export names them. Created in the UI without code.
column_mappings = Table(
    "column_mappings",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("columns", JSONType, nullable=False),  # {canonical: source column}
    Column("defaults", JSONType, nullable=False, default=dict),  # {canonical: constant}
    Column("ignored", JSONType, nullable=False, default=list),  # [source column]
    Column("datetime_format", String(64), nullable=True),  # strptime format of purchased_at
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=True),
)

import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("filename", String(300), nullable=False),
    Column("mapping_id", ForeignKey("column_mappings.id"), nullable=True, index=True),
    Column("status", String(12), nullable=False),  # queued | running | done | failed
    Column("rows_total", Integer, nullable=True),
    Column("rows_read", Integer, nullable=False, server_default="0"),
    Column("orders_created", Integer, nullable=False, server_default="0"),
    Column("orders_duplicate", Integer, nullable=False, server_default="0"),
    Column("rows_rejected", Integer, nullable=False, server_default="0"),
    Column("error", Redacted(), nullable=True),
    Column("created_by", String(120), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # Set at every committed chunk: a running job whose heartbeat stops was interrupted (its
    # process died) and is marked failed by the next reader.
    Column("heartbeat_at", UTCDateTime, nullable=True),
)

import_errors = Table(
    "import_errors",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("job_id", ForeignKey("import_jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("row_number", Integer, nullable=False),
    Column("column", String(64), nullable=True),
    Column("reason", Text, nullable=False),  # a message key in patron/i18n
    # The message's parameters and the cell as read: never a personal column's cell, and a phone,
    # e-mail or identity number in any other cell is masked (patron.protection.redact).
    Column("params", RedactedJSON, nullable=True),
    Column("value", Redacted(200), nullable=True),
)
