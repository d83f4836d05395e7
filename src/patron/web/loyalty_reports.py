"""Loyalty report pages: liability (points by month of expiry and by store of issue, stored
value by store, coupons), breakage by cohort, inter-store settlement (清分) of points and
stored value, and the rule and tier simulation, which runs in the background with its
progress shown. Each chart has its figures in a table beside it; every figure comes from the
report services (``loyalty.reports``, ``storedvalue.reports``, ``coupons.service.liability``,
``loyalty.simulation``), in the reader's store scope."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select

from patron.coupons import service as coupons
from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import UowDep
from patron.errors import NotFound, PatronError
from patron.i18n import t
from patron.loyalty import reports, service, simulation_runs
from patron.loyalty.simulation import MAX_MONTHS, SimulationIn
from patron.loyalty.tables import loyalty_programs
from patron.security.model import Actor
from patron.storedvalue import reports as sv_reports
from patron.web import plots
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

Reader = Annotated[Actor, Depends(need("loyalty.read"))]
TABS = ("liability", "breakage", "settlement", "simulation")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIER_ROWS_EXTRA = 1


def _programs() -> list[dict[str, Any]]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        return [dict(r) for r in uow.c.execute(
            select(loyalty_programs.c.code, loyalty_programs.c.name,
                   loyalty_programs.c.timezone).order_by(loyalty_programs.c.code)).mappings()]


def _pick(request: Request, programs: list[dict[str, Any]]) -> dict[str, Any] | None:
    wanted = request.query_params.get("program")
    if wanted:
        found = next((p for p in programs if p["code"] == wanted), None)
        if found is None:
            raise NotFound("program_not_found", params={"code": wanted})
        return found
    return programs[0] if programs else None


def _page(request: Request, actor: Actor, tab: str, template: str, context: dict[str, Any],
          *, programs: list[dict[str, Any]], program: dict[str, Any] | None,
          status_code: int = 200) -> Response:
    return render(request, template, {
        "tab": tab, "tabs": TABS, "programs": programs, "program": program,
        "scope": None if actor.store_ids is None else True, **context},
        actor=actor, status_code=status_code)


def _money(v: Any) -> Decimal:
    return Decimal(str(v or 0))


def _months(chart: plots.Chart) -> plots.Chart:
    """Months ('2027-01') as categories: Plotly would read them as dates and, with one or two
    of them, draw hours between them."""
    chart.layout["xaxis"]["type"] = "category"
    return chart


@router.get("/loyalty/reports")
def reports_home(request: Request, actor: Reader) -> Response:
    query = request.url.query
    return redirect("/loyalty/reports/liability" + (f"?{query}" if query else ""))


# --- liability ----------------------------------------------------------------------------

@router.get("/loyalty/reports/liability")
def liability_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    programs = _programs()
    program = _pick(request, programs)
    ctx: dict[str, Any] = {"points": None, "sv": None, "coupons": None, "charts": {}}
    if program is not None:
        code = program["code"]
        with UnitOfWork(get_engine(), readonly=True) as uow:
            points = reports.liability(uow.c, actor=actor, program=code)
            sv = (sv_reports.liability(uow.c, actor=actor, program=code)
                  if actor.can("stored_value.read") else None)
            cl = (coupons.liability(uow.c, actor=actor, program=code)
                  if actor.can("coupons.read") else None)
        parts = (("available", "web.lr.available"), ("pending", "web.lr.pending"),
                 ("held", "web.lr.held"))
        months = points["by_expiry_month"]
        ctx["charts"]["expiry"] = _months(plots.bar(
            [r["month"] for r in months],
            [plots.Series(t(k, lang), [r[p] for r in months]) for p, k in parts],
            x_title=t("web.lr.expiry_month", lang), y_title=t("web.lr.points", lang),
            stacked=True, id="expiry-chart"))
        by_store = points["by_store"]
        ctx["charts"]["store"] = plots.bar(
            [r["store"] or t("web.lr.no_store", lang) for r in by_store],
            [plots.Series(t(k, lang), [r[p] for r in by_store]) for p, k in parts],
            x_title=t("web.lr.store_of_issue", lang), y_title=t("web.lr.points", lang),
            stacked=True, id="store-chart")
        if sv is not None:
            ctx["charts"]["sv"] = plots.bar(
                [r["store"] or t("web.lr.head_office", lang) for r in sv["stores"]],
                [plots.Series(t("web.lr.principal", lang),
                              [_money(r["principal"]) for r in sv["stores"]]),
                 plots.Series(t("web.lr.bonus", lang),
                              [_money(r["bonus"]) for r in sv["stores"]])],
                x_title=t("web.lr.store_of_topup", lang), fmt="money", stacked=True,
                id="sv-chart")
        if cl is not None:
            ctx["charts"]["coupons"] = _months(plots.bar(
                [r["month"] for r in cl["by_month"]],
                [plots.Series(t("web.lr.face_value", lang),
                              [_money(r["face_value"]) for r in cl["by_month"]]),
                 plots.Series(t("web.lr.coupon_count", lang),
                              [r["count"] for r in cl["by_month"]], kind="line",
                              secondary=True)],
                x_title=t("web.lr.expiry_month", lang), fmt="money", y2_fmt="int",
                id="coupon-chart"))
        ctx.update(points=points, sv=sv, coupons=cl)
    return _page(request, actor, "liability", "loyalty_reports/liability.html", ctx,
                 programs=programs, program=program)


# --- breakage -----------------------------------------------------------------------------

@router.get("/loyalty/reports/breakage")
def breakage_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    programs = _programs()
    program = _pick(request, programs)
    params = request.query_params
    by = params.get("by") if params.get("by") in ("issue", "expiry") else "issue"
    form = {"by": by, "from": params.get("from") or "", "to": params.get("to") or ""}
    errors: dict[str, str] = {}
    data = chart = None
    if program is not None:
        try:
            with UnitOfWork(get_engine(), readonly=True) as uow:
                data = reports.breakage(uow.c, actor=actor, program=program["code"], by=by,
                                        month_from=form["from"] or None,
                                        month_to=form["to"] or None)
        except PatronError as exc:
            if exc.status != 422:
                raise
            errors = {f.field: t(f.reason, lang, **f.params) for f in exc.fields}
        if data is not None:
            rows = data["cohorts"]
            chart = _months(plots.bar(
                [r["month"] for r in rows],
                [plots.Series(t("web.lr.used", lang), [r["used"] for r in rows]),
                 plots.Series(t("web.lr.expired", lang), [r["expired"] for r in rows],
                              color="#dc2626"),
                 plots.Series(t("web.lr.open", lang), [r["open"] for r in rows],
                              color="#9ca3af"),
                 plots.Series(t("web.lr.breakage_rate", lang),
                              [r["breakage_rate"] for r in rows], kind="line",
                              secondary=True, color="#111827")],
                x_title=t("web.lr.cohort." + by, lang), y_title=t("web.lr.points", lang),
                stacked=True, y2_fmt="percent", id="breakage-chart"))
    return _page(request, actor, "breakage", "loyalty_reports/breakage.html",
                 {"data": data, "chart": chart, "form": form, "errors": errors},
                 programs=programs, program=program, status_code=422 if errors else 200)


# --- settlement ---------------------------------------------------------------------------

def _dates(raw_from: str | None, raw_to: str | None, tz: str, errors: dict[str, str],
           lang: str) -> tuple[dt.date, dt.date]:
    today = utcnow().astimezone(ZoneInfo(tz)).date()
    out = []
    for name, raw, default in (("from", raw_from, today.replace(day=1)), ("to", raw_to, today)):
        try:
            out.append(dt.date.fromisoformat(raw) if raw else default)
        except ValueError:
            errors[name] = t("date_parsing", lang)
            out.append(default)
    return out[0], out[1]


@router.get("/loyalty/reports/settlement")
def settlement_page(request: Request, actor: Reader) -> Response:
    lang = page_language(request, actor)
    programs = _programs()
    program = _pick(request, programs)
    params = request.query_params
    errors: dict[str, str] = {}
    points = sv = chart = sv_chart = None
    form = {"from": params.get("from") or "", "to": params.get("to") or ""}
    if program is not None:
        start, end = _dates(form["from"], form["to"], program["timezone"], errors, lang)
        form = {"from": form["from"] or start.isoformat(), "to": form["to"] or end.isoformat()}
        if not errors:
            try:
                with UnitOfWork(get_engine(), readonly=True) as uow:
                    points = reports.settlement(uow.c, actor=actor, program=program["code"],
                                                date_from=start, date_to=end)
                    if actor.can("stored_value.read"):
                        lo, hi = sv_reports.day_bounds(start, end, program["timezone"])
                        sv = sv_reports.settlement(uow.c, actor=actor, start=lo, end=hi,
                                                   program=program["code"])
            except PatronError as exc:
                if exc.status != 422:
                    raise
                errors = {f.field: t(f.reason, lang, **f.params) for f in exc.fields}
        if points is not None:
            rows = points["by_store"]
            chart = plots.bar(
                [r["store"] for r in rows],
                [plots.Series(t("web.lr.receives", lang), [_money(r["receives"]) for r in rows],
                              color="#16a34a"),
                 plots.Series(t("web.lr.pays", lang), [-_money(r["pays"]) for r in rows],
                              color="#dc2626"),
                 plots.Series(t("web.lr.net", lang), [_money(r["net"]) for r in rows],
                              kind="line", color="#111827")],
                x_title=t("web.field.store", lang), fmt="money", id="settlement-chart")
        if sv is not None and sv["owed"]:
            owed = sv["owed"]
            sv_chart = plots.bar(
                [f"{r['from'] or t('web.lr.head_office', lang)} → "
                 f"{r['to'] or t('web.lr.head_office', lang)}" for r in owed],
                [plots.Series(t("web.lr.amount", lang), [_money(r["amount"]) for r in owed])],
                fmt="money", horizontal=True, id="sv-settlement-chart")
    return _page(request, actor, "settlement", "loyalty_reports/settlement.html",
                 {"points": points, "sv": sv, "chart": chart, "sv_chart": sv_chart,
                  "form": form, "errors": errors},
                 programs=programs, program=program, status_code=422 if errors else 200)


# --- simulation ---------------------------------------------------------------------------

def _pairs(raw: str) -> dict[str, str]:
    """'coffee=2, tea=1.5' to {'coffee': '2', 'tea': '1.5'}; a part without '=' is kept
    under its own text so that validation names it."""
    out: dict[str, str] = {}
    for part in raw.replace("，", ",").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else ""
    return out


def _text_pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _list(raw: str) -> list[str]:
    return [x.strip() for x in raw.replace("，", ",").split(",") if x.strip()]


def _today(program_code: str, actor: Actor) -> dict[str, Any]:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        p = service.get_program(uow.c, actor=actor, code=program_code)
        latest = simulation_runs.latest_runs(uow.c, actor=actor, program=program_code)
    rules = (p["rules_in_force"] or {}).get("rules") or {}
    return {"program": p, "rules": rules, "tiers": p["tiers"], "runs": latest}


def _default_form(today: dict[str, Any]) -> dict[str, Any]:
    r = today["rules"]
    mult = r.get("multipliers") or {}
    caps = r.get("caps") or {}
    tiers = [{"code": x["code"], "name": x["name"], "rank": str(x["rank"]),
              "min_growth": str(x["min_growth"]), "min_spend": str(x["min_spend"]),
              "points_multiplier": str(x["points_multiplier"])} for x in today["tiers"]]
    return {"months": "12", "propose_rules": True, "propose_tiers": False,
            "points_per_yuan": str(r.get("points_per_yuan", "1")),
            "growth_per_yuan": str(r.get("growth_per_yuan", "1")),
            "min_spend": str(r.get("min_spend", "0")),
            "category": _text_pairs(mult.get("category") or {}),
            "sku": _text_pairs(mult.get("sku") or {}),
            "store": _text_pairs(mult.get("store") or {}),
            "channel": _text_pairs(mult.get("channel") or {}),
            "weekday": _text_pairs(mult.get("weekday") or {}),
            "exclude_categories": ", ".join((r.get("exclude") or {}).get("categories") or []),
            "per_order": "" if caps.get("per_order") is None else str(caps["per_order"]),
            "per_day": "" if caps.get("per_day") is None else str(caps["per_day"]),
            "tier_multiplier": bool(r.get("tier_multiplier", True)),
            "tiers": tiers, "extra": r}


def _typed(form: Any) -> dict[str, Any]:
    def one(name: str) -> str:
        raw = form.get(name)
        return raw.strip() if isinstance(raw, str) else ""

    tiers = []
    columns = ("code", "name", "rank", "min_growth", "min_spend", "points_multiplier")
    lists = {c: form.getlist(f"tier_{c}") for c in columns}
    for i in range(min(max((len(v) for v in lists.values()), default=0), 50)):
        row = {c: (lists[c][i].strip() if i < len(lists[c]) and isinstance(lists[c][i], str)
                   else "") for c in columns}
        tiers.append(row)
    return {"months": one("months"), "propose_rules": form.get("propose_rules") == "on",
            "propose_tiers": form.get("propose_tiers") == "on",
            **{k: one(k) for k in ("points_per_yuan", "growth_per_yuan", "min_spend",
                                   "category", "sku", "store", "channel", "weekday",
                                   "exclude_categories", "per_order", "per_day")},
            "tier_multiplier": form.get("tier_multiplier") == "on", "tiers": tiers}


def _proposal(typed: dict[str, Any], today: dict[str, Any]) -> dict[str, Any]:
    """The simulation request from the form; the rules the form does not show (SKU-level
    exclusions, payment methods, date multipliers) stay as they are today."""
    body: dict[str, Any] = {"months": typed["months"] or "12"}
    if typed["propose_rules"]:
        base = today["rules"]
        mult = dict(base.get("multipliers") or {})
        for k in ("category", "sku", "store", "channel", "weekday"):
            mult[k] = _pairs(typed[k])
        exclude = dict(base.get("exclude") or {})
        exclude["categories"] = _list(typed["exclude_categories"])
        caps = {"per_order": typed["per_order"] or None, "per_day": typed["per_day"] or None}
        body["rules"] = {"points_per_yuan": typed["points_per_yuan"] or "0",
                         "growth_per_yuan": typed["growth_per_yuan"] or "0",
                         "min_spend": typed["min_spend"] or "0", "multipliers": mult,
                         "exclude": exclude, "caps": caps,
                         "tier_multiplier": typed["tier_multiplier"]}
    if typed["propose_tiers"]:
        body["tiers"] = [{k: v for k, v in row.items() if v != "" or k in ("code", "name")}
                         for row in typed["tiers"] if any(row.values())]
    return body


def _sim_field(loc: list[str]) -> str:
    if not loc:
        return "form"
    if loc[0] == "rules":
        rest = loc[1:]
        if rest[:1] == ["multipliers"] and len(rest) > 1:
            return rest[1]
        if rest[:1] == ["caps"] and len(rest) > 1:
            return rest[1]
        if rest[:1] == ["exclude"]:
            return "exclude_categories"
        return rest[0] if rest else "form"
    if loc[0] == "tiers":
        if len(loc) > 2 and loc[1].isdigit():
            return f"tiers.{loc[1]}.{loc[2]}"
        return "tiers"
    return loc[0]


def _sim_page(request: Request, actor: Actor, *, typed: dict[str, Any] | None = None,
              errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    programs = _programs()
    program = _pick(request, programs)
    ctx: dict[str, Any] = {"form": None, "errors": errors or {}, "runs": [],
                           "max_months": MAX_MONTHS, "weekdays": WEEKDAYS}
    if program is not None:
        today = _today(program["code"], actor)
        form = typed or _default_form(today)
        while len(form["tiers"]) < len(today["tiers"]) + TIER_ROWS_EXTRA:
            form["tiers"].append({k: "" for k in ("code", "name", "rank", "min_growth",
                                                  "min_spend", "points_multiplier")})
        ctx.update(form=form, runs=today["runs"], today=today)
    return _page(request, actor, "simulation", "loyalty_reports/simulation.html", ctx,
                 programs=programs, program=program, status_code=status_code)


@router.get("/loyalty/reports/simulation")
def simulation_form(request: Request, actor: Reader) -> Response:
    return _sim_page(request, actor)


@router.post("/loyalty/reports/simulation")
async def simulation_start(request: Request, uow: UowDep, actor: Reader) -> Response:
    """Check the proposal, record a run and start it in the background; the run's page
    follows it."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    programs = _programs()
    program = _pick(request, programs)
    if program is None:
        raise NotFound("program_not_found", params={"code": ""})
    typed = _typed(form)
    today = _today(program["code"], actor)
    try:
        body = SimulationIn.model_validate(_proposal(typed, today))
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            loc = [str(x) for x in err["loc"]]
            ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
            errors.setdefault(_sim_field(loc), t(err["type"], lang, **ctx))
        return _sim_page(request, actor, typed=typed, errors=errors, status_code=422)
    try:
        # The tier ladder and the rules in force are checked now, not in the background.
        from patron.loyalty.simulation import _tier_defs

        if body.tiers is not None:
            _tier_defs(body.tiers)
        run_id = simulation_runs.request_run(uow=uow, actor=actor, program=program["code"],
                                             body=body)
    except PatronError as exc:
        if exc.status != 422:
            raise
        errors = {_sim_field(f.field.split(".")): t(f.reason, lang, **f.params)
                  for f in exc.fields} or {"form": t(exc.message, lang, **exc.params)}
        return _sim_page(request, actor, typed=typed, errors=errors, status_code=422)
    simulation_runs.start_thread(uow.engine, run_id, actor)
    return redirect(f"/loyalty/reports/simulation/{run_id}")


