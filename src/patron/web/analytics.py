"""Analytics pages: RFM segments with their customers, lifecycle stages and flows, churn-model
evaluation, cross-sell rules, lifetime-value runs, and the on-demand refresh with its progress.

Every page reads through the analytics readers (``patron.analytics.service`` and friends) in
the page's language, draws its figures with :mod:`patron.web.plots` and shows them as tables
too. Before the first refresh each page says so instead of showing zeros.

Who sees what: every page needs ``dashboard.read`` (owner, analyst, store manager). A store
manager sees the RFM and lifecycle pages for the customers of their stores, may pick only their
own stores as RFM or cross-sell scope (a region or brand would include other stores), and gets
no churn or lifetime-value page (those models are fitted on the whole customer base; their
services refuse store-scoped users). Refreshing is for owners and analysts; the thresholds
form for owners (``admin.org``), as in the API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import Connection, select
from starlette.datastructures import FormData

from patron.analytics import churn_service, crosssell_service, jobs, reports, rfm_read, service
from patron.analytics.model import SEGMENTS, STAGES
from patron.analytics.tables import rfm_refreshes, rfm_scores
from patron.customers import export
from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import RecentAuth, UowDep
from patron.errors import FieldError, Forbidden, NotFound, PatronError, ValidationFailed
from patron.i18n import t
from patron.org.tables import brands, regions, stores
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

SEGMENT_PAGE_SIZE = 25
FLOW_DAYS = 30
RULES_SHOWN = 50
RULES_CHARTED = 15
EXPORT_MEDIA = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}

# Each segment and stage keeps its colour on every chart: greens are good, reds need action.
SEGMENT_COLORS = {
    "champions": "#059669", "loyal": "#10b981", "potential_loyalists": "#2563eb",
    "new": "#06b6d4", "promising": "#6366f1", "need_attention": "#f59e0b",
    "about_to_sleep": "#f97316", "at_risk": "#ef4444", "cant_lose_them": "#be123c",
    "hibernating": "#9ca3af", "lost": "#4b5563",
}
STAGE_COLORS = {"new": "#06b6d4", "active": "#10b981", "reactivated": "#2563eb",
                "dormant": "#f59e0b", "churn_risk": "#ef4444", "churned": "#4b5563"}
FIRST_STAGE_COLOR = "#cbd5e1"


# --- shared pieces ----------------------------------------------------------------------------

def _in_language(actor: Actor, lang: str) -> Actor:
    """The readers label segments and stages in ``actor.language``: use the page's."""
    return replace(actor, language=lang)


def may_refresh(actor: Actor) -> bool:
    """Who gets the refresh button: as :func:`patron.analytics.service._need_refresher`."""
    return actor.role in service.REFRESHERS and actor.store_ids is None


def sees_models(actor: Actor) -> bool:
    """Churn and lifetime-value pages: every store's analytics is needed."""
    return actor.store_ids is None


def _tabs(actor: Actor, lang: str) -> list[tuple[str, str, str]]:
    tabs = [("rfm", "/analytics", t("web.analytics.tab.rfm", lang)),
            ("lifecycle", "/analytics/lifecycle", t("web.analytics.tab.lifecycle", lang))]
    if sees_models(actor):
        tabs.append(("churn", "/analytics/churn", t("web.analytics.tab.churn", lang)))
    tabs.append(("crosssell", "/analytics/crosssell", t("web.analytics.tab.crosssell", lang)))
    if sees_models(actor):
        tabs.append(("clv", "/analytics/clv", t("web.analytics.tab.clv", lang)))
    return tabs


def step_label(step: str | None, lang: str) -> str:
    """``rfm:store:SH01`` -> "RFM · store:SH01" in the page's language."""
    if not step:
        return ""
    head, _, rest = step.partition(":")
    name = t(f"web.analytics.step.{head}", lang)
    if name == f"web.analytics.step.{head}":
        name = head
    return f"{name} · {rest}" if rest else name


