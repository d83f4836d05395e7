"""Segments over HTTP under /api/v1: preview a definition (live count and sample), saved
segments (the same JSON), their members, size history and export."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse

from patron.deps import RecentAuth, UowDep, require
from patron.security.model import Actor
from patron.segments import service
from patron.segments.schemas import PreviewIn, SegmentCreate, SegmentUpdate

router = APIRouter(tags=["segments"])

Reader = Annotated[Actor, Depends(require("segments.read"))]
Manager = Annotated[Actor, Depends(require("segments.manage"))]
Exporter = Annotated[Actor, Depends(require("export"))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
MEDIA = {"csv": "text/csv; charset=utf-8",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@router.post("/segments/preview")
def preview(body: PreviewIn, uow: UowDep, actor: Reader) -> Any:
    """How many customers a definition selects now (within the caller's stores) and a masked
    sample of them; nothing is written. A bad definition is a 422 naming each bad part by its
    path (``definition.conditions.1.window``)."""
    return service.preview(uow.c, actor=actor, definition=body.definition, limit=body.limit)


@router.get("/segments")
def list_segments(uow: UowDep, actor: Reader) -> Any:
    return {"items": service.list_segments(uow.c, actor=actor)}


@router.post("/segments", status_code=201)
def create_segment(body: SegmentCreate, uow: UowDep, actor: Manager) -> Any:
    return service.create_segment(uow=uow, actor=actor, name=body.name,
                                  description=body.description, definition=body.definition)


@router.get("/segments/{segment_id}")
def get_segment(segment_id: Id, uow: UowDep, actor: Reader) -> Any:
    """The segment with its current size (within the caller's stores) and daily history."""
    return service.get_segment(uow.c, actor=actor, segment_id=segment_id)


@router.patch("/segments/{segment_id}")
def update_segment(segment_id: Id, body: SegmentUpdate, uow: UowDep, actor: Manager) -> Any:
    return service.update_segment(uow=uow, actor=actor, segment_id=segment_id,
                                  changes=body.model_dump(exclude_unset=True))


@router.delete("/segments/{segment_id}", status_code=204)
def delete_segment(segment_id: Id, uow: UowDep, actor: Manager) -> None:
    service.delete_segment(uow=uow, actor=actor, segment_id=segment_id)


@router.get("/segments/{segment_id}/members")
def members(segment_id: Id, uow: UowDep, actor: Reader,
            limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    """The count and a masked sample of the members now."""
    definition = service.saved_definition(uow.c, segment_id, scope=actor)
    return {"count": service.count(uow.c, definition, scope=actor),
            "sample": service.sample(uow.c, definition, scope=actor, limit=limit)}


@router.get("/segments/{segment_id}/export.{fmt}", dependencies=[RecentAuth])
def export(segment_id: Id, fmt: Literal["csv", "xlsx"], uow: UowDep, actor: Exporter,
           unmasked: bool = False) -> FileResponse:
    """The members through the customer export: masked unless ``unmasked=true`` is asked by
    someone who may reveal personal data; audited with the segment named."""
    path = service.export_members(uow=uow, actor=actor, segment_id=segment_id, fmt=fmt,
                                  unmasked=unmasked)
    return FileResponse(path, media_type=MEDIA[fmt], filename=path.name)
