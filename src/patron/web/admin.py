"""Administration pages: stores, products, channels, users and API keys, the audit log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import Connection, func, select

from patron.db import UnitOfWork, get_engine
from patron.deps import RecentAuth, UowDep
from patron.errors import PatronError
from patron.i18n import t
from patron.org import service as org
from patron.org.schemas import ChannelCreate, ProductCreate, StoreCreate
from patron.org.tables import brands, categories, channels, products, regions, stores
from patron.security import service as security
from patron.security.model import ROLES, Actor
from patron.security.schemas import ApiKeyCreate, UserCreate
from patron.security.tables import api_keys, audit_log, user_stores, users
from patron.web.dashboard import utc_bounds
from patron.web.forms import service_errors, validate, values
from patron.web.render import (
    PageRoute,
    local_tz,
    need,
    page_language,
    path_id,
    posted_form,
    redirect,
    render,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
PAGE_SIZE = 50


# --- stores, products, channels: one list-and-form page each ------------------------------

@dataclass(frozen=True)
class FormField:
    name: str
    label: str  # message key
    kind: str = "text"  # text | select | checkbox
    required: bool = False
    options: Callable[[Connection, str], list[tuple[Any, str]]] | None = None
    default: str = ""


@dataclass(frozen=True)
class Column:
    key: str
    label: str  # message key
    kind: str = "text"  # text | money | bool


@dataclass(frozen=True)
class OrgPage:
    slug: str
    title: str
    schema: type[BaseModel]
    create: Callable[..., int]
    key: str  # the field a duplicate is reported on
    fields: tuple[FormField, ...]
    columns: tuple[Column, ...]
    rows: Callable[[Connection], list[dict[str, Any]]]


def _choices(table: Any) -> Callable[[Connection, str], list[tuple[Any, str]]]:
    def options(conn: Connection, lang: str) -> list[tuple[Any, str]]:
        return [(r.id, f"{r.code} · {r.name}") for r in conn.execute(
            select(table.c.id, table.c.code, table.c.name).order_by(table.c.code))]

    return options


def _kinds(conn: Connection, lang: str) -> list[tuple[Any, str]]:
    return [(k, t(f"web.channel_kind.{k}", lang)) for k in org.CHANNEL_KINDS]


def _store_rows(conn: Connection) -> list[dict[str, Any]]:
    b, r = brands.alias("b"), regions.alias("r")
    q = (select(stores, b.c.name.label("brand"), r.c.name.label("region"))
         .outerjoin(b, b.c.id == stores.c.brand_id).outerjoin(r, r.c.id == stores.c.region_id)
         .order_by(stores.c.code))
    return [dict(row) for row in conn.execute(q).mappings()]


def _product_rows(conn: Connection) -> list[dict[str, Any]]:
    q = (select(products, categories.c.name.label("category"), brands.c.name.label("brand"))
         .outerjoin(categories, categories.c.id == products.c.category_id)
         .outerjoin(brands, brands.c.id == products.c.brand_id).order_by(products.c.sku))
    return [dict(row) for row in conn.execute(q).mappings()]


def _channel_rows(conn: Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(select(channels).order_by(channels.c.id))
            .mappings()]


ORG_PAGES = {
    "stores": OrgPage(
        "stores", "web.stores.title", StoreCreate, org.create_store, "code",
        (FormField("code", "web.field.code", required=True),
         FormField("name", "web.field.name", required=True),
         FormField("city", "web.field.city"),
         FormField("timezone", "web.field.timezone", default="Asia/Shanghai"),
         FormField("brand_id", "web.field.brand", "select", options=_choices(brands)),
         FormField("region_id", "web.field.region", "select", options=_choices(regions))),
        (Column("code", "web.field.code"), Column("name", "web.field.name"),
         Column("city", "web.field.city"), Column("brand", "web.field.brand"),
         Column("region", "web.field.region"), Column("timezone", "web.field.timezone"),
         Column("active", "web.field.active", "bool")),
        _store_rows),
    "products": OrgPage(
        "products", "web.products.title", ProductCreate, org.create_product, "sku",
        (FormField("sku", "web.field.sku", required=True),
         FormField("name", "web.field.name", required=True),
         FormField("category_id", "web.field.category", "select", options=_choices(categories)),
         FormField("brand_id", "web.field.brand", "select", options=_choices(brands)),
         FormField("list_price", "web.field.list_price")),
        (Column("sku", "web.field.sku"), Column("name", "web.field.name"),
         Column("category", "web.field.category"), Column("brand", "web.field.brand"),
         Column("list_price", "web.field.list_price", "money"),
         Column("active", "web.field.active", "bool")),
        _product_rows),
    "channels": OrgPage(
        "channels", "web.channels.title", ChannelCreate, org.create_channel, "code",
        (FormField("code", "web.field.code", required=True),
         FormField("name", "web.field.name", required=True),
         FormField("kind", "web.field.kind", "select", required=True, options=_kinds),
         FormField("requires_store", "web.field.requires_store", "checkbox")),
        (Column("code", "web.field.code"), Column("name", "web.field.name"),
         Column("kind", "web.field.kind"),
         Column("requires_store", "web.field.requires_store", "bool"),
         Column("active", "web.field.active", "bool")),
        _channel_rows),
}


def _org_page(request: Request, actor: Actor, page: OrgPage, *, form: dict[str, Any],
              errors: dict[str, str], created: str | None = None,
              status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        rows = page.rows(uow.c)
        options = {f.name: f.options(uow.c, lang) for f in page.fields if f.options}
    return render(request, "admin/org.html", {
        "page": page, "rows": rows, "options": options, "form": form, "errors": errors,
        "created": created}, actor=actor, status_code=status_code)


def _register_org_page(page: OrgPage) -> None:
    path = f"/admin/{page.slug}"

    def show(request: Request, actor: Annotated[Actor, Depends(need("admin.org"))]
             ) -> Response:
        form = {f.name: f.default for f in page.fields}
        return _org_page(request, actor, page, form=form, errors={},
                         created=request.query_params.get("created"))

    async def create(request: Request, uow: UowDep,
                     actor: Annotated[Actor, Depends(need("admin.org"))]) -> Response:
        submitted = await posted_form(request)
        lang = page_language(request, actor)
        data = values(submitted, tuple(f.name for f in page.fields if f.kind != "checkbox"),
                      flags=tuple(f.name for f in page.fields if f.kind == "checkbox"))
        model, errors = validate(page.schema, data, lang)
        if model is not None:
            try:
                page.create(uow=uow, actor=actor, **model.model_dump())
            except PatronError as exc:
                errors = service_errors(exc, lang, default_field=page.key)
            else:
                return redirect(f"{path}?created={quote(str(data[page.key]))}")
        return _org_page(request, actor, page, form=data, errors=errors, status_code=422)

    router.add_api_route(path, show, methods=["GET"], name=f"admin_{page.slug}")
    router.add_api_route(path, create, methods=["POST"], name=f"admin_{page.slug}_create")


for _page in ORG_PAGES.values():
    _register_org_page(_page)


# --- users and API keys -----------------------------------------------------------------------

def _users_page(request: Request, actor: Actor, *, user_form: dict[str, Any] | None = None,
                user_errors: dict[str, str] | None = None, key_form: dict[str, Any] | None = None,
                key_errors: dict[str, str] | None = None, new_key: str | None = None,
                notice: str | None = None, status_code: int = 200) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        store_list = [(int(r.id), f"{r.code} · {r.name}") for r in conn.execute(
            select(stores.c.id, stores.c.code, stores.c.name).order_by(stores.c.code))]
        store_codes = {int(r.id): r.code for r in conn.execute(select(stores.c.id, stores.c.code))}
        scopes: dict[int, list[str]] = {}
        for r in conn.execute(select(user_stores).order_by(user_stores.c.store_id)):
            scopes.setdefault(int(r.user_id), []).append(store_codes.get(int(r.store_id), "?"))
        user_rows = [{**dict(r), "stores": scopes.get(int(r.id), [])} for r in conn.execute(
            select(users.c.id, users.c.username, users.c.display_name, users.c.role,
                   users.c.language, users.c.active, users.c.locked_until, users.c.created_at)
            .order_by(users.c.id)).mappings()]
        keys = []
        if actor.can("admin.api_keys"):
            keys = [{**dict(r), "stores": [store_codes.get(int(s), "?") for s in r.store_ids or []]}
                    for r in conn.execute(select(api_keys).order_by(api_keys.c.id.desc())
                                          ).mappings()]
        channel_list = [(r.code, f"{r.code} · {r.name}") for r in conn.execute(
            select(channels.c.code, channels.c.name).where(channels.c.active.is_(True))
            .order_by(channels.c.id))]
    return render(request, "admin/users.html", {
        "users": user_rows, "keys": keys, "stores": store_list, "channels": channel_list,
        "role_options": [(r, t(f"web.role.{r}", page_language(request, actor))) for r in ROLES],
        "user_form": user_form or {"role": "manager", "language": "zh", "store_ids": []},
        "user_errors": user_errors or {},
        "key_form": key_form or {"role": "cashier", "store_ids": [], "channel_codes": []},
        "key_errors": key_errors or {}, "new_key": new_key, "notice": notice,
    }, actor=actor, status_code=status_code)


@router.get("/admin/users")
def users_page(request: Request,
               actor: Annotated[Actor, Depends(need("admin.users"))]) -> Response:
    lang = page_language(request, actor)
    notice = None
    if request.query_params.get("created"):
        notice = t("web.users.created", lang, username=request.query_params["created"])
    elif request.query_params.get("revoked"):
        notice = t("web.keys.revoked", lang)
    return _users_page(request, actor, notice=notice)


def _int_list(raw: list[str]) -> list[int] | None:
    try:
        return [int(v) for v in raw]
    except ValueError:
        return None


@router.post("/admin/users", dependencies=[RecentAuth])
async def create_user(request: Request, uow: UowDep,
                      actor: Annotated[Actor, Depends(need("admin.users"))]) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    data = values(submitted, ("username", "display_name", "password", "role", "language"),
                  lists=("store_ids",))
    form = {**data, "password": ""}
    store_ids = _int_list(data["store_ids"])
    model, errors = validate(UserCreate, {**data, "store_ids": store_ids or []}, lang)
    if store_ids is None:
        errors["store_ids"] = t("int_parsing", lang)
    elif model is not None and model.role in ("manager", "cashier") and not store_ids:
        errors["store_ids"] = t("web.users.stores_required", lang)
    if model is not None and not errors:
        try:
            security.create_user(uow=uow, actor=actor, **model.model_dump())
        except PatronError as exc:
            errors = service_errors(exc, lang, default_field="username")
        else:
            return redirect(f"/admin/users?created={quote(model.username)}")
    return _users_page(request, actor, user_form=form, user_errors=errors, status_code=422)


@router.post("/admin/api-keys", dependencies=[RecentAuth])
async def create_api_key(request: Request, uow: UowDep,
                         actor: Annotated[Actor, Depends(need("admin.api_keys"))]) -> Response:
    submitted = await posted_form(request)
    lang = page_language(request, actor)
    data = values(submitted, ("name", "role"), lists=("store_ids", "channel_codes"))
    store_ids = _int_list(data["store_ids"])
    model, errors = validate(ApiKeyCreate, {**data, "store_ids": store_ids or []}, lang)
    if store_ids is None:
        errors["store_ids"] = t("int_parsing", lang)
    if model is not None and not errors:
        _key_id, key = security.create_api_key(uow=uow, actor=actor, **model.model_dump())
        # The key is shown in this response only; Patron keeps nothing but its hash.
        return _users_page(request, actor, new_key=key, status_code=201)
    return _users_page(request, actor, key_form=data, key_errors=errors, status_code=422)


@router.post("/admin/api-keys/{key_id}/revoke",
             dependencies=[Depends(need("records.delete"))])
async def revoke_api_key(request: Request, key_id: str, uow: UowDep,
                         actor: Annotated[Actor, Depends(need("admin.api_keys"))]) -> Response:
    await posted_form(request)
    security.revoke_api_key(uow=uow, actor=actor, key_id=path_id(key_id))
    return redirect("/admin/users?revoked=1")


# --- the audit log ----------------------------------------------------------------------------

def _date(text: str | None) -> dt.date | None | str:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return "invalid"


@router.get("/admin/audit")
def audit_page(request: Request,
               actor: Annotated[Actor, Depends(need("audit.read"))]) -> Response:
    lang = page_language(request, actor)
    q = request.query_params
    action = (q.get("action") or "").strip()
    who = (q.get("actor") or "").strip()
    errors: dict[str, str] = {}
    date_from, date_to = _date(q.get("date_from")), _date(q.get("date_to"))
    for name, value in (("date_from", date_from), ("date_to", date_to)):
        if value == "invalid":
            errors[name] = t("date_parsing", lang)
    page = int(q.get("page") or 1) if (q.get("page") or "1").isdigit() else 1
    page = max(page, 1)
    query = select(audit_log)
    if action:
        # A prefix, so "customer" finds customer.revealed and customers.merged alike.
        query = query.where(func.substr(audit_log.c.action, 1, len(action)) == action)
    if who:
        query = query.where(audit_log.c.actor_name == who)
    tz = local_tz()
    if isinstance(date_from, dt.date):
        query = query.where(audit_log.c.at >= utc_bounds(date_from, date_from, tz)[0])
    if isinstance(date_to, dt.date):
        query = query.where(audit_log.c.at < utc_bounds(date_to, date_to, tz)[1])
    rows: list[dict[str, Any]] = []
    has_next = False
    if not errors:
        with UnitOfWork(get_engine(), readonly=True) as uow:
            found = uow.c.execute(query.order_by(audit_log.c.id.desc()).limit(PAGE_SIZE + 1)
                                  .offset((page - 1) * PAGE_SIZE)).mappings().all()
        has_next = len(found) > PAGE_SIZE
        rows = [dict(r) for r in found[:PAGE_SIZE]]
    return render(request, "admin/audit.html", {
        "rows": rows, "page": page, "has_next": has_next, "errors": errors,
        "filters": {"action": action, "actor": who, "date_from": q.get("date_from") or "",
                    "date_to": q.get("date_to") or ""}},
        actor=actor, status_code=422 if errors else 200)