def _refresh_panel(actor: Actor, lang: str, job_id: int | None = None) -> dict[str, Any]:
    """The latest refresh job (or the one just requested) and the last finished one."""
    engine = get_engine()
    latest = jobs.list_jobs(engine, actor=actor, limit=10)["items"]
    current = None
    if job_id is not None:
        try:
            current = jobs.get_job(engine, actor=actor, job_id=job_id)
        except PatronError:
            current = None
    current = current or (latest[0] if latest else None)
    finished = next((j for j in latest if j["status"] in ("done", "failed")), None)
    steps = {key: t(f"web.analytics.step.{key}", lang)
             for key in ("rfm", "lifecycle", "clv", "churn", "crosssell_rules",
                         "recommendations", "dashboards", "tags", "segment_sizes")}
    statuses = {s: t(f"web.analytics.job.{s}", lang)
                for s in ("queued", "running", "done", "failed")}
    return {"job": current, "finished": finished, "may_refresh": may_refresh(actor),
            "step_label": lambda s: step_label(s, lang), "steps": steps,
            "statuses": statuses,
            "running": current is not None and current["status"] in ("queued", "running")}


def _page(request: Request, actor: Actor, name: str, tab: str, context: dict[str, Any], *,
          status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    job_param = request.query_params.get("job")
    job_id = int(job_param) if job_param and job_param.isdigit() and len(job_param) < 18 \
        else None
    refresh = _refresh_panel(actor, lang, job_id)
    head = ""
    if refresh["running"] and job_id is not None:
        head = "refresh"  # without JavaScript the page reloads itself while the job runs
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "job"])
    return render(request, name, {"tabs": _tabs(actor, lang), "tab": tab,
                                  "refresh": refresh, "head_refresh": head, "query": query,
                                  "timezone": local_tz().key,
                                  "segment_colors": SEGMENT_COLORS, **context},
                  actor=actor, status_code=status_code)


def _errors(exc: ValidationFailed, lang: str, *, rename: dict[str, str] | None = None
            ) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in exc.fields:
        out.setdefault((rename or {}).get(f.field, f.field), t(f.reason, lang, **f.params))
    return out or {"form": t(exc.message, lang, **exc.params)}


# --- scopes -----------------------------------------------------------------------------------

def scope_options(conn: Connection, actor: Actor, lang: str) -> list[tuple[str, str]]:
    """What the scope switch offers: everything for an unscoped user; for a store manager
    their customers overall and each of their stores."""
    out = [("overall", t("web.analytics.scope.overall", lang))]
    for r in conn.execute(select(stores.c.id, stores.c.code, stores.c.name)
                          .order_by(stores.c.code)):
        if actor.sees_store(int(r.id)):
            out.append((f"store:{r.code}", f"{t('web.analytics.scope.store', lang)} · "
                                           f"{r.code} {r.name}"))
    if actor.store_ids is None:
        for kind, table in (("region", regions), ("brand", brands)):
            for r in conn.execute(select(table.c.code, table.c.name).order_by(table.c.code)):
                out.append((f"{kind}:{r.code}", f"{t(f'web.analytics.scope.{kind}', lang)} · "
                                                f"{r.code} {r.name}"))
    return out


def _default_scope(conn: Connection, actor: Actor) -> str:
    if actor.store_ids is None:
        return "overall"
    code = conn.execute(select(stores.c.code).where(
        stores.c.id.in_(sorted(actor.store_ids) or [-1])).order_by(stores.c.code)).scalar()
    return f"store:{code}" if code else "overall"


def _check_scope(conn: Connection, actor: Actor, scope: str, lang: str) -> str:
    """The scope as the readers want it; a store manager may not look at another store or at
    a region or brand (403), an unknown scope is a field error (422)."""
    found = service.parse_scope(conn, scope)
    if actor.store_ids is not None and found.key != "overall":
        if found.key not in {key for key, _ in scope_options(conn, actor, lang)}:
            raise Forbidden("forbidden", params={"permission": "dashboard.read"})
    return found.key


# --- RFM --------------------------------------------------------------------------------------

@router.get("/analytics")
def rfm_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    reader = _in_language(actor, lang)
    errors: dict[str, str] = {}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        scope = request.query_params.get("scope") or _default_scope(uow.c, actor)
        options = scope_options(uow.c, actor, lang)
        try:
            key = _check_scope(uow.c, actor, scope, lang)
            summary = service.rfm_summary(uow.c, actor=reader, scope=key)
        except ValidationFailed as exc:
            errors = _errors(exc, lang)
            summary = None
    charts = {}
    if summary is not None and summary["computed_at"] is not None:
        rows = summary["segments"]
        labels = [s["label"] for s in rows]
        charts["segments"] = plots.bar(
            labels,
            [plots.Series(t("web.analytics.customers", lang), [s["customers"] for s in rows],
                          colors=[SEGMENT_COLORS[s["segment"]] for s in rows]),
             plots.Series(t("web.analytics.avg_spend", lang),
                          [s["avg_monetary"] for s in rows], kind="line", secondary=True,
                          color="#111827")],
            y_title=t("web.analytics.customers", lang), y2_title=t("web.analytics.avg_spend",
                                                                     lang),
            fmt="int", y2_fmt="money", height=340, id="segments-chart")
        shown = [s for s in rows if s["customers"]]  # no "0 %" slivers
        charts["share"] = plots.pie([s["label"] for s in shown],
                                    [s["customers"] for s in shown],
                                    title=t("web.analytics.customers", lang),
                                    colors=[SEGMENT_COLORS[s["segment"]] for s in shown],
                                    id="share-chart")
    return _page(request, actor, "analytics/rfm.html", "rfm", {
        "summary": summary, "scope": scope, "scope_options": options, "errors": errors,
        "charts": charts,
    }, status_code=422 if errors else 200)


