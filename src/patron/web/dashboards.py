"""Dashboard pages: breakdowns by store, region, brand, channel, category and time; members
against non-members with the promotions; acquisition cohorts; RFM segment x lifecycle stage;
and the customers behind every number, exportable.

Every page reads through :mod:`patron.analytics.dashboards_service` (the same figures as the
API and the CLI), draws its charts with :mod:`patron.web.plots`, and shows the figures as
tables in which each number links to the list of its customers. Who sees what is the
service's: ``dashboard.read``; store managers only their stores; refreshing for owners and
analysts; promotions are changed by owners.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import Connection, select

from patron.analytics import dashboards as rules
from patron.analytics import dashboards_service as ds
from patron.analytics import service as analytics
from patron.analytics.dashboards_api import CELL_PARAMS
from patron.analytics.model import STAGES
from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import RecentAuth, UowDep
from patron.errors import PatronError, ValidationFailed
from patron.i18n import t
from patron.org.tables import brands, channels, regions, stores
from patron.security.model import Actor
from patron.web import plots
from patron.web.render import (
    PageRoute,
    local_tz,
    need,
    page_language,
    posted_form,
    redirect,
    render,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Reader = Annotated[Actor, Depends(need("dashboard.read"))]

PAGE_SIZE = 25
COLUMNS = ("net_sales", "orders", "customers", "new_customers", "returning_customers",
           "repeat_customers", "repurchase_rate", "aov", "frequency")
# Figures whose drill-down is a list of customers (sums and ratios list the cell's buyers).
LINKED = {"net_sales", "orders", "customers", "new_customers", "returning_customers",
          "repeat_customers", "repurchase_rate", "aov", "frequency"}
FORMATS = {"net_sales": "money", "sales": "money", "refunds": "money", "aov": "money",
           "repurchase_rate": "percent", "frequency": "decimal"}
EXPORT_MEDIA = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def _actor(actor: Actor, lang: str) -> Actor:
    return replace(actor, language=lang)


def _tabs(lang: str) -> list[tuple[str, str, str]]:
    return [(key, href, t(f"web.dashboards.tab.{key}", lang)) for key, href in (
        ("breakdown", "/dashboards"), ("members", "/dashboards/members"),
        ("cohorts", "/dashboards/cohorts"), ("structure", "/dashboards/structure"))]


def _today() -> dt.date:
    return utcnow().astimezone(local_tz()).date()


def _errors(exc: ValidationFailed, lang: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in exc.fields:
        out.setdefault(f.field, t(f.reason, lang, **f.params))
    return out or {"form": t(exc.message, lang, **exc.params)}


def _scope_options(conn: Connection, actor: Actor, lang: str) -> list[tuple[str, str]]:
    out = [("overall", t("web.dashboards.scope.overall", lang))]
    for r in conn.execute(select(stores.c.id, stores.c.code, stores.c.name)
                          .order_by(stores.c.code)):
        if actor.sees_store(int(r.id)):
            out.append((f"store:{r.code}", f"{t('web.dashboards.scope.store', lang)} · "
                                           f"{r.code} {r.name}"))
    if actor.store_ids is None:
        for kind, table in (("region", regions), ("brand", brands)):
            for r in conn.execute(select(table.c.code, table.c.name).order_by(table.c.code)):
                out.append((f"{kind}:{r.code}", f"{t(f'web.dashboards.scope.{kind}', lang)} · "
                                                f"{r.code} {r.name}"))
    return out


def _channel_options(conn: Connection) -> list[tuple[str, str]]:
    return [(r.code, r.name) for r in conn.execute(
        select(channels.c.code, channels.c.name).order_by(channels.c.code))]


def _filters(request: Request, lang: str) -> dict[str, Any]:
    """The filter form's values as typed, with the defaults: the last 30 days by store."""
    q = request.query_params
    today = _today()
    return {"by": q.get("by") or "store",
            "from": q.get("from") or (today - dt.timedelta(days=29)).isoformat(),
            "to": q.get("to") or today.isoformat(), "scope": q.get("scope") or "overall",
            "channel": q.get("channel") or "", "member": q.get("member") or ""}


