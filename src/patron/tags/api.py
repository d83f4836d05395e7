"""Tags over HTTP under /api/v1: list with counts, create (manual or rule), change, delete,
apply or remove in bulk, history, a customer's tags, refresh of rule tags."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from patron.customers.queries import visible_customer
from patron.deps import UowDep, require
from patron.security.model import Actor
from patron.tags import service
from patron.tags.schemas import TagApply, TagCreate, TagUpdate

router = APIRouter(tags=["tags"])

Reader = Annotated[Actor, Depends(require("tags.read"))]
Manager = Annotated[Actor, Depends(require("tags.manage"))]
Applier = Annotated[Actor, Depends(require("tags.apply"))]
Code = Annotated[str, Path(min_length=1, max_length=64)]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/tags")
def list_tags(uow: UowDep, actor: Reader) -> Any:
    """Every tag with how many customers (that the caller may see) carry it."""
    return {"items": service.list_tags(uow.c, actor=actor)}


@router.post("/tags", status_code=201)
def create_tag(body: TagCreate, uow: UowDep, actor: Manager) -> Any:
    """A manual tag, or a rule tag when a segment ``definition`` is given (its members are
    computed at once and kept current by Patron)."""
    return service.create_tag(uow=uow, actor=actor, code=body.code, name=body.name,
                              description=body.description, definition=body.definition)


@router.get("/tags/{code}")
def get_tag(code: Code, uow: UowDep, actor: Reader) -> Any:
    """The tag, its count, its daily counts and its latest additions and removals."""
    return service.get_tag(uow.c, actor=actor, code=code)


@router.patch("/tags/{code}")
def update_tag(code: Code, body: TagUpdate, uow: UowDep, actor: Manager) -> Any:
    return service.update_tag(uow=uow, actor=actor, code=code,
                              changes=body.model_dump(exclude_unset=True))


@router.delete("/tags/{code}", status_code=204)
def delete_tag(code: Code, uow: UowDep, actor: Manager) -> None:
    service.delete_tag(uow=uow, actor=actor, code=code)


@router.get("/tags/{code}/events")
def tag_events(code: Code, uow: UowDep, actor: Reader,
               before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
               customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
               limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    """Who or what added or removed the tag, when and why, newest first."""
    return {"items": service.tag_history(uow.c, actor=actor, code=code, limit=limit,
                                         before_id=before_id, customer_id=customer_id)}


@router.post("/tags/{code}/apply")
def apply_tag(code: Code, body: TagApply, uow: UowDep, actor: Applier) -> Any:
    """Add or remove a manual tag for customer ids, a saved segment's members, a definition's
    members or a pasted list of member codes / phones (lines that match no customer the
    caller may see come back in ``unmatched``; the others are changed)."""
    unmatched: list[str] = []
    ids = body.customer_ids
    if body.pasted is not None:
        resolved = service.resolve_pasted(uow.c, actor=actor, text=body.pasted)
        ids, unmatched = resolved["customer_ids"], resolved["unmatched"]
        if not ids:
            return {"code": code, "action": body.action, "changed": 0, "unmatched": unmatched}
    out = service.apply_tag(uow=uow, actor=actor, code=code, action=body.action,
                            customer_ids=ids, segment_id=body.segment_id,
                            definition=body.definition, note=body.note)
    return {**out, "unmatched": unmatched}


@router.post("/tags/refresh")
def refresh_rules(uow: UowDep, actor: Manager) -> Any:
    """Evaluate every rule tag again for every customer now."""
    return service.refresh_rule_tags(uow=uow, actor=actor)


@router.get("/customers/{customer_id}/tags")
def customer_tags(customer_id: Id, uow: UowDep, actor: Reader) -> Any:
    visible_customer(uow.c, actor, customer_id)
    return {"items": service.tags_of(uow.c, customer_id)}
