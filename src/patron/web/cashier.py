"""The cashier's screen: find a member by phone, member code or the QR card's payload, enter a
basket, get the checkout quote (tier and member discount, the member's coupons and which apply,
points to earn, points that may pay and their value, stored value, the tier benefits to hand
over), choose coupons, points and stored value, and commit.

Plain forms: it works without JavaScript (``/static/patron-cashier.js`` only adds line rows
and stops a second click while a form is sent). Every figure comes from the checkout service's
quote; the commit goes through the checkout service under an idempotency key the page made
when it showed the quote, so a form submitted twice (a double click, a reload, the back
button) records one sale. The quote's digest travels with the form: a basket changed after
its quote is quoted again instead of being committed unseen."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Connection, select
from starlette.datastructures import FormData

from patron.checkout import service as checkout
from patron.checkout.schemas import CommitIn, QuoteIn
from patron.coupons import service as coupons
from patron.db import UnitOfWork, get_engine, utcnow
from patron.deps import UowDep
from patron.errors import NotFound, PatronError
from patron.i18n import t
from patron.loyalty.tables import loyalty_programs
from patron.org.tables import stores
from patron.security.model import Actor
from patron.web.members import new_key, store_options
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

ID_KINDS = ("phone", "member_code", "qr")
TENDERS = ("cash", "wechat_pay", "alipay", "bank_card", "other")
MIN_ROWS = 4
MAX_ROWS = 60
COUPONS_CHECKED = 10  # coupons tried one by one against the basket ("applicable")

Seller = Annotated[Actor, Depends(need("checkout.sell"))]


# --- the form -----------------------------------------------------------------------------

def _text(form: FormData, name: str) -> str:
    raw = form.get(name)
    return raw.strip() if isinstance(raw, str) else ""


def _fen(raw: str) -> int:
    """Yuan as typed (``28``, ``28.5``, ``28.50``) to fen; anything else a ValueError."""
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise ValueError("decimal_parsing") from exc
    if not value.is_finite():
        raise ValueError("decimal_parsing")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("decimal_max_places")
    if value < 0:
        raise ValueError("greater_than_equal")
    return int(value * 100)


def read_form(form: FormData) -> dict[str, Any]:
    """What the cashier typed, as typed (for redisplay)."""
    rows = []
    skus, cats = form.getlist("sku"), form.getlist("category")
    qtys, prices = form.getlist("qty"), form.getlist("price")
    for i in range(min(max(len(skus), len(qtys), len(prices)), MAX_ROWS)):
        def at(values: list[Any], i: int = i) -> str:
            return values[i].strip() if i < len(values) and isinstance(values[i], str) else ""

        rows.append({"sku": at(skus), "category": at(cats), "qty": at(qtys),
                     "price": at(prices)})
    return {"store": _text(form, "store"), "id_kind": _text(form, "id_kind") or "phone",
            "id_value": _text(form, "id_value"), "rows": rows,
            "coupons": [c.strip() for c in form.getlist("coupon")
                        if isinstance(c, str) and c.strip()][:10],
            "redeem_points": _text(form, "redeem_points"),
            "stored_value": _text(form, "stored_value"),
            "tender": _text(form, "tender") or "cash",
            "idempotency_key": _text(form, "idempotency_key"),
            "order_number": _text(form, "order_number"),
            "quoted": _text(form, "quoted"), "payable_fen": _text(form, "payable_fen")}


def _basket_request(typed: dict[str, Any], errors: dict[str, str], lang: str
                    ) -> dict[str, Any] | None:
    """The checkout's basket request from the form, or None with the reasons by field."""
    lines = []
    for i, row in enumerate(typed["rows"]):
        if not any(row.values()):
            continue
        if not row["sku"]:
            errors[f"lines.{i}.sku"] = t("missing", lang)
        qty = row["qty"] or "1"
        price = None
        if not row["price"]:
            errors[f"lines.{i}.price"] = t("missing", lang)
        else:
            try:
                price = _fen(row["price"])
            except ValueError as exc:
                errors[f"lines.{i}.price"] = t(str(exc), lang, decimal_places=2, ge=0)
        lines.append((i, {"sku": row["sku"], "category": row["category"] or None,
                          "quantity": qty, "unit_price_fen": price}))
    body: dict[str, Any] = {"store": typed["store"],
                            "lines": [line for _, line in lines]}
    if typed["id_value"]:
        kind = typed["id_kind"] if typed["id_kind"] in ID_KINDS else "phone"
        body["member"] = {kind: typed["id_value"]}
    if typed["coupons"]:
        body["coupons"] = typed["coupons"]
    if typed["redeem_points"]:
        body["redeem_points"] = typed["redeem_points"]
    if typed["stored_value"]:
        try:
            body["stored_value_fen"] = _fen(typed["stored_value"])
        except ValueError as exc:
            errors["stored_value"] = t(str(exc), lang, decimal_places=2, ge=0)
    body["_rows"] = [i for i, _ in lines]
    return None if errors else body


