"""Customer pages: the list and search, and the customer 360 with its purchase timeline."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection, inspect, select

from patron.analytics.predictions_api import customer_prediction
from patron.analytics.preferences import preferences_for
from patron.analytics.service import customer_analytics
from patron.customers import custom_fields as fields_service
from patron.customers import queries
from patron.customers import service as customer_service
from patron.customers.tables import customers
from patron.db import UnitOfWork, get_engine
from patron.deps import RecentAuth, UowDep
from patron.errors import FieldError, NotFound, ValidationFailed
from patron.i18n import LANGUAGE_NAMES, LANGUAGES, t
from patron.orders.tables import order_lines
from patron.org.tables import channels, stores
from patron.security.model import Actor
from patron.web.members import memberships_for
from patron.web.render import (
    PageRoute,
    need,
    page_language,
    path_id,
    posted_form,
    redirect,
    render,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

LIST_PAGE_SIZE = 25
TIMELINE_PAGE_SIZE = 10
SORTS = ("-created_at", "-last_order_at", "-net_spend", "-order_count", "name", "id")


def _page_number(raw: str | None) -> int:
    return max(int(raw), 1) if raw and raw.isdigit() else 1


def _field_errors(exc: ValidationFailed, lang: str) -> dict[str, str]:
    return {f.field: t(f.reason, lang, **f.params) for f in exc.fields} or {
        "form": t(exc.message, lang, **exc.params)}


def _store_options(conn: Any, actor: Actor) -> list[tuple[str, str]]:
    q = select(stores.c.id, stores.c.code, stores.c.name).order_by(stores.c.code)
    return [(r.code, f"{r.code} · {r.name}") for r in conn.execute(q)
            if actor.sees_store(int(r.id))]


def _channel_options(conn: Any) -> list[tuple[str, str]]:
    return [(r.code, r.name) for r in conn.execute(
        select(channels.c.code, channels.c.name).order_by(channels.c.id))]


@router.get("/customers")
def customer_list(request: Request,
                  actor: Annotated[Actor, Depends(need("customers.read"))]) -> Response:
    return _customer_list(request, actor, request.query_params)


@router.post("/customers")
async def customer_search(request: Request,
                          actor: Annotated[Actor, Depends(need("customers.read"))]) -> Response:
    """The search form posts, so that a phone number or name typed into it stays out of the
    URL (browser history, proxy and server logs). Without a search term it goes back to the
    list's address with its filters (no personal data in them)."""
    form = await posted_form(request)
    if not str(form.get("q") or "").strip():
        from urllib.parse import urlencode

        kept = {k: str(form.get(k)) for k in ("store", "member", "sort") if form.get(k)}
        return redirect("/customers" + (f"?{urlencode(kept)}" if kept else ""))
    return _customer_list(request, actor, {k: str(v) for k, v in form.items()
                                           if isinstance(v, str)})


def _customer_list(request: Request, actor: Actor, params: Any, *,
                   bulk_errors: dict[str, str] | None = None) -> Response:
    lang = page_language(request, actor)
    q = (params.get("q") or "").strip()
    store = params.get("store") or None
    member = {"1": True, "0": False}.get(params.get("member") or "")
    sort = params.get("sort") if params.get("sort") in SORTS else "-created_at"
    page = _page_number(params.get("page"))
    errors: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    total = 0
    with UnitOfWork(get_engine(), readonly=True) as uow:
        try:
            if q:
                items = queries.search_customers(uow.c, actor=actor, q=q, limit=50)
                total = len(items)
            else:
                found = queries.list_customers(
                    uow.c, actor=actor, filters={"store": store, "member": member}, page=page,
                    page_size=LIST_PAGE_SIZE, sort=sort)
                items, total = found["items"], found["total"]
        except ValidationFailed as exc:
            errors = _field_errors(exc, lang)
        store_options = _store_options(uow.c, actor)
        bulk_tags = _manual_tags(uow.c, actor)
    if bulk_errors:
        errors = {**errors, **bulk_errors}
    return render(request, "customers/list.html", {
        "items": items, "total": total, "q": q, "page": page, "sort": sort,
        "sort_options": [(s, t(f"web.sort.{s.lstrip('-')}", lang)) for s in SORTS],
        "store": store or "", "member": params.get("member") or "",
        "store_options": store_options, "errors": errors, "searching": bool(q),
        "has_next": not q and page * LIST_PAGE_SIZE < total,
        "bulk_tags": bulk_tags, "total_capped": not q and total >= queries.COUNT_CAP,
    }, actor=actor, status_code=422 if errors else 200)


