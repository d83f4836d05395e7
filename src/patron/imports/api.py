"""File import over HTTP: upload a CSV or .xlsx, follow the job; column mappings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from patron.deps import UowDep, request_language, require
from patron.imports import service
from patron.imports.schemas import (
    ColumnMappingCreate,
    ColumnMappingRead,
    ColumnMappingUpdate,
    ImportJobRead,
)
from patron.security.model import Actor

router = APIRouter(tags=["imports"])
Importer = Annotated[Actor, Depends(require("import"))]


@router.post("/imports", status_code=202, response_model=ImportJobRead,
             responses={422: {"description": "Not a CSV/XLSX file, unknown columns or mapping, "
                                             "or no rows"}})
def upload_import(uow: UowDep, actor: Importer, request: Request,
                  background: BackgroundTasks, file: Annotated[UploadFile, File()],
                  mapping: Annotated[str | None, Form()] = None) -> JSONResponse:
    """Upload an order file (multipart field ``file``; optional ``mapping``: a saved column
    mapping's name). The file is checked at once (type, columns, at least one row), then
    imported in the background: 202 with the job, to follow at ``GET /imports/{id}``."""
    filename = file.filename or "upload.csv"
    path = service.save_upload(source=file.file, filename=filename)
    try:
        job_id = service.start_import(uow=uow, actor=actor, path=path, filename=filename,
                                      mapping=mapping or None)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    background.add_task(service.run_uploaded_import, actor=actor, job_id=job_id, path=path)
    job = service.get_job(uow=uow, actor=actor, job_id=job_id, lang=_lang(request, actor))
    # End the read here: on SQLite it would hold the one write lock that the background import
    # is about to take.
    uow.rollback()
    return JSONResponse(job.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/api/v1/imports/{job_id}"})


@router.get("/imports", response_model=list[ImportJobRead])
def list_imports(uow: UowDep, actor: Importer, request: Request,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[ImportJobRead]:
    return service.list_jobs(uow=uow, actor=actor, limit=limit, lang=_lang(request, actor))


@router.get("/imports/{job_id}", response_model=ImportJobRead)
def get_import(job_id: int, uow: UowDep, actor: Importer, request: Request,
               errors_offset: Annotated[int, Query(ge=0)] = 0,
               errors_limit: Annotated[int, Query(ge=0, le=1000)] = 100) -> ImportJobRead:
    """A job's status and counts, and its rejected rows (row as in the file, header = row 1;
    the file's column; the reason in the reader's language), a page at a time."""
    return service.get_job(uow=uow, actor=actor, job_id=job_id, lang=_lang(request, actor),
                           errors_offset=errors_offset, errors_limit=errors_limit)


@router.get("/import-mappings", response_model=list[ColumnMappingRead])
def list_mappings(uow: UowDep, actor: Importer) -> list[ColumnMappingRead]:
    return service.list_mappings(uow=uow)


@router.post("/import-mappings", status_code=201, response_model=ColumnMappingRead)
def create_mapping(body: ColumnMappingCreate, uow: UowDep,
                   actor: Importer) -> ColumnMappingRead:
    return service.create_mapping(uow=uow, actor=actor, mapping=body)


@router.get("/import-mappings/{mapping_id}", response_model=ColumnMappingRead)
def get_mapping(mapping_id: int, uow: UowDep, actor: Importer) -> ColumnMappingRead:
    return service.get_mapping(uow=uow, mapping_id=mapping_id)


@router.patch("/import-mappings/{mapping_id}", response_model=ColumnMappingRead)
def update_mapping(mapping_id: int, body: ColumnMappingUpdate, uow: UowDep,
                   actor: Importer) -> ColumnMappingRead:
    return service.update_mapping(uow=uow, actor=actor, mapping_id=mapping_id, changes=body)


@router.delete("/import-mappings/{mapping_id}", status_code=204,
               dependencies=[Depends(require("records.delete"))])
def delete_mapping(mapping_id: int, uow: UowDep, actor: Importer) -> Response:
    service.delete_mapping(uow=uow, actor=actor, mapping_id=mapping_id)
    return Response(status_code=204)


def _lang(request: Request, actor: Actor) -> str:
    explicit = request.query_params.get("lang") or request.headers.get("accept-language")
    return request_language(request) if explicit else actor.language