def field_of(loc: list[str], rows: list[int]) -> str:
    """A checkout field (``lines.0.quantity``, ``member.phone``) to the form's field."""
    head = loc[0] if loc else "form"
    if head == "lines" and len(loc) > 1 and str(loc[1]).isdigit():
        n = int(loc[1])
        row = rows[n] if n < len(rows) else n
        column = {"quantity": "qty", "unit_price_fen": "price", "sku": "sku",
                  "category": "category"}.get(str(loc[2]) if len(loc) > 2 else "", "sku")
        return f"lines.{row}.{column}"
    return {"lines": "lines", "member": "id_value", "redeem_points": "redeem_points",
            "stored_value_fen": "stored_value", "coupons": "coupons", "store": "store",
            "payments": "tender", "channel": "form", "purchased_at": "form"}.get(head, "form")


def _pydantic_errors(exc: ValidationError, rows: list[int], lang: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
        errors.setdefault(field_of(loc, rows), t(err["type"], lang, **ctx))
    return errors


def _service_errors(exc: PatronError, rows: list[int], lang: str) -> dict[str, str]:
    if exc.fields:
        return {field_of(f.field.split("."), rows): t(f.reason, lang, **f.params)
                for f in exc.fields}
    return {"form": t(exc.message, lang, **exc.params)}


def _digest(body: dict[str, Any]) -> str:
    data = {k: v for k, v in body.items() if k != "_rows"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# --- reading ------------------------------------------------------------------------------

def _program_code(conn: Connection, store_code: str) -> str | None:
    brand = conn.execute(select(stores.c.brand_id).where(stores.c.code == store_code)
                         ).scalar()
    if brand is None:
        return None
    return conn.execute(select(loyalty_programs.c.code).where(
        loyalty_programs.c.brand_id == brand)).scalar()


def _member_coupons(conn: Connection, actor: Actor, member_id: int) -> list[dict[str, Any]]:
    if not actor.can("coupons.redeem"):
        return []
    return [c for c in coupons.member_coupons(conn, actor=actor, member_id=member_id)
            if c["usable"]]


def _applicable(conn: Connection, actor: Actor, body: dict[str, Any],
                usable: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each of the member's usable coupons tried alone against the basket (a quote each,
    nothing written): accepted with its discount, or the reason it is refused."""
    out: dict[str, dict[str, Any]] = {}
    for c in usable[:COUPONS_CHECKED]:
        single = {k: v for k, v in body.items() if k != "_rows"}
        single["coupons"] = [c["code"]]
        try:
            q = checkout.quote(conn, actor=actor, body=QuoteIn.model_validate(single))
        except (PatronError, ValidationError):
            continue
        accepted = q["coupons"]["accepted"]
        if accepted:
            out[c["code"]] = {"ok": True, "discount_fen": accepted[0]["discount_fen"]}
        elif q["coupons"]["refused"]:
            r = q["coupons"]["refused"][0]
            out[c["code"]] = {"ok": False, "reason": r["reason"], "params": r["params"]}
    return out


def _quote(conn: Connection, actor: Actor, body: dict[str, Any], lang: str
           ) -> tuple[dict[str, Any] | None, dict[str, str]]:
    rows = body["_rows"]
    try:
        request = QuoteIn.model_validate({k: v for k, v in body.items() if k != "_rows"})
    except ValidationError as exc:
        return None, _pydantic_errors(exc, rows, lang)
    try:
        return checkout.quote(conn, actor=actor, body=request), {}
    except PatronError as exc:
        if exc.status in (401, 403):
            raise
        return None, _service_errors(exc, rows, lang)


def _lookup(conn: Connection, actor: Actor, body: dict[str, Any], lang: str
            ) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The member alone, before the basket: the checkout's own quote of a one-line probe at
    price 0 (a quote needs a line) finds the member, tier, benefits, points and stored value
    exactly as the checkout will; its prices are never shown."""
    probe = {**body, "lines": [{"sku": "-", "quantity": "1", "unit_price_fen": 0}],
             "_rows": [0]}
    probe.pop("coupons", None)
    probe.pop("redeem_points", None)
    probe.pop("stored_value_fen", None)
    quote, errors = _quote(conn, actor, probe, lang)
    if quote is None:
        errors.pop("lines", None)
        return None, errors
    return {"member": quote["member"], "tier_benefits": quote["tier_benefits"],
            "points": quote["points"], "stored_value": quote["stored_value"]}, {}


# --- the page -----------------------------------------------------------------------------

def _page(request: Request, actor: Actor, typed: dict[str, Any], *, action: str,
          errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    lang = page_language(request, actor)
    errors = dict(errors or {})
    quote = member = None
    usable: list[dict[str, Any]] = []
    applicable: dict[str, dict[str, Any]] = {}
    digest = ""
    with UnitOfWork(get_engine(), readonly=True) as uow:
        options = store_options(uow.c, actor)
        if not typed["store"] and options:
            typed["store"] = options[0][0]
        program = _program_code(uow.c, typed["store"]) if typed["store"] else None
        body = None if errors else _basket_request(typed, errors, lang)
        if body is not None and action != "more":
            if body["lines"]:
                quote, errs = _quote(uow.c, actor, body, lang)
                errors.update(errs)
                if quote is not None:
                    digest = _digest(body)
                    member = {"member": quote["member"], "points": quote["points"],
                              "stored_value": quote["stored_value"],
                              "tier_benefits": quote["tier_benefits"]}
            else:
                if typed["id_value"]:
                    member, errs = _lookup(uow.c, actor, body, lang)
                    errors.update(errs)
                if action in ("quote", "commit"):
                    errors["lines"] = t("web.cashier.no_lines", lang)
            if member is not None and member["member"] is not None:
                usable = _member_coupons(uow.c, actor, int(member["member"]["id"]))
                if quote is not None and usable:
                    applicable = _applicable(uow.c, actor, body, usable)
    rows = typed["rows"]
    wanted = len(rows) + (3 if action == "more" else 0)
    while len(rows) < max(MIN_ROWS, wanted):
        rows.append({"sku": "", "category": "", "qty": "", "price": ""})
    # A fresh key for every quote shown: the commit of this quote is done once, however often
    # its form is sent.
    key = new_key("web-till")
    store = typed["store"] or "NA"
    return render(request, "cashier/index.html", {
        "f": typed, "errors": errors, "quote": quote, "member": member,
        "usable": usable, "applicable": applicable, "store_options": options,
        "program": program, "id_kinds": ID_KINDS, "tenders": TENDERS,
        "key": key, "order_number": f"W{store}-{key[-12:]}".upper()[:64],
        "digest": digest, "refused": {r["code"]: r for r in (
            quote["coupons"]["refused"] if quote else [])},
    }, actor=actor, status_code=422 if errors and status_code == 200 else status_code)


def _empty_form() -> dict[str, Any]:
    return {"store": "", "id_kind": "phone", "id_value": "", "rows": [], "coupons": [],
            "redeem_points": "", "stored_value": "", "tender": "cash", "idempotency_key": "",
            "order_number": "", "quoted": "", "payable_fen": ""}


@router.get("/cashier")
def cashier(request: Request, actor: Seller) -> Response:
    return _page(request, actor, _empty_form(), action="new")


@router.post("/cashier")
async def cashier_quote(request: Request, actor: Seller) -> Response:
    """Look the member up, add rows or quote the basket; nothing is written."""
    form = await posted_form(request)
    action = _text(form, "action")
    return _page(request, actor, read_form(form),
                 action=action if action in ("lookup", "more", "quote") else "quote")


@router.post("/cashier/commit")
async def cashier_commit(request: Request, uow: UowDep, actor: Seller) -> Response:
    """Record the quoted sale. The form carries the key made with the quote and the quote's
    digest and amount to pay: the same form twice is one sale (the service replays the first
    result); a basket changed since its quote is quoted again, not committed."""
    form = await posted_form(request)
    lang = page_language(request, actor)
    typed = read_form(form)
    errors: dict[str, str] = {}
    body = _basket_request(typed, errors, lang)
    if body is None:
        return _page(request, actor, typed, action="quote", errors=errors)
    if not body["lines"]:
        return _page(request, actor, typed, action="quote",
                     errors={"lines": t("web.cashier.no_lines", lang)})
    if not typed["quoted"] or typed["quoted"] != _digest(body) or not typed[
            "payable_fen"].isdigit():
        return _page(request, actor, typed, action="quote",
                     errors={"form": t("web.cashier.changed_since_quote", lang)})
    commit = {k: v for k, v in body.items() if k != "_rows"}
    commit.update({"idempotency_key": typed["idempotency_key"],
                   "order_number": typed["order_number"]})
    payable = int(typed["payable_fen"])
    if payable:
        commit["payments"] = [{"method": typed["tender"], "amount_fen": payable}]
    try:
        request_in = CommitIn.model_validate(commit)
    except ValidationError as exc:
        return _page(request, actor, typed, action="quote",
                     errors=_pydantic_errors(exc, body["_rows"], lang))
    try:
        out = checkout.commit(uow=uow, actor=actor, body=request_in)
    except PatronError as exc:
        if exc.status in (401, 403):
            raise
        return _page(request, actor, typed, action="quote",
                     errors=_service_errors(exc, body["_rows"], lang), status_code=exc.status)
    return redirect(f"/cashier/checkouts/{out['checkout_id']}"
                    + ("?replayed=1" if out.get("replayed") else ""))


@router.get("/cashier/checkouts/{checkout_id}")
def checkout_result(request: Request, checkout_id: str, actor: Seller) -> Response:
    """The committed sale: what was paid how, points redeemed and earned, the new balance,
    coupons redeemed, stored value spent."""
    with UnitOfWork(get_engine(), readonly=True) as uow:
        try:
            out = checkout.get_checkout(uow.c, actor=actor, checkout_id=path_id(checkout_id))
        except NotFound as exc:
            raise NotFound("checkout_not_found") from exc
    return render(request, "cashier/result.html", {
        "r": out, "replayed": request.query_params.get("replayed") == "1",
        "now": utcnow()}, actor=actor)