def _manual_tags(conn: Connection, actor: Actor) -> list[tuple[str, str]]:
    """The manual tags the user may apply from the list (none without tags.apply)."""
    if not actor.can("tags.apply"):
        return []
    from patron.tags.tables import tags

    return [(r.code, f"{r.name} ({r.code})") for r in conn.execute(
        select(tags.c.code, tags.c.name).where(tags.c.kind == "manual").order_by(tags.c.code))]


@router.post("/customers/tag")
async def bulk_tag(request: Request,
                   actor: Annotated[Actor, Depends(need("tags.apply"))]) -> Response:
    """Add or remove a manual tag for the customers ticked in the list, or for every customer
    matching the list's search or filters (within the user's stores: patron.tags.service
    applies the scope again). One audit entry names the ids or the filters, never the search
    text (it may be a phone number)."""
    from urllib.parse import urlencode

    from patron.errors import Forbidden, PatronError
    from patron.tags import service as tags_service

    form = await posted_form(request)
    lang = page_language(request, actor)
    if not actor.can("customers.read"):
        raise Forbidden("forbidden", params={"permission": "customers.read"})
    params = {k: str(form.get(k) or "").strip() for k in ("q", "store", "member", "sort")}
    action = "remove" if form.get("action") == "remove" else "add"
    code = str(form.get("tag") or "")
    picked = sorted({int(v) for v in form.getlist("customer_id")
                     if isinstance(v, str) and v.isdigit() and len(v) <= 18})
    everyone = form.get("all_matching") == "1"
    try:
        with UnitOfWork(get_engine()) as uow:
            target: dict[str, Any] = {"customer_ids": picked}
            if everyone and params["q"]:
                found = queries.search_customers(uow.c, actor=actor, q=params["q"], limit=50)
                target = {"customer_ids": [int(c["id"]) for c in found]}
            elif everyone:
                filters = {"store": params["store"] or None,
                           "member": {"1": True, "0": False}.get(params["member"])}
                query = queries.customers_query(uow.c, actor, filters).with_only_columns(
                    customers.c.id.label("customer_id"))
                target = {"matching": (query, {"customer_filters": {
                    "store": filters["store"], "member": filters["member"]}})}
            if not target.get("customer_ids") and "matching" not in target:
                raise ValidationFailed("validation_failed", fields=[
                    FieldError("bulk", "web.bulktag.none_selected")])
            out = tags_service.apply_tag(uow=uow, actor=actor, code=code, action=action,
                                         note=str(form.get("note") or "") or None, **target)
    except PatronError as exc:
        if exc.status not in (404, 409, 422):
            raise
        message = " ".join(t(f.reason, lang, **f.params) for f in exc.fields) or t(
            exc.message, lang, **exc.params)
        return _customer_list(request, actor, params, bulk_errors={"bulk": message})
    kept = {k: params[k] for k in ("store", "member", "sort") if params[k]}
    return redirect("/customers?" + urlencode({**kept, "tagged": out["changed"], "tag": code,
                                              "action": action}))


def _date_param(raw: str | None, name: str, errors: dict[str, str], lang: str
                ) -> dt.date | None:
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors[name] = t("date_parsing", lang)
        return None


RECOMMENDED = 5


def _recommendations(conn: Connection, actor: Actor, customer_id: int) -> list[dict[str, Any]]:
    """The top recommended products when cross-sell is installed and has a table here;
    nothing otherwise (the page never fails for want of them)."""
    import importlib

    try:
        module = importlib.import_module("patron.analytics.crosssell_service")
        read = module.recommendations_for
    except (ImportError, AttributeError):
        return []
    if not inspect(conn).has_table("customer_recommendations"):
        return []
    found = read(conn, actor=actor, customer_id=customer_id)
    return list(found.get("recommendations", []))[:RECOMMENDED]


def _insights(conn: Connection, actor: Actor, customer_id: int) -> dict[str, Any]:
    """Segment, stage, predictions, preferences and recommendations for the 360 page; each is
    empty when it has not been computed yet."""
    analytics = (customer_analytics(conn, actor=actor, customer_id=customer_id)
                 if actor.can("dashboard.read") else None)
    return {
        "analytics": analytics,
        "prediction": customer_prediction(conn, actor=actor, customer_id=customer_id),
        "prefs": preferences_for(conn, [customer_id])[customer_id],
        "recommended": _recommendations(conn, actor, customer_id),
    }


