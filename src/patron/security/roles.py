"""Custom roles: the permission matrix an owner edits (issue 6 §2).

A custom role is a name, a set of editable permissions (``model.COARSE``: view, create, edit,
delete, export, reveal, adjust_points, manage_rules, manage_users) and a data scope: every
store, one brand's stores, one region's stores, or the stores assigned to each user. A user
given a custom role gets the fine permissions those stand for and the scope's stores,
resolved at each request (``service._user_actor``), so an edit applies at once. The four
built-in roles stay as they are and are shown beside the custom ones, read-only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update

from patron.db import UnitOfWork, utcnow
from patron.errors import Conflict, FieldError, NotFound, ValidationFailed
from patron.security import audit
from patron.security.model import COARSE, ROLES, SCOPES, Actor, coarse_summary
from patron.security.tables import roles, users


def _check(conn: Any, *, name: str | None, permissions: list[str] | None, scope: str | None,
           brand_id: int | None, region_id: int | None, role_id: int | None = None) -> None:
    from patron.org.tables import brands, regions

    bad: list[FieldError] = []
    if name is not None:
        if name.strip().lower() in ROLES or not name.strip():
            bad.append(FieldError("name", "role_name_reserved"))
        else:
            clash = conn.execute(select(roles.c.id).where(roles.c.name == name.strip())).first()
            if clash and clash.id != role_id:
                raise Conflict("already_exists", params={"name": name})
    if permissions is not None:
        unknown = sorted(set(permissions) - set(COARSE))
        if unknown:
            bad.append(FieldError("permissions", "unknown_permission",
                                  {"unknown": ", ".join(unknown)}))
    if scope is not None and scope not in SCOPES:
        bad.append(FieldError("scope", "literal_error", {"expected": ", ".join(SCOPES)}))
    if permissions is not None and "manage_users" in permissions and scope != "all":
        # Whoever manages users can make an owner: only a role over every store may.
        bad.append(FieldError("permissions", "manage_users_needs_all_stores"))
    if scope == "brand" and (brand_id is None or conn.execute(
            select(brands.c.id).where(brands.c.id == brand_id)).first() is None):
        bad.append(FieldError("brand_id", "unknown_reference"))
    if scope == "region" and (region_id is None or conn.execute(
            select(regions.c.id).where(regions.c.id == region_id)).first() is None):
        bad.append(FieldError("region_id", "unknown_reference"))
    if bad:
        raise ValidationFailed("validation_failed", fields=bad)


def _read(r: Any, members: int) -> dict[str, Any]:
    return {"id": int(r.id), "name": r.name, "builtin": False,
            "permissions": sorted(r.permissions), "scope": r.scope,
            "brand_id": r.brand_id, "region_id": r.region_id, "users": members}


def list_roles(conn: Any) -> list[dict[str, Any]]:
    """Built-in roles first (each editable permission as all / some / none of its finer
    ones), then the custom roles."""
    out: list[dict[str, Any]] = []
    for name in ROLES:
        summary = coarse_summary(name)
        out.append({"id": None, "name": name, "builtin": True,
                    "permissions": sorted(c for c, v in summary.items() if v != "none"),
                    "partial": sorted(c for c, v in summary.items() if v == "some"),
                    "scope": "own_stores" if name in ("manager", "cashier") else "all",
                    "brand_id": None, "region_id": None})
    counts = dict(conn.execute(select(users.c.role_id, func.count()).where(
        users.c.role_id.is_not(None)).group_by(users.c.role_id)).all())
    for r in conn.execute(select(roles).order_by(roles.c.name)):
        out.append(_read(r, int(counts.get(r.id, 0))))
    return out


def create_role(*, uow: UnitOfWork, actor: Actor, name: str, permissions: list[str],
                scope: str, brand_id: int | None = None, region_id: int | None = None) -> int:
    conn = uow.c
    _check(conn, name=name, permissions=permissions, scope=scope, brand_id=brand_id,
           region_id=region_id)
    now = utcnow()
    role_id = conn.execute(insert(roles).values(
        name=name.strip(), permissions=sorted(set(permissions)), scope=scope,
        brand_id=brand_id if scope == "brand" else None,
        region_id=region_id if scope == "region" else None, created_at=now, updated_at=now)
        .returning(roles.c.id)).scalar_one()
    audit.record(conn, actor, "role.created", entity="role", entity_id=role_id,
                 details={"name": name, "permissions": sorted(set(permissions)),
                          "scope": scope, "brand_id": brand_id, "region_id": region_id})
    uow.commit()
    return int(role_id)


def update_role(*, uow: UnitOfWork, actor: Actor, role_id: int, name: str | None = None,
                permissions: list[str] | None = None, scope: str | None = None,
                brand_id: int | None = None, region_id: int | None = None) -> None:
    conn = uow.c
    row = conn.execute(select(roles).where(roles.c.id == role_id)).first()
    if row is None:
        raise NotFound("not_found")
    scope_after = scope or row.scope
    _check(conn, name=name,
           permissions=permissions if permissions is not None else list(row.permissions),
           scope=scope_after,
           brand_id=brand_id if brand_id is not None else row.brand_id,
           region_id=region_id if region_id is not None else row.region_id, role_id=role_id)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if name is not None:
        values["name"] = name.strip()
    if permissions is not None:
        values["permissions"] = sorted(set(permissions))
    values["scope"] = scope_after
    values["brand_id"] = (brand_id if brand_id is not None else row.brand_id) \
        if scope_after == "brand" else None
    values["region_id"] = (region_id if region_id is not None else row.region_id) \
        if scope_after == "region" else None
    conn.execute(update(roles).where(roles.c.id == role_id).values(**values))
    audit.record(conn, actor, "role.updated", entity="role", entity_id=role_id,
                 details={k: v for k, v in values.items() if k != "updated_at"}
                 | {"before": {"permissions": list(row.permissions), "scope": row.scope}})
    uow.commit()


def delete_role(*, uow: UnitOfWork, actor: Actor, role_id: int) -> None:
    conn = uow.c
    row = conn.execute(select(roles).where(roles.c.id == role_id)).first()
    if row is None:
        raise NotFound("not_found")
    if conn.execute(select(users.c.id).where(users.c.role_id == role_id)).first():
        raise Conflict("role_in_use")
    conn.execute(roles.delete().where(roles.c.id == role_id))
    audit.record(conn, actor, "role.deleted", entity="role", entity_id=role_id,
                 details={"name": row.name})
    uow.commit()
