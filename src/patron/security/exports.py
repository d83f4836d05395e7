"""Exports over PATRON_EXPORT_APPROVAL_ROWS rows wait for an owner (issue 6 §2).

The first attempt records a pending request (the export's kind, format, masking and filters,
as a fingerprint) and is refused with ``export_needs_approval`` naming the request. An owner
approves or refuses it (``/api/v1/export-requests``, the page ``/admin/export-requests``). The
requester then asks for the same export again and gets it, once: the approval is used up.
Owners (permission ``exports.approve``) export without asking.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, NotFound, PatronError
from patron.security import audit
from patron.security.model import Actor
from patron.security.tables import export_requests


class ExportNeedsApproval(PatronError):
    status = 403
    code = "export_needs_approval"
    public_params = ("request_id", "rows")  # in the API's error body


def fingerprint(actor: Actor, kind: str, fmt: str, unmasked: bool,
                filters: dict[str, Any]) -> str:
    raw = json.dumps([actor.type, actor.id, actor.name, kind, fmt, unmasked, filters],
                     sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def check_approval(uow: UnitOfWork, *, actor: Actor, kind: str, fmt: str, unmasked: bool,
                   filters: dict[str, Any], rows: int) -> int | None:
    """Nothing to do for owners and small exports (None). Otherwise use an approved request
    for this very export (its id), or record / reuse a pending one and refuse."""
    from patron.config import get_settings

    if actor.can("exports.approve") or rows <= get_settings().export_approval_rows:
        return None
    conn = uow.c
    fp = fingerprint(actor, kind, fmt, unmasked, filters)
    approved = conn.execute(select(export_requests.c.id).where(
        export_requests.c.fingerprint == fp, export_requests.c.status == "approved")
        .order_by(export_requests.c.id).limit(1)).scalar()
    if approved is not None:
        conn.execute(update(export_requests).where(export_requests.c.id == approved)
                     .values(status="used"))
        return int(approved)
    pending = conn.execute(select(export_requests.c.id).where(
        export_requests.c.fingerprint == fp, export_requests.c.status == "pending")).scalar()
    if pending is None:
        pending = conn.execute(insert(export_requests).values(
            requested_by=actor.id if actor.type == "user" else None,
            requester_name=actor.name, kind=kind, fmt=fmt, unmasked=unmasked,
            filters=json.loads(json.dumps(filters, default=str)), fingerprint=fp, rows=rows,
            status="pending", requested_at=utcnow()).returning(export_requests.c.id)
        ).scalar_one()
        audit.record(conn, actor, "export.approval_requested", entity="export_request",
                     entity_id=pending, details={"export": kind, "rows": rows,
                                                 "unmasked": unmasked})
        uow.commit()
    raise ExportNeedsApproval("export_needs_approval",
                              params={"request_id": int(pending), "rows": rows})


def decide(*, uow: UnitOfWork, actor: Actor, request_id: int, approve: bool) -> None:
    conn = uow.c
    row = conn.execute(select(export_requests).where(export_requests.c.id == request_id)
                       ).first()
    if row is None:
        raise NotFound("not_found")
    if row.status != "pending":
        raise Conflict("export_request_decided", params={"status": row.status})
    conn.execute(update(export_requests).where(export_requests.c.id == request_id).values(
        status="approved" if approve else "refused", decided_by=actor.id,
        decided_at=utcnow()))
    audit.record(conn, actor, "export.approved" if approve else "export.refused",
                 entity="export_request", entity_id=request_id,
                 details={"requester": row.requester_name, "export": row.kind,
                          "rows": row.rows})
    uow.commit()


def list_requests(conn: Connection, *, status: str | None = None) -> list[dict[str, Any]]:
    q = select(export_requests)
    if status:
        q = q.where(export_requests.c.status == status)
    rows = conn.execute(q.order_by(export_requests.c.id.desc()).limit(200)).mappings().all()
    return [{"id": int(r["id"]), "requester": r["requester_name"], "kind": r["kind"],
             "format": r["fmt"], "unmasked": bool(r["unmasked"]), "filters": r["filters"],
             "rows": int(r["rows"]), "status": r["status"],
             "requested_at": r["requested_at"].isoformat(),
             "decided_at": r["decided_at"].isoformat() if r["decided_at"] else None}
            for r in rows]


def count_rows(conn: Connection, query: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(
        query.order_by(None).subquery())).scalar_one())