def _customer_page(request: Request, actor: Actor, customer_id: int, *,
                   revealed: dict[str, str] | None = None,
                   profile_errors: dict[str, str] | None = None) -> Response:
    lang = page_language(request, actor)
    params = request.query_params
    errors: dict[str, str] = {}
    date_from = _date_param(params.get("date_from"), "date_from", errors, lang)
    date_to = _date_param(params.get("date_to"), "date_to", errors, lang)
    filters = {"store": params.get("store") or None, "channel": params.get("channel") or None,
               "category": params.get("category") or None}
    page = _page_number(params.get("page"))
    timeline: dict[str, Any] = {"items": [], "total": 0, "page": page}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        customer = queries.get_customer(uow.c, actor=actor, customer_id=customer_id)
        if not errors:
            try:
                timeline = queries.customer_timeline(
                    uow.c, actor=actor, customer_id=customer_id, date_from=date_from,
                    date_to=date_to, page=page, page_size=TIMELINE_PAGE_SIZE, **filters)
            except ValidationFailed as exc:
                errors = _field_errors(exc, lang)
        store_options = _store_options(uow.c, actor)
        channel_options = _channel_options(uow.c)
        insights = _insights(uow.c, actor, customer_id)
        loyalty = memberships_for(uow.c, actor, customer_id)
        categories = sorted({c["code"] for c in customer["favourites"]["categories"]}
                            | set(uow.c.execute(select(order_lines.c.category).distinct()
                                                .where(order_lines.c.category.is_not(None))
                                                .limit(200)).scalars()))
    undone = params.get("undone")
    return render(request, "customers/detail.html", {
        "c": customer, "timeline": timeline, "errors": errors, "revealed": revealed or {},
        "filters": {"date_from": params.get("date_from") or "",
                    "date_to": params.get("date_to") or "", **{k: v or "" for k, v in
                                                                filters.items()}},
        "store_options": store_options, "channel_options": channel_options,
        "category_options": [(c, c) for c in categories], "page": page,
        "has_next": page * TIMELINE_PAGE_SIZE < timeline["total"],
        "undone": undone, "loyalty": loyalty, **insights,
        "profile_errors": profile_errors or {}, "done": params.get("done"),
        "language_options": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
    }, actor=actor, status_code=422 if errors or profile_errors else 200)


def _customer_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("customer_not_found")
    return int(raw)


@router.get("/customers/{customer_id}")
def customer_detail(request: Request, customer_id: str,
                    actor: Annotated[Actor, Depends(need("customers.read"))]) -> Response:
    return _customer_page(request, actor, _customer_id(customer_id))


@router.post("/customers/{customer_id}/reveal", dependencies=[RecentAuth])
async def reveal(request: Request, customer_id: str, uow: UowDep,
                 actor: Annotated[Actor, Depends(need("personal_data.reveal"))]) -> Response:
    """Shows one personal field in full on this response only; the reveal is audited."""
    form = await posted_form(request)
    cid = _customer_id(customer_id)
    field = str(form.get("field") or "")
    value = queries.reveal_personal_data(uow=uow, actor=actor, customer_id=cid, field=field)
    return _customer_page(request, actor, cid, revealed={field: value})


@router.post("/customers/{customer_id}/language")
async def set_language(request: Request, customer_id: str, uow: UowDep,
                       actor: Annotated[Actor, Depends(need("customers.write"))]) -> Response:
    """The language the customer's messages are written in (blank: the default); audited."""
    form = await posted_form(request)
    cid = _customer_id(customer_id)
    try:
        fields_service.set_customer_language(uow=uow, actor=actor, customer_id=cid,
                                             language=str(form.get("language") or "") or None)
    except ValidationFailed as exc:
        uow.rollback()
        return _customer_page(request, actor, cid, profile_errors=_field_errors(
            exc, page_language(request, actor)))
    return redirect(f"/customers/{cid}?done=language#profile")


@router.post("/customers/merges/{merge_id}/undo")
async def undo_merge(request: Request, merge_id: str, uow: UowDep,
                     actor: Annotated[Actor, Depends(need("customers.undo_merge"))]
                     ) -> Response:
    form = await posted_form(request)
    back = str(form.get("customer_id") or "")
    customer_service.undo_merge(uow=uow, merge_id=path_id(merge_id), actor=actor)
    if back.isdigit():
        return redirect(f"/customers/{back}?undone={merge_id}")
    return redirect("/customers")
