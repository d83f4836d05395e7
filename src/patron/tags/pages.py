"""Tag pages: every tag with its count, creating one (manual, or a rule following a saved
segment), a tag's daily counts and history, applying it to a pasted list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from patron.db import UnitOfWork, get_engine
from patron.i18n import t
from patron.security.model import Actor
from patron.tags import service
from patron.web import plots
from patron.web.forms import service_errors
from patron.web.render import PageRoute, need, page_language, posted_form, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _list(request: Request, actor: Actor, *, errors: dict[str, str] | None = None,
          status_code: int = 200) -> Response:
    from patron.segments import service as segments

    with UnitOfWork(get_engine(), readonly=True) as uow:
        items = service.list_tags(uow.c, actor=actor)
        saved = segments.list_segments(uow.c, actor=actor) if actor.can("segments.read") else []
    return render(request, "tags/list.html", {"items": items, "segments": saved,
                                              "errors": errors or {}},
                  actor=actor, status_code=status_code)


@router.get("/tags")
def list_page(request: Request,
              actor: Annotated[Actor, Depends(need("tags.read"))]) -> Response:
    return _list(request, actor)


@router.post("/tags")
async def create(request: Request,
                 actor: Annotated[Actor, Depends(need("tags.manage"))]) -> Response:
    from patron.errors import PatronError
    from patron.segments import service as segments

    form = await posted_form(request)
    code = str(form.get("code") or "").strip()
    segment = str(form.get("segment_id") or "")
    try:
        with UnitOfWork(get_engine()) as uow:
            definition = None
            if segment.isdigit():
                definition = segments.saved_definition(uow.c, int(segment),
                                                       scope=actor).as_json()
            service.create_tag(uow=uow, actor=actor, code=code,
                               name=str(form.get("name") or ""),
                               description=str(form.get("description") or "") or None,
                               definition=definition)
    except PatronError as exc:
        if exc.status not in (409, 422):
            raise
        lang = page_language(request, actor)
        return _list(request, actor, errors=service_errors(exc, lang, default_field="code"),
                     status_code=exc.status)
    return redirect(f"/tags/{code}?created=1")


@router.get("/tags/{code}")
def tag_page(code: str, request: Request,
             actor: Annotated[Actor, Depends(need("tags.read"))]) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        tag = service.get_tag(uow.c, actor=actor, code=code, events=100)
    history = tag["history"]
    chart = plots.line([h["day"] for h in history],
                       [plots.Series(t("web.tags.customers", lang),
                                     [h["customers"] for h in history])],
                       x_title=t("web.segments.day", lang),
                       y_title=t("web.tags.customers", lang), dates=True,
                       id="tag-history") if history else None
    return render(request, "tags/detail.html", {"tag": tag, "chart": chart}, actor=actor)


@router.post("/tags/{code}/apply")
async def apply(code: str, request: Request,
                actor: Annotated[Actor, Depends(need("tags.apply"))]) -> Response:
    from urllib.parse import quote

    form = await posted_form(request)
    action = "remove" if form.get("action") == "remove" else "add"
    with UnitOfWork(get_engine()) as uow:
        resolved = service.resolve_pasted(uow.c, actor=actor, text=str(form.get("pasted") or ""))
    changed = 0
    if resolved["customer_ids"]:
        with UnitOfWork(get_engine()) as uow:
            changed = service.apply_tag(uow=uow, actor=actor, code=code, action=action,
                                        customer_ids=resolved["customer_ids"],
                                        note=str(form.get("note") or "") or None)["changed"]
    missing = quote(", ".join(resolved["unmatched"][:50]))
    return redirect(f"/tags/{code}?applied={changed}&unmatched={missing}")