def _date(raw: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise rules.invalid(name, "date_parsing") from None


def drill_href(params: dict[str, Any]) -> str:
    return "/dashboards/customers?" + urlencode({k: v for k, v in params.items()
                                                 if v not in (None, "")})


def _refresh_info(conn: Connection, actor: Actor) -> dict[str, Any]:
    status = ds.refresh_status(conn, actor=actor)
    return {**status, "may_refresh": actor.role in analytics.REFRESHERS
            and actor.store_ids is None}


def _page(request: Request, actor: Actor, name: str, tab: str, context: dict[str, Any],
          conn: Connection) -> Response:
    lang = page_language(request, actor)
    return render(request, name, {"tabs": _tabs(lang), "tab": tab,
                                  "refresh": _refresh_info(conn, actor),
                                  "formats": FORMATS, "drill_href": drill_href,
                                  "done": request.query_params.get("done"), **context},
                  actor=actor)


# --- breakdown ----------------------------------------------------------------------------------

def _chart(result: dict[str, Any], lang: str) -> plots.Chart | None:
    rows = result["rows"]
    if not rows:
        return None
    time_axis = result["by"] in rules.TIME_GRAINS
    labels = [r["key"] if time_axis else r["label"] for r in rows]
    return plots.bar(labels, [
        plots.Series(t("dashboard.metric.net_sales", lang), [r["net_sales"] for r in rows]),
        plots.Series(t("dashboard.metric.customers", lang), [r["customers"] for r in rows],
                     kind="line", secondary=True)],
        fmt="money", y2_fmt="int", y2_title=t("dashboard.metric.customers", lang),
        x_title=t(f"web.dashboards.by.{result['by']}", lang),
        dates=result["by"] in ("day", "week"), id="breakdown-chart")


@router.get("/dashboards")
def breakdown_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    values = _filters(request, lang)
    errors: dict[str, str] = {}
    result = None
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        try:
            result = ds.breakdown(conn, actor=_actor(actor, lang), by=values["by"],
                                  date_from=_date(values["from"], "from"),
                                  date_to=_date(values["to"], "to"), scope=values["scope"],
                                  channel=values["channel"] or None,
                                  member=values["member"] or None)
        except ValidationFailed as exc:
            errors = _errors(exc, lang)
        cell = {"from": values["from"], "to": values["to"], "scope": values["scope"],
                "channel": values["channel"], "member": values["member"]}
        return _page(request, actor, "dashboards/index.html", "breakdown", {
            "values": values, "errors": errors, "result": result, "cell": cell,
            "columns": COLUMNS, "linked": LINKED,
            "chart": _chart(result, lang) if result else None,
            "by_options": [(b, t(f"web.dashboards.by.{b}", lang)) for b in rules.BY],
            "scope_options": _scope_options(conn, actor, lang),
            "channel_options": _channel_options(conn),
            "member_options": [(m, t(f"web.dashboards.member.{m}", lang))
                               for m in rules.MEMBER_FILTERS]}, conn)


# --- members and promotions ---------------------------------------------------------------------

@router.get("/dashboards/members")
def members_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    values = _filters(request, lang)
    errors: dict[str, str] = {}
    report = None
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        try:
            report = ds.members_report(conn, actor=_actor(actor, lang),
                                       date_from=_date(values["from"], "from"),
                                       date_to=_date(values["to"], "to"),
                                       scope=values["scope"],
                                       channel=values["channel"] or None)
        except ValidationFailed as exc:
            errors = _errors(exc, lang)
        chart = None
        if report:
            groups = [g for g in ("member", "non_member", "guest") if g in report["groups"]]
            chart = plots.bar([t(f"web.dashboards.member.{g}", lang) for g in groups], [
                plots.Series(t("dashboard.metric.aov", lang),
                             [report["groups"][g]["aov"] for g in groups])],
                fmt="money", id="members-chart", height=260)
        comparisons = []
        for promo in ds.list_promotions(conn, actor=actor)["items"]:
            try:
                comparisons.append(ds.promotion_comparison(conn, actor=actor,
                                                           promotion_id=promo["id"]))
            except PatronError:
                continue
        return _page(request, actor, "dashboards/members.html", "members", {
            "values": values, "errors": errors, "report": report, "chart": chart,
            "promotions": comparisons, "may_edit": actor.can("admin.org"),
            "promo_error": request.query_params.get("error"),
            "scope_options": _scope_options(conn, actor, lang),
            "channel_options": _channel_options(conn),
            "store_options": [(r.code, f"{r.code} {r.name}") for r in conn.execute(
                select(stores.c.code, stores.c.name).order_by(stores.c.code))],
            "brand_options": [(r.code, f"{r.code} {r.name}") for r in conn.execute(
                select(brands.c.code, brands.c.name).order_by(brands.c.code))],
            "compared": rules.COMPARED}, conn)


@router.post("/dashboards/promotions")
async def create_promotion(request: Request, uow: UowDep, actor: Reader) -> Response:
    form = await posted_form(request)
    lang = page_language(request, actor)
    values = {k: str(form.get(k) or "").strip() for k in ("name", "starts_on", "ends_on",
                                                           "store", "brand")}
    try:
        ds.create_promotion(uow=uow, actor=actor, name=values["name"],
                            starts_on=_date(values["starts_on"], "starts_on"),
                            ends_on=_date(values["ends_on"], "ends_on"),
                            store=values["store"] or None, brand=values["brand"] or None)
    except ValidationFailed as exc:
        message = "; ".join(f"{t('web.dashboards.promo.' + k, lang)}: {v}"
                            for k, v in _errors(exc, lang).items())
        return redirect("/dashboards/members?" + urlencode({"error": message}))
    return redirect("/dashboards/members?done=promotion_created")


@router.post("/dashboards/promotions/{promotion_id}/delete",
             dependencies=[Depends(need("records.delete"))])
async def delete_promotion(request: Request, promotion_id: int, uow: UowDep,
                           actor: Reader) -> Response:
    await posted_form(request)
    ds.delete_promotion(uow=uow, actor=actor, promotion_id=promotion_id)
    return redirect("/dashboards/members?done=promotion_deleted")


# --- cohorts ------------------------------------------------------------------------------------

def _as_table_grid(chart: plots.Chart) -> None:
    """Read a heatmap like the table under it: labels as they are (not months or numbers
    Plotly would guess), the first row on top."""
    chart.layout["xaxis"]["type"] = "category"
    chart.layout["yaxis"].update({"type": "category", "autorange": "reversed"})


@router.get("/dashboards/cohorts")
def cohorts_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    q = request.query_params
    values = {"from": q.get("from") or "", "to": q.get("to") or "",
              "scope": q.get("scope") or "overall", "member": q.get("member") or "",
              "months": q.get("months") or "12"}
    errors: dict[str, str] = {}
    result = None
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        try:
            months = int(values["months"]) if values["months"].isdigit() else -1
            result = ds.cohorts(conn, actor=actor, scope=values["scope"],
                                member=values["member"] or None,
                                month_from=values["from"] or None,
                                month_to=values["to"] or None, horizon=months)
        except ValidationFailed as exc:
            errors = _errors(exc, lang)
        chart = None
        if result and result["cohorts"]:
            width = max(len(c["retention"]) for c in result["cohorts"])
            chart = plots.heatmap(
                [f"+{k}" for k in range(width)], [c["cohort"] for c in result["cohorts"]],
                [[(c["retention"][k]["share"] if k < len(c["retention"]) else None)
                  for k in range(width)] for c in result["cohorts"]],
                x_title=t("web.dashboards.cohorts.months_after", lang),
                y_title=t("web.dashboards.cohorts.cohort", lang), fmt="percent",
                height=max(240, 28 * len(result["cohorts"]) + 90), id="cohort-chart")
            _as_table_grid(chart)
        return _page(request, actor, "dashboards/cohorts.html", "cohorts", {
            "values": values, "errors": errors, "result": result, "chart": chart,
            "scope_options": _scope_options(conn, actor, lang)}, conn)


# --- structure ----------------------------------------------------------------------------------

@router.get("/dashboards/structure")
def structure_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    q = request.query_params
    values = {"scope": q.get("scope") or ("overall" if actor.store_ids is None else ""),
              "member": q.get("member") or ""}
    errors: dict[str, str] = {}
    result = None
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        try:
            result = ds.structure(conn, actor=_actor(actor, lang),
                                  scope=values["scope"] or None,
                                  member=values["member"] or None)
        except ValidationFailed as exc:
            errors = _errors(exc, lang)
        chart = None
        if result and result["customers"]:
            stages = [s["stage"] for s in result["stages"]]
            chart = plots.heatmap([s["label"] for s in result["stages"]],
                                  [s["label"] for s in result["segments"]],
                                  [[s["stages"][st] for st in stages]
                                   for s in result["segments"]],
                                  x_title=t("web.dashboards.structure.stage", lang),
                                  y_title=t("web.dashboards.structure.segment", lang),
                                  height=420, id="structure-chart")
            _as_table_grid(chart)
        options = [o for o in _scope_options(conn, actor, lang)
                   if actor.store_ids is None or o[0] != "overall"]
        return _page(request, actor, "dashboards/structure.html", "structure", {
            "values": values, "errors": errors, "result": result, "chart": chart,
            "scope_options": options, "stage_names": STAGES}, conn)


# --- drill-down ---------------------------------------------------------------------------------

def _cell_params(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k in CELL_PARAMS}


@router.get("/dashboards/customers")
def customers_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    params = _cell_params(request)
    raw_page = request.query_params.get("page") or "1"
    page = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1
    with UnitOfWork(get_engine(), readonly=True) as uow:
        conn = uow.c
        error = None
        listed = None
        try:
            listed = ds.drill_customers(conn, actor=_actor(actor, lang), params=params,
                                        page=page, page_size=PAGE_SIZE)
        except ValidationFailed as exc:
            error = "; ".join(f"{k}: {v}" for k, v in _errors(exc, lang).items())
        return _page(request, actor, "dashboards/customers.html", "breakdown", {
            "listed": listed, "error": error, "params": params, "page": page,
            "has_next": bool(listed and page * PAGE_SIZE < listed["total"]),
            "query": urlencode(params), "may_export": actor.can("export")}, conn)


@router.get("/dashboards/customers.{fmt}",
            dependencies=[Depends(need("export")), RecentAuth])
def customers_export(request: Request, fmt: str, uow: UowDep, actor: Reader) -> Response:
    if fmt not in EXPORT_MEDIA:
        raise rules.invalid("format", "literal_error", expected="csv, xlsx")
    path = ds.export_cell_customers(uow=uow, actor=actor, params=_cell_params(request),
                                    fmt=fmt)
    return FileResponse(path, media_type=EXPORT_MEDIA[fmt], filename=path.name)


# --- refresh ------------------------------------------------------------------------------------

@router.post("/dashboards/refresh")
async def refresh_now(request: Request, uow: UowDep, actor: Reader) -> Response:
    form = await posted_form(request)
    ds.refresh_dashboards(uow=uow, actor=actor)
    back = str(form.get("back") or "/dashboards")
    if not back.startswith("/dashboards"):
        back = "/dashboards"
    return redirect(back)