def _segment_name(raw: str) -> str:
    if raw not in SEGMENTS:
        raise NotFound("analytics_segment_unknown", params={"segment": raw[:40]})
    return raw


@router.get("/analytics/segments/{segment}")
def segment_page(request: Request, segment: str, actor: Reader) -> Response:
    lang = page_language(request, actor)
    name = _segment_name(segment)
    raw_page = request.query_params.get("page") or "1"
    page = max(int(raw_page), 1) if raw_page.isdigit() and len(raw_page) < 9 else 1
    with UnitOfWork(get_engine(), readonly=True) as uow:
        scope = request.query_params.get("scope") or _default_scope(uow.c, actor)
        key = _check_scope(uow.c, actor, scope, lang)
        found = service.segment_customers(uow.c, actor=_in_language(actor, lang), segment=name,
                                          scope=key, page=page, page_size=SEGMENT_PAGE_SIZE)
    return _page(request, actor, "analytics/segment.html", "rfm", {
        "found": found, "scope": key, "page": page,
        "has_next": page * SEGMENT_PAGE_SIZE < found["total"],
        "may_export": actor.can("export"),
    })


@router.post("/analytics/segments/{segment}/export", dependencies=[RecentAuth])
async def segment_export(request: Request, segment: str, uow: UowDep,
                         actor: Annotated[Actor, Depends(need("export"))]) -> Response:
    """The segment's customers (within the user's stores) as CSV or Excel, masked, through
    the audited customer export."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    name = _segment_name(segment)
    if not actor.can("dashboard.read"):
        raise Forbidden("forbidden", params={"permission": "dashboard.read"})
    fmt = str(form.get("format") or "csv")
    if fmt not in EXPORT_MEDIA:
        raise ValidationFailed("validation_failed", fields=[
            FieldError("format", "literal_error", {"expected": "csv, xlsx"})])
    key = _check_scope(uow.c, actor, str(form.get("scope") or "overall"), lang)
    s = rfm_scores.c
    cuts = rfm_read.cuts_of(uow.c.execute(select(rfm_refreshes).where(
        rfm_refreshes.c.scope == key)).first())
    path = export.export_customers(
        uow=uow, actor=actor, filters=None, fmt="xlsx" if fmt == "xlsx" else "csv",
        among=select(s.customer_id).where(s.scope == key,
                                          rfm_read.segment_condition([name], cuts)),
        among_audit={"rfm_scope": key, "rfm_segment": name})
    return FileResponse(path, media_type=EXPORT_MEDIA[fmt],
                        filename=f"{name}-{key.replace(':', '-')}-{path.name}")


# --- lifecycle --------------------------------------------------------------------------------

LIFECYCLE_INTS = ("new_days", "max_days", "dormant_days", "churn_risk_days", "churned_days")
LIFECYCLE_FLOATS = ("k_dormant", "k_churn_risk", "k_churned", "min_interval_days")
RFM_INPUTS = ("rfm_recency_days", "rfm_frequency", "rfm_monetary")


def _date(raw: str | None, default: dt.date, name: str, errors: dict[str, str],
          lang: str) -> dt.date:
    if not raw:
        return default
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        errors[name] = t("date_parsing", lang)
        return default


def _cuts_text(values: Any) -> str:
    if not values:
        return ""
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _threshold_values(current: dict[str, Any]) -> dict[str, str]:
    """The thresholds as the form shows them (blank: the default / quantiles)."""
    life = current["lifecycle"]
    out = {k: "" if life.get(k) is None else f"{life[k]:g}" if isinstance(life[k], float)
           else str(life[k]) for k in (*LIFECYCLE_INTS, *LIFECYCLE_FLOATS)}
    for k in RFM_INPUTS:
        out[k] = _cuts_text(current["rfm"].get(k.removeprefix("rfm_")))
    return out


def parse_thresholds(form: FormData, lang: str
                     ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], dict[str, str]]:
    """The form's lifecycle and RFM thresholds, the values as typed, and each field's error.

    Every field is checked here, so that each error stands beside its own field: numbers,
    multipliers ascending, the fixed days all or none and ascending, four ascending cut points.
    The service checks the same again before writing."""
    typed = {k: str(form.get(k) or "").strip() for k in (*LIFECYCLE_INTS, *LIFECYCLE_FLOATS,
                                                         *RFM_INPUTS)}
    errors: dict[str, str] = {}
    life: dict[str, Any] = {}
    for k in LIFECYCLE_INTS:
        if typed[k]:
            try:
                value = int(typed[k])
            except ValueError:
                errors[k] = t("web.analytics.error.whole_days", lang)
                continue
            if value < (0 if k == "new_days" else 1):
                errors[k] = t("web.analytics.error.whole_days", lang)
                continue
            life[k] = value
    for k in LIFECYCLE_FLOATS:
        if typed[k]:
            try:
                number = float(typed[k])
            except ValueError:
                errors[k] = t("web.analytics.error.positive_number", lang)
                continue
            if not 0 < number < float("inf"):
                errors[k] = t("web.analytics.error.positive_number", lang)
                continue
            life[k] = number
    defaults = {"k_dormant": 2.0, "k_churn_risk": 3.0, "k_churned": 4.0}
    ks = [(k, life.get(k, defaults[k])) for k in ("k_dormant", "k_churn_risk", "k_churned")]
    for (_, low), (k, high) in zip(ks, ks[1:], strict=False):
        if k not in errors and high <= low:
            errors[k] = t("web.analytics.error.ascending", lang)
    fixed = ("dormant_days", "churn_risk_days", "churned_days")
    given = [k for k in fixed if typed[k]]
    if given and len(given) < 3:
        for k in fixed:
            if not typed[k]:
                errors.setdefault(k, t("web.analytics.error.fixed_all_or_none", lang))
    elif given and not any(k in errors for k in fixed):
        for low, high in zip(fixed, fixed[1:], strict=False):
            if life[high] <= life[low]:
                errors.setdefault(high, t("web.analytics.error.ascending", lang))
    rfm: dict[str, Any] = {}
    for k in RFM_INPUTS:
        if not typed[k]:
            rfm[k.removeprefix("rfm_")] = None
            continue
        parts = [p for p in typed[k].replace("，", ",").replace(" ", ",").split(",") if p]
        try:
            points = [float(p) for p in parts]
        except ValueError:
            errors[k] = t("web.analytics.error.cut_points", lang)
            continue
        if (len(points) != 4 or any(not 0 <= p < float("inf") for p in points)
                or any(b <= a for a, b in zip(points, points[1:], strict=False))):
            errors[k] = t("web.analytics.error.cut_points", lang)
            continue
        rfm[k.removeprefix("rfm_")] = points
    return life, rfm, typed, errors


def _sankey(flows: list[dict[str, Any]], lang: str) -> plots.Chart | None:
    if not flows:
        return None
    first = t("web.analytics.first_stage", lang)
    sources = [f["from_stage"] for f in flows]
    left = [s for s in (None, *STAGES) if s in sources]
    right = [s for s in STAGES if s in {f["to_stage"] for f in flows}]
    names = [first if s is None else t(f"analytics.stage.{s}", lang) for s in left]
    names += [t(f"analytics.stage.{s}", lang) for s in right]
    colors = [FIRST_STAGE_COLOR if s is None else STAGE_COLORS[s] for s in left]
    colors += [STAGE_COLORS[s] for s in right]
    links = [(left.index(f["from_stage"]), len(left) + right.index(f["to_stage"]),
              f["customers"]) for f in flows]
    return plots.sankey(names, links, node_colors=colors, id="flows-chart",
                        columns=(t("web.analytics.flow_from", lang),
                                 t("web.analytics.flow_to", lang),
                                 t("web.analytics.customers", lang)))


def _lifecycle_page(request: Request, actor: Actor, *, form_values: dict[str, str] | None = None,
                    form_errors: dict[str, str] | None = None, status_code: int = 200
                    ) -> Response:
    lang = page_language(request, actor)
    reader = _in_language(actor, lang)
    params = request.query_params
    errors: dict[str, str] = {}
    today = utcnow().astimezone(local_tz()).date()
    date_from = _date(params.get("from"), today - dt.timedelta(days=FLOW_DAYS - 1), "from",
                      errors, lang)
    date_to = _date(params.get("to"), today, "to", errors, lang)
    flows: dict[str, Any] = {"flows": []}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        summary = service.lifecycle_summary(uow.c, actor=reader)
        if not errors:
            try:
                flows = service.lifecycle_flows(uow.c, actor=reader, date_from=date_from,
                                                date_to=date_to)
            except ValidationFailed as exc:
                errors = _errors(exc, lang)
        thresholds = service.get_thresholds(uow.c, actor=actor)
    charts = {}
    if summary["customers"]:
        rows = summary["stages"]
        charts["stages"] = plots.bar(
            [s["label"] for s in rows],
            [plots.Series(t("web.analytics.customers", lang), [s["customers"] for s in rows],
                          colors=[STAGE_COLORS[s["stage"]] for s in rows])],
            y_title=t("web.analytics.customers", lang), height=300, id="stages-chart")
    sankey = _sankey(flows["flows"], lang)
    if sankey is not None:
        charts["flows"] = sankey
    owner = actor.can("admin.org")
    return _page(request, actor, "analytics/lifecycle.html", "lifecycle", {
        "summary": summary, "flows": flows["flows"], "charts": charts, "errors": errors,
        "date_from": params.get("from") or date_from.isoformat(),
        "date_to": params.get("to") or date_to.isoformat(),
        "may_set_thresholds": owner, "thresholds": thresholds,
        "form": form_values or _threshold_values(thresholds),
        "form_errors": form_errors or {}, "saved": params.get("saved") == "1",
    }, status_code=422 if errors and status_code == 200 else status_code)


@router.get("/analytics/lifecycle")
def lifecycle_page(request: Request, actor: Reader) -> Response:
    return _lifecycle_page(request, actor)


@router.post("/analytics/lifecycle/thresholds")
async def save_thresholds(request: Request, uow: UowDep,
                          actor: Annotated[Actor, Depends(need("admin.org"))]) -> Response:
    form = await posted_form(request)
    lang = page_language(request, actor)
    life, rfm, typed, errors = parse_thresholds(form, lang)
    if not errors:
        try:
            service.set_thresholds(uow=uow, actor=actor, rfm=rfm, lifecycle=life)
        except ValidationFailed as exc:
            errors = _errors(exc, lang, rename={f"rfm.{k}": f"rfm_{k}"
                                                for k in service.RFM_FIELDS})
        else:
            return redirect("/analytics/lifecycle?saved=1")
    return _lifecycle_page(request, actor, form_values=typed, form_errors=errors,
                           status_code=422)


# --- churn ------------------------------------------------------------------------------------

@router.get("/analytics/churn")
def churn_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        evaluations = churn_service.churn_evaluations(uow.c, actor=actor, limit=10)[
            "evaluations"]
        scores = reports.churn_score_bands(uow.c, actor=actor)
    latest = evaluations[0] if evaluations else None
    charts = {}
    if latest and latest.get("model") and latest.get("naive"):
        model_cal = latest["model"]["calibration"]
        naive_cal = latest["naive"]["calibration"]
        charts["calibration"] = plots.curves(
            [plots.Series(t("web.analytics.churn.model", lang),
                          [c["observed_rate"] for c in model_cal],
                          x=[c["mean_predicted"] for c in model_cal]),
             plots.Series(t("web.analytics.churn.naive", lang),
                          [c["observed_rate"] for c in naive_cal],
                          x=[c["mean_predicted"] for c in naive_cal], dash="dash")],
            x_title=t("web.analytics.churn.predicted", lang),
            y_title=t("web.analytics.churn.observed", lang), x_fmt="percent", fmt="percent",
            diagonal=t("web.analytics.churn.perfect", lang), height=360,
            id="calibration-chart")
    if scores["customers"]:
        charts["scores"] = plots.bar(
            [f"{b['lower'] * 100:.0f}–{b['upper'] * 100:.0f}%" for b in scores["bands"]],
            [plots.Series(t("web.analytics.customers", lang),
                          [b["customers"] for b in scores["bands"]], color="#ef4444")],
            x_title=t("web.analytics.churn.probability", lang),
            y_title=t("web.analytics.customers", lang), height=280, id="churn-scores-chart")
    return _page(request, actor, "analytics/churn.html", "churn", {
        "latest": latest, "evaluations": evaluations, "scores": scores, "charts": charts})


# --- cross-sell -------------------------------------------------------------------------------

@router.get("/analytics/crosssell")
def crosssell_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    params = request.query_params
    level = params.get("level") or "category"
    errors: dict[str, str] = {}
    rules: dict[str, Any] = {"rules": [], "computed_at": None}
    with UnitOfWork(get_engine(), readonly=True) as uow:
        options = [(k, v) for k, v in scope_options(uow.c, actor, lang)
                   if k == "overall" and actor.store_ids is None or k.startswith("store:")]
        default = "" if actor.store_ids is None else _default_scope(uow.c, actor).partition(
            ":")[2]
        store = params.get("store", default) or None
        try:
            rules = crosssell_service.list_rules(uow.c, actor=actor, level=level, store=store,
                                                 limit=RULES_SHOWN)
        except ValidationFailed as exc:
            errors = _errors(exc, lang)
    charts = {}
    top = rules["rules"][:RULES_CHARTED]
    if top:
        charts["lift"] = plots.bar(
            [f"{r['antecedent']} → {r['consequent']}" for r in top],
            [plots.Series(t("web.analytics.crosssell.lift", lang), [r["lift"] for r in top]),
             plots.Series(t("web.analytics.crosssell.confidence", lang),
                          [r["confidence"] for r in top], secondary=True, kind="line",
                          color="#f59e0b")],
            fmt="decimal", y2_fmt="percent", y_title=t("web.analytics.crosssell.lift", lang),
            y2_title=t("web.analytics.crosssell.confidence", lang), height=360,
            id="lift-chart")
    return _page(request, actor, "analytics/crosssell.html", "crosssell", {
        "rules": rules, "level": level, "store": store or "", "errors": errors,
        "store_options": [(k.partition(":")[2], v) for k, v in options if k != "overall"],
        "overall_allowed": actor.store_ids is None, "charts": charts,
    }, status_code=422 if errors else 200)


# --- lifetime value ---------------------------------------------------------------------------

def _band_label(lower: Decimal, upper: Decimal | None) -> str:
    return f"¥{lower:,.0f}+" if upper is None else f"¥{lower:,.0f}–{upper:,.0f}"


@router.get("/analytics/clv")
def clv_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        runs = reports.clv_runs(uow.c, actor=actor, limit=10)
        overview = reports.clv_overview(uow.c, actor=actor)
    evaluated = next((r for r in runs if r["holdout"] and r["holdout"].get("customers")), None)
    charts = {}
    if overview["customers"]:
        bands = overview["bands"]
        charts["bands"] = plots.bar(
            [_band_label(b["lower"], b["upper"]) for b in bands],
            [plots.Series(t("web.analytics.customers", lang), [b["customers"] for b in bands]),
             plots.Series(t("web.analytics.clv.value", lang), [b["value"] for b in bands],
                          kind="line", secondary=True, color="#10b981")],
            x_title=t("web.analytics.clv.band", lang),
            y_title=t("web.analytics.customers", lang),
            y2_title=t("web.analytics.clv.value", lang), y2_fmt="money", height=320,
            id="clv-bands-chart")
    if evaluated is not None:
        h = evaluated["holdout"]
        charts["holdout"] = plots.bar(
            [t("web.analytics.clv.repeat_purchases", lang)],
            [plots.Series(t("web.analytics.clv.predicted", lang), [h.get("predicted_total")]),
             plots.Series(t("web.analytics.clv.actual", lang), [h.get("actual_total")],
                          color="#10b981")],
            fmt="decimal", height=260, id="holdout-chart")
    return _page(request, actor, "analytics/clv.html", "clv", {
        "runs": runs, "overview": overview, "evaluated": evaluated, "charts": charts,
        "band_label": _band_label})


# --- refresh ----------------------------------------------------------------------------------

@router.post("/analytics/refresh")
async def refresh_now(request: Request, uow: UowDep, actor: Reader) -> Response:
    """The button's path without JavaScript: request the job, run it in the background, come
    back to the page the button was on, which follows the job's progress."""
    form = await posted_form(request)
    job, created = jobs.request_refresh(uow=uow, actor=actor, trigger="manual")
    if created:
        jobs.start_job_thread(uow.engine, job["id"], actor)
    back = str(form.get("back") or "/analytics")
    if not back.startswith("/analytics") or "//" in back or "\\" in back:
        back = "/analytics"
    base, _, query = back.partition("?")
    kept = "&".join(p for p in query.split("&") if p and not p.startswith("job="))
    return redirect(f"{base}?{kept + '&' if kept else ''}job={job['id']}")
