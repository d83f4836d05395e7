"""Automation tables: definitions and their versions, entries (one per automation, customer and
occurrence of the trigger), the steps each entry ran, the re-entry guard, and the arm every
customer was assigned to (control group, A/B variants) for automations and campaigns.

Exactly once: an entry is unique per (automation, customer, occurrence); a step is unique per
(entry, step) and runs in the same transaction as its action and the entry's advance, under the
entry's row lock (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).
"""

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from patron.db import IdType, JSONType, UTCDateTime, metadata
from patron.protection.redact import Redacted

automations = Table(
    "automations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("code", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("program_id", ForeignKey("loyalty_programs.id"), nullable=False, index=True),
    # draft | active | paused | archived
    Column("status", String(10), nullable=False),
    # The version new entries follow; entries keep the version they entered with.
    Column("version", Integer, nullable=False),
    Column("trigger_type", String(32), nullable=False),
    Column("activated_at", UTCDateTime, nullable=True),
    # When triggers that look at the data (not at orders) were last looked for, and the last
    # cron tick that fired: compare-and-set by the process that does it.
    Column("scanned_at", UTCDateTime, nullable=True),
    Column("last_tick_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", String(120), nullable=False),
    Index("ix_automations_status_trigger", "status", "trigger_type"),
    CheckConstraint("status IN ('draft', 'active', 'paused', 'archived')", name="status"),
)

automation_versions = Table(
    "automation_versions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("automation_id", ForeignKey("automations.id"), nullable=False),
    Column("version", Integer, nullable=False),
    # trigger, conditions, steps / variants, reentry_days, control_share (model.Definition)
    Column("definition", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    UniqueConstraint("automation_id", "version", name="uq_automation_versions"),
)

automation_entries = Table(
    "automation_entries",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("automation_id", ForeignKey("automations.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("member_id", IdType, nullable=True),
    # What triggered it: 'order:4711', 'birthday:2027', 'cron:2026-11-30T02:00:00+00:00'...
    Column("occurrence", String(120), nullable=False),
    # triggered -> active -> done | failed; or triggered -> not_eligible | skipped | held_out
    Column("state", String(12), nullable=False),
    Column("arm", String(16), nullable=True),
    # The next step to run and when.
    Column("step", Integer, nullable=False, server_default="0"),
    Column("due_at", UTCDateTime, nullable=False),
    Column("reason", String(48), nullable=True),
    Column("error", Redacted(), nullable=True),
    Column("triggered_at", UTCDateTime, nullable=False),
    Column("admitted_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    UniqueConstraint("automation_id", "customer_id", "occurrence",
                     name="uq_automation_entries_occurrence"),
    Index("ix_automation_entries_due", "state", "due_at"),
    Index("ix_automation_entries_automation", "automation_id", "state"),
    CheckConstraint("state IN ('triggered', 'active', 'done', 'failed', 'not_eligible', "
                    "'skipped', 'held_out')", name="state"),
    CheckConstraint("step >= 0", name="step"),
)

automation_step_runs = Table(
    "automation_step_runs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("entry_id", ForeignKey("automation_entries.id"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("kind", String(24), nullable=False),
    # done | waited | refused
    Column("outcome", String(10), nullable=False),
    # What the action wrote: coupon issue and code, loyalty operation, message id, delivery.
    Column("result", JSONType, nullable=False, default=dict),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("entry_id", "step", name="uq_automation_step_runs"),
)

# The re-entry guard: a customer enters an automation at most once per its period. Written by a
# conditional upsert, so that two processes admitting two occurrences at once let one through.
automation_reentry = Table(
    "automation_reentry",
    metadata,
    Column("automation_id", ForeignKey("automations.id"), primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), primary_key=True, index=True),
    Column("last_entered_at", UTCDateTime, nullable=False),
)

# The customers a 'joined a segment' trigger saw in the segment at its last look.
automation_segment_members = Table(
    "automation_segment_members",
    metadata,
    Column("automation_id", ForeignKey("automations.id"), primary_key=True),
    Column("customer_id", ForeignKey("customers.id"), primary_key=True, index=True),
    Column("since", UTCDateTime, nullable=False),
)

# The arm each customer was assigned to in an automation or a campaign (its control group or
# one of its variants), deterministic per customer (a hash of the source and the customer) and
# recorded the first time, so that a report can measure lift per arm.
experiment_assignments = Table(
    "experiment_assignments",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("source", String(10), nullable=False),  # automation | campaign
    Column("source_id", IdType, nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=False, index=True),
    Column("arm", String(16), nullable=False),
    # The hashed position that chose the arm, in millionths of [0, 1), and the shares then.
    Column("bucket", Integer, nullable=False),
    Column("shares", JSONType, nullable=False),
    Column("assigned_at", UTCDateTime, nullable=False),
    UniqueConstraint("source", "source_id", "customer_id", name="uq_experiment_assignments"),
    Index("ix_experiment_assignments_arm", "source", "source_id", "arm"),
    CheckConstraint("source IN ('automation', 'campaign')", name="source"),
)
