"""Import pages: upload an order file, follow its progress and bad rows, edit column mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from patron.db import UnitOfWork, get_engine
from patron.deps import UowDep
from patron.errors import PatronError
from patron.i18n import t
from patron.imports import service as imports
from patron.imports.model import CANONICAL_COLUMNS
from patron.imports.schemas import ColumnMappingCreate, ColumnMappingUpdate
from patron.security.model import Actor
from patron.web.forms import service_errors
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

ERRORS_PAGE_SIZE = 50
RUNNING = ("queued", "running")


def _imports_page(request: Request, actor: Actor, *, errors: dict[str, str] | None = None,
                  header_errors: list[str] | None = None, chosen: str = "",
                  status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    with UnitOfWork(get_engine(), readonly=True) as uow:
        jobs = imports.list_jobs(uow=uow, actor=actor, limit=30, lang=lang)
        mappings = imports.list_mappings(uow=uow)
    return render(request, "imports/index.html", {
        "jobs": jobs, "mappings": mappings, "errors": errors or {},
        "mapping_options": [(m.name, m.name) for m in mappings],
        "header_errors": header_errors or [], "chosen": chosen,
        "running": any(j.status in RUNNING for j in jobs),
    }, actor=actor, status_code=status_code)


@router.get("/imports")
def imports_page(request: Request,
                 actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    return _imports_page(request, actor)


@router.post("/imports")
async def upload(request: Request, uow: UowDep, background: BackgroundTasks,
                 actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    form = await posted_form(request)
    lang = page_language(request, actor)
    upload = form.get("file")
    mapping = str(form.get("mapping") or "").strip() or None
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _imports_page(request, actor, errors={"file": t("missing", lang)},
                             chosen=mapping or "", status_code=422)
    path: Path | None = None
    try:
        path = imports.save_upload(source=upload.file, filename=upload.filename)
        job_id = imports.start_import(uow=uow, actor=actor, path=path, filename=upload.filename,
                                      mapping=mapping)
    except PatronError as exc:
        if path is not None:
            path.unlink(missing_ok=True)
        field = "mapping" if any(f.field == "mapping" for f in exc.fields) else "file"
        header = [t(f.reason, lang, **f.params) for f in exc.fields if f.field != "mapping"]
        return _imports_page(request, actor, errors={field: t(exc.message, lang, **exc.params)},
                             header_errors=header, chosen=mapping or "",
                             status_code=exc.status)
    # The rows are read after the response: the job page shows the progress meanwhile.
    background.add_task(imports.run_uploaded_import, actor=actor, job_id=job_id, path=path)
    return redirect(f"/imports/{job_id}")


@router.get("/imports/mappings/new")
def new_mapping(request: Request,
                actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    return _mapping_page(request, actor, None, _blank_mapping(), {})


@router.post("/imports/mappings")
async def create_mapping(request: Request, uow: UowDep,
                         actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    form = await posted_form(request)
    data = _mapping_form(form)
    lang = page_language(request, actor)
    try:
        model = ColumnMappingCreate.model_validate(data)
        imports.create_mapping(uow=uow, actor=actor, mapping=model)
    except ValidationError as exc:
        return _mapping_page(request, actor, None, data, _pydantic_errors(exc, lang), 422)
    except PatronError as exc:
        return _mapping_page(request, actor, None, data,
                             service_errors_full(exc, lang), exc.status)
    return redirect("/imports?saved=1#mappings")


@router.get("/imports/mappings/{mapping_id}")
def edit_mapping(request: Request, mapping_id: str,
                 actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    with UnitOfWork(get_engine(), readonly=True) as uow:
        m = imports.get_mapping(uow=uow, mapping_id=path_id(mapping_id))
    data = {"name": m.name, "columns": dict(m.columns), "defaults": dict(m.defaults),
            "ignored": list(m.ignored), "datetime_format": m.datetime_format}
    return _mapping_page(request, actor, path_id(mapping_id), data, {})


@router.post("/imports/mappings/{mapping_id}")
async def update_mapping(request: Request, mapping_id: str, uow: UowDep,
                         actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    form = await posted_form(request)
    data = _mapping_form(form)
    lang = page_language(request, actor)
    mid = path_id(mapping_id)
    try:
        changes = ColumnMappingUpdate.model_validate(data)
        imports.update_mapping(uow=uow, actor=actor, mapping_id=mid, changes=changes)
    except ValidationError as exc:
        return _mapping_page(request, actor, mid, data, _pydantic_errors(exc, lang), 422)
    except PatronError as exc:
        if exc.status == 404:
            raise
        return _mapping_page(request, actor, mid, data, service_errors_full(exc, lang),
                             exc.status)
    return redirect("/imports?saved=1#mappings")


@router.get("/imports/{job_id}")
def job_page(request: Request, job_id: str,
             actor: Annotated[Actor, Depends(need("import"))]) -> Response:
    lang = page_language(request, actor)
    raw = request.query_params.get("page") or "1"
    page = max(int(raw), 1) if raw.isdigit() else 1
    with UnitOfWork(get_engine(), readonly=True) as uow:
        job = imports.get_job(uow=uow, actor=actor, job_id=path_id(job_id), lang=lang,
                              errors_offset=(page - 1) * ERRORS_PAGE_SIZE,
                              errors_limit=ERRORS_PAGE_SIZE)
    percent = None
    if job.rows_total:
        percent = min(100, round(100 * job.rows_read / job.rows_total))
    return render(request, "imports/job.html", {
        "job": job, "percent": percent, "running": job.status in RUNNING, "page": page,
        "has_next": page * ERRORS_PAGE_SIZE < job.errors_stored,
    }, actor=actor)


# --- the mapping form: one row per canonical column ------------------------------------------

def _blank_mapping() -> dict[str, Any]:
    return {"name": "", "columns": {}, "defaults": {}, "ignored": [], "datetime_format": None}


def _mapping_form(form: FormData) -> dict[str, Any]:
    def text(name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    ignored_text = text("ignored").replace("，", ",").replace("\n", ",")
    return {
        "name": text("name"),
        "columns": {c: text(f"columns.{c}") for c in CANONICAL_COLUMNS if text(f"columns.{c}")},
        "defaults": {c: text(f"defaults.{c}") for c in CANONICAL_COLUMNS
                     if text(f"defaults.{c}")},
        "ignored": [s.strip() for s in ignored_text.split(",") if s.strip()],
        "datetime_format": text("datetime_format") or None,
    }


def _pydantic_errors(exc: ValidationError, lang: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "form"
        ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
        out.setdefault(name, t(err["type"], lang, **ctx))
    return out


def service_errors_full(exc: PatronError, lang: str) -> dict[str, str]:
    """Like :func:`service_errors`, keeping dotted names (``columns.phone``) whole."""
    if exc.fields:
        return {f.field: t(f.reason, lang, **f.params) for f in exc.fields}
    return service_errors(exc, lang, default_field="form")


def _mapping_page(request: Request, actor: Actor, mapping_id: int | None,
                  data: dict[str, Any], errors: dict[str, str],
                  status_code: int = 200) -> Response:
    return render(request, "imports/mapping.html", {
        "mapping_id": mapping_id, "m": data, "errors": errors, "canonical": CANONICAL_COLUMNS,
    }, actor=actor, status_code=status_code)
