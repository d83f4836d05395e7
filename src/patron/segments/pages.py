"""Segment pages: the list of saved segments, the no-code builder (new or saved segment) with
its live count and sample, the size history chart, export and tagging of the members.

The builder itself is ``static/patron-segments.js``; this module gives it the catalogue of
condition types with their fields and operators and what to pick from (stores, tags, tiers...),
in the page's language.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection, select

from patron.config import get_settings
from patron.db import UnitOfWork, get_engine
from patron.errors import PatronError
from patron.i18n import t
from patron.security.model import Actor
from patron.segments import model, service
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


def _codes(conn: Connection, table: Any, label: str = "name") -> list[list[str]]:
    return [[r.code, f"{r.code} · {getattr(r, label)}"] for r in conn.execute(
        select(table.c.code, table.c[label]).order_by(table.c.code))]


def catalog(conn: Connection, lang: str) -> dict[str, Any]:
    """What the builder offers, in ``lang``: condition types, their parameters and choices."""
    from patron.customers.tables import custom_field_defs
    from patron.loyalty.tables import loyalty_programs, loyalty_tiers
    from patron.org.tables import brands, categories, channels, regions, stores
    from patron.tags.tables import tags

    def _(key: str) -> str:
        return t(key, lang)

    def opts(values: Any, prefix: str) -> list[list[str]]:
        return [[v, _(f"{prefix}.{v}")] for v in values]

    def p(name: str, kind: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "kind": kind, "label": _(f"web.segments.param.{name}"), **more}

    ops = {kind: opts(values, "web.segments.op") for kind, values in model.OPS_BY_KIND.items()}
    field_ops = {f: opts(values, "web.segments.op") for f, values in model.PROFILE_OPS.items()}
    fields = list(model.PROFILE_FIELDS)
    customs = list(conn.execute(select(custom_field_defs.c.key, custom_field_defs.c.label_zh,
                                       custom_field_defs.c.label_en, custom_field_defs.c.type)
                                .where(custom_field_defs.c.active.is_(True))
                                .order_by(custom_field_defs.c.key)))
    custom_kind = {"text": "text", "choice": "text", "number": "number", "date": "date",
                   "multi_choice": "multi_choice"}
    programs = _codes(conn, loyalty_programs)
    tiers = [[r.code, f"{r.program} · {r.name}"] for r in conn.execute(
        select(loyalty_tiers.c.code, loyalty_tiers.c.name,
               loyalty_programs.c.code.label("program"))
        .join(loyalty_programs, loyalty_programs.c.id == loyalty_tiers.c.program_id)
        .order_by(loyalty_programs.c.code, loyalty_tiers.c.rank))]
    places = opts(("registered", "not_registered", "purchased", "not_purchased"),
                  "web.segments.op")
    window = p("window", "window")
    numtest = p("value", "numtest")
    types = [
        ("profile", [p("field", "select", options=opts(fields, "web.segments.field")),
                     p("op", "select", depends="field", options_by={
                         f: field_ops.get(f) or ops[model.PROFILE_FIELDS[f]] for f in fields}),
                     p("value", "value", numeric_when={"field": ["age"]})]),
        ("custom_field", [p("key", "select", options=[
            [c.key, c.label_zh if lang == "zh" else c.label_en] for c in customs] or [["", "–"]]),
            p("op", "select", depends="key", options_by={
                c.key: ops[custom_kind.get(c.type, "text")] for c in customs}),
            p("value", "value", numeric_when={"key": [c.key for c in customs
                                                      if c.type == "number"]})]),
        ("identity", [p("kind", "select", options=opts(model.IDENTITY_KINDS,
                                                      "web.segments.identity")),
                      p("op", "select", options=opts(("present", "absent"),
                                                     "web.segments.op"))]),
        ("tag", [p("op", "select", options=opts(("has_any", "has_all", "has_none"),
                                               "web.segments.op")),
                 p("tags", "multi", options=_codes(conn, tags))]),
        ("tier", [p("program", "select", options=programs or [["", "–"]]),
                  p("op", "select", options=opts(("in", "not_in"), "web.segments.op")),
                  p("tiers", "multi", options=tiers)]),
        ("points", [numtest]),
        ("stored_value", [numtest]),
        ("rfm_score", [p("score", "select", options=opts(("r", "f", "m"),
                                                        "web.segments.score")), numtest]),
        ("rfm_segment", [p("op", "select", options=opts(("in", "not_in"), "web.segments.op")),
                         p("segments", "multi", options=[
                             [s, t(f"analytics.segment.{s}", lang)]
                             for s in model.RFM_SEGMENTS])]),
        ("lifecycle", [p("op", "select", options=opts(("in", "not_in"), "web.segments.op")),
                       p("stages", "multi", options=[
                           [s, t(f"analytics.stage.{s}", lang)]
                           for s in model.LIFECYCLE_STAGES])]),
        ("probability_active", [numtest]),
        ("clv", [numtest]),
        ("churn_risk", [numtest]),
        ("purchases", [p("measure", "select", options=opts(("spend", "orders", "aov"),
                                                           "web.segments.measure")),
                       numtest, window]),
        ("recency", [numtest]),
        ("bought", [p("op", "select", options=opts(("bought", "not_bought"),
                                                  "web.segments.op")),
                    p("categories", "multi", options=_codes(conn, categories)),
                    p("skus", "list_text"), window]),
        ("store", [p("op", "select", options=places),
                   p("stores", "multi", options=_codes(conn, stores)), window]),
        ("region", [p("op", "select", options=places),
                    p("regions", "multi", options=_codes(conn, regions)), window]),
        ("brand", [p("op", "select", options=places),
                   p("brands", "multi", options=_codes(conn, brands)), window]),
        ("channel", [p("op", "select", options=places),
                     p("channels", "multi", options=_codes(conn, channels)), window]),
        ("hour_slot", [p("slot", "select", options=opts(model.SLOTS, "web.segments.slot")),
                       p("min_share", "number", default=0.5)]),
        ("birthday", [p("within_days", "number", default=7)]),
        ("consent", [p("channel", "select", options=opts(model.CONSENT_CHANNELS,
                                                        "web.segments.channel")),
                     p("op", "select", options=opts(("granted", "not_granted"),
                                                    "web.segments.op"))]),
    ]
    labels = {k: _(f"web.segments.ui.{k}") for k in (
        "all", "any", "add_condition", "add_group", "remove", "empty_group", "everyone",
        "any_time", "last_days", "dates", "counting", "as_of")}
    return {"types": [{"type": name, "label": _(f"web.segments.type.{name}"), "params": params}
                      for name, params in types],
            "number_ops": opts(model.NUMBER_OPS, "web.segments.op"), "labels": labels,
            "timezone": get_settings().default_timezone}


def _builder(request: Request, actor: Actor, *, segment: dict[str, Any] | None) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        cat = catalog(uow.c, lang)
        context: dict[str, Any] = {"catalog": cat, "segment": segment,
                                   "can_manage": actor.can("segments.manage"),
                                   "can_export": actor.can("export"),
                                   "definition": (segment or {}).get("definition")
                                   or {"match": "all", "conditions": []}}
        if segment is not None:
            history = segment.get("history") or []
            context["chart"] = plots.line(
                [h["day"] for h in history],
                [plots.Series(t("web.segments.size", lang), [h["customers"] for h in history])],
                x_title=t("web.segments.day", lang), y_title=t("web.segments.size", lang),
                dates=True, id="segment-history") if history else None
            if actor.can("tags.apply"):
                from patron.tags import service as tags_service

                context["tags"] = [tg for tg in tags_service.list_tags(uow.c, actor=actor)
                                   if tg["kind"] == "manual"]
    return render(request, "segments/builder.html", context, actor=actor)


@router.get("/segments")
def list_page(request: Request,
              actor: Annotated[Actor, Depends(need("segments.read"))]) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = service.list_segments(uow.c, actor=actor)
    return render(request, "segments/list.html", {"items": items}, actor=actor)


@router.get("/segments/new")
def new_page(request: Request,
             actor: Annotated[Actor, Depends(need("segments.read"))]) -> Response:
    return _builder(request, actor, segment=None)


@router.get("/segments/{raw_id}")
def segment_page(raw_id: str, request: Request,
                 actor: Annotated[Actor, Depends(need("segments.read"))]) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        segment = service.get_segment(uow.c, actor=actor, segment_id=path_id(raw_id),
                                      with_count=False)
    return _builder(request, actor, segment=segment)


@router.post("/segments/{raw_id}/tag")
async def tag_members(raw_id: str, request: Request,
                      actor: Annotated[Actor, Depends(need("tags.apply"))]) -> Response:
    """Add or remove a manual tag for every member of the saved segment (within the user's
    stores)."""
    from patron.tags import service as tags_service

    segment_id = path_id(raw_id)
    form = await posted_form(request)
    action = "remove" if form.get("action") == "remove" else "add"
    try:
        with UnitOfWork(get_engine()) as uow:
            out = tags_service.apply_tag(uow=uow, actor=actor, code=str(form.get("tag") or ""),
                                         action=action, segment_id=segment_id)
    except PatronError:
        raise
    return redirect(f"/segments/{segment_id}?tagged={out['changed']}&action={action}")
