"""Simulation runs: a what-if replay requested from the staff pages runs in a background
thread of the server and leaves its progress and its answer here (docs/loyalty-reports.md,
"Simulation runs")."""

from sqlalchemy import Column, Float, ForeignKey, Index, String, Table

from patron.db import IdType, JSONType, UTCDateTime, metadata

loyalty_simulation_runs = Table(
    "loyalty_simulation_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False, index=True),
    # Only the user who asked sees a run: its figures were computed in that user's store scope.
    Column("user_id", IdType, nullable=True),
    Column("requested_by", String(120), nullable=False),
    Column("request", JSONType, nullable=False),  # the SimulationIn, as JSON
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("step", String(32), nullable=True),
    Column("progress", Float, nullable=False),  # 0 to 1
    Column("requested_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # The process running it and its last sign of life: a run whose runner is gone is shown
    # as failed by whoever reads it.
    Column("runner", String(200), nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("error", JSONType, nullable=True),  # {"code", "params", "fields"}
    Column("result", JSONType, nullable=True),
    Index("ix_loyalty_simulation_runs_user", "user_id", "requested_at"),
)
