"""Customers over HTTP: lookup, profile, merge and undo."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from patron.customers import service
from patron.deps import UowDep, require
from patron.security.model import Actor

router = APIRouter(tags=["customers"])


class MergeIn(BaseModel):
    customer_ids: tuple[int, int]
    reason: str = Field(min_length=1, max_length=500)


@router.post("/customers/merge", status_code=201)
def merge(body: MergeIn, uow: UowDep,
          actor: Annotated[Actor, Depends(require("customers.merge"))]) -> dict[str, Any]:
    a, b = body.customer_ids
    merge_id = service.merge_customers(uow=uow, survivor_id=a, merged_id=b, reason=body.reason,
                                       actor=actor)
    return {"merge_id": merge_id, "survivor_id": min(a, b), "merged_id": max(a, b)}


@router.post("/customers/merges/{merge_id}/undo", status_code=200)
def undo(merge_id: int, uow: UowDep,
         actor: Annotated[Actor, Depends(require("customers.undo_merge"))]) -> dict[str, Any]:
    service.undo_merge(uow=uow, merge_id=merge_id, actor=actor)
    return {"merge_id": merge_id, "undone": True}