def _result_charts(result: dict[str, Any], lang: str) -> dict[str, plots.Chart]:
    cur, prop = result["current"], result["proposed"]
    names = (t("web.lr.sim.current", lang), t("web.lr.sim.proposed", lang))
    months = result["by_month"]
    tiers = sorted({(r["rank"] if r["rank"] is not None else -1, r["tier"] or "–")
                    for r in [*cur["tier_distribution"], *prop["tier_distribution"]]})
    labels = [name for _, name in tiers]

    def members(rows: list[dict[str, Any]]) -> list[int]:
        by = {(r["tier"] or "–"): r["members"] for r in rows}
        return [by.get(name, 0) for name in labels]

    return {
        "months": _months(plots.bar([r["month"] for r in months],
                            [plots.Series(names[0], [r["current"] for r in months]),
                             plots.Series(names[1], [r["proposed"] for r in months])],
                            x_title=t("web.lr.sim.month", lang),
                            y_title=t("web.lr.sim.net_points", lang), id="sim-month-chart")),
        "tiers": plots.bar(labels, [plots.Series(names[0], members(cur["tier_distribution"])),
                                    plots.Series(names[1], members(prop["tier_distribution"]))],
                           x_title=t("web.lr.tier", lang), y_title=t("web.lr.sim.members", lang),
                           id="sim-tier-chart"),
        "totals": plots.bar(
            [t("web.lr.sim.points", lang), t("web.lr.sim.clawed_back", lang),
             t("web.lr.sim.net_points", lang)],
            [plots.Series(names[0], [cur["points"], cur["clawed_back"], cur["net_points"]]),
             plots.Series(names[1], [prop["points"], prop["clawed_back"],
                                     prop["net_points"]])],
            id="sim-totals-chart"),
    }


@router.get("/loyalty/reports/simulation/{run_id}")
def simulation_run(request: Request, run_id: str, actor: Reader) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        out = simulation_runs.get_run(uow.c, actor=actor, run_id=path_id(run_id))
    programs = _programs()
    program = next((p for p in programs if p["code"] == out["program"]), None)
    charts = _result_charts(out["result"], lang) if out["result"] else {}
    error = None
    if out["error"]:
        e = out["error"]
        error = "; ".join([t(e["code"], lang, **(e.get("params") or {})), *(
            f"{f['field']}: {t(f['reason'], lang, **(f.get('params') or {}))}"
            for f in e.get("fields") or [])])
    window = None
    if out["result"]:
        window = {k: dt.datetime.fromisoformat(out["result"][k]) for k in ("from", "to")}
    return _page(request, actor, "simulation", "loyalty_reports/run.html", {
        "run": out, "r": out["result"], "charts": charts, "error": error, "window": window,
        "request_json": json.dumps(out["request"], ensure_ascii=False, indent=1),
        "running": out["status"] in ("queued", "running")},
        programs=programs, program=program)
