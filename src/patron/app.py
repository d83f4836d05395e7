"""The web application: JSON API under /api/v1, server-rendered pages elsewhere."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from patron import __version__
from patron.deps import public, request_language
from patron.errors import FieldError, NotFound, PatronError
from patron.i18n import t
from patron.orders.service import validation_errors

STATIC = Path(__file__).parent / "static"


def error_body(code: str, lang: str, *, fields: list[FieldError] | None = None,
               params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {
        "code": code,
        "message": t(code, lang, **(params or {})),
        "fields": [{"field": f.field, "reason": f.reason,
                    "message": t(f.reason, lang, **f.params)} for f in (fields or [])],
        **extra,
    }}


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", "")


log = logging.getLogger(__name__)
MAX_ID = 2**63 - 1  # ids are 64-bit integers in both databases


async def _ids_in_range(request: Request) -> None:
    """An id in a path that no 64-bit key can hold names nothing: 404, as any unknown id,
    before a database driver refuses to bind it (a 500)."""
    for name, value in request.path_params.items():
        if name == "id" or name.endswith("_id"):
            text = str(value).strip()
            digits = text[1:] if text[:1] in "+-" else text
            if digits.isdigit() and len(digits) > 18 and abs(int(text)) > MAX_ID:
                raise NotFound("not_found", fields=[FieldError(name, "id_out_of_range")])


async def _alert_on_refused_key(request: Request, exc: PatronError) -> None:
    """An API key refused a permission or a store is misuse the owners hear about (a till's
    key used for something else, or a stolen key probing)."""
    actor = getattr(request.state, "actor", None)
    if actor is None or actor.type != "api_key":
        return
    out_of_scope = [f.field for f in exc.fields if "out_of_scope" in f.reason]
    if exc.status != 403 and not out_of_scope:
        return
    from starlette.concurrency import run_in_threadpool

    from patron.db import get_engine
    from patron.security.alerts import raise_alert_now

    await run_in_threadpool(
        raise_alert_now, engine=get_engine(), kind="api_key_misuse", subject=actor.name,
        details={"reason": exc.message, "permission": exc.params.get("permission"),
                 "fields": out_of_scope, "path": request.url.path, "ip": actor.ip or "?"})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Each server process delivers due webhooks in a background thread, unless turned off
    (``PATRON_WEBHOOKS_WORKER=0``) in favour of a separate ``patron webhooks deliver``, sends
    due messages the same way (``PATRON_MESSAGES_WORKER``, ``patron messages work``), and
    checks whether the nightly analytics refresh is due (``PATRON_ANALYTICS_REFRESH_AT``) and
    the daily backup (``PATRON_BACKUP_AT``), and refreshes the segment builder's audience
    replica (``PATRON_AUDIENCE_REPLICA_REFRESH_MINUTES``)."""
    from patron.analytics.jobs import start_scheduler
    from patron.backup.schedule import start_scheduler as start_backups
    from patron.config import get_settings
    from patron.db import get_engine
    from patron.messaging.delivery import start_background_worker as start_messages
    from patron.webhooks.delivery import start_background_worker

    stop = start_background_worker(get_engine()) if get_settings().webhooks_worker else None
    stop_messages = start_messages(get_engine()) if get_settings().messages_worker else None
    stop_scheduler = start_scheduler(get_engine())
    stop_automations = None
    if get_settings().automations_worker:
        from patron.automations.engine import start_background_worker as start_automations

        stop_automations = start_automations(get_engine())
    stop_backups = start_backups(get_engine())
    from patron.segments.replica import start_refresher

    stop_replica = start_refresher(get_engine())
    # The application's own objects (about 230,000: routes, models, schemas, modules) live as
    # long as the process. Left to the cyclic collector, every full collection walked all of
    # them: 60-300 ms with the event loop stopped, a dozen times a minute under the tills'
    # load, the worst latencies of the API. Frozen, they are never walked again.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        if stop_replica is not None:
            stop_replica()
        if stop_backups is not None:
            stop_backups()
        if stop_automations is not None:
            stop_automations()
        if stop_messages is not None:
            stop_messages()
        if stop_scheduler is not None:
            stop_scheduler()
        if stop is not None:
            stop()


def create_app() -> FastAPI:
    app = FastAPI(title="Patron", version=__version__, openapi_url="/api/v1/openapi.json",
                  docs_url="/api/docs", redoc_url=None, lifespan=lifespan,
                  dependencies=[Depends(_ids_in_range)])

    @app.exception_handler(PatronError)
    async def patron_error(request: Request, exc: PatronError) -> Response:
        await _alert_on_refused_key(request, exc)
        if exc.status == 401 and _wants_html(request):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        extra: dict[str, Any] = {}
        if getattr(exc, "differences", None):
            extra["differences"] = exc.differences  # type: ignore[attr-defined]
        for name in getattr(exc, "public_params", ()):
            extra[name] = exc.params.get(name)
        lang = request_language(request)
        return JSONResponse(error_body(exc.message, lang, fields=exc.fields, params=exc.params,
                                       **extra), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        fields = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
            ctx = {k: str(v) for k, v in (err.get("ctx") or {}).items()}
            fields.append(FieldError(".".join(loc) or "body", err.get("type", "invalid"), ctx))
        return JSONResponse(error_body("validation_failed", request_language(request),
                                       fields=fields), status_code=422)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(request: Request, exc: Exception) -> Response:
        """A value the schema let through but no database column can hold (SQLite's driver
        refuses to bind a number past 64 bits; PostgreSQL refuses a value out of its column's
        range): the caller's input, so 422, never a 500. The unit of work has rolled back.
        Logged, since the schema should have refused it first."""
        log.warning("input out of range for the database at %s: %s", request.url.path,
                    type(exc).__name__)
        return JSONResponse(error_body("validation_failed", request_language(request),
                                       fields=[FieldError("body", "value_out_of_range")]),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "bad_request", 401: "unauthorized",
                403: "forbidden", 413: "request_too_large"}.get(exc.status_code, "bad_request")
        if _wants_html(request):
            from patron.web.render import error_page

            err = PatronError(code)
            err.status = exc.status_code
            return error_page(request, err)
        return JSONResponse(error_body(code, request_language(request)),
                            status_code=exc.status_code)

    from patron.customers.api import router as customers_router
    from patron.orders.api import router as orders_router
    from patron.org.api import router as org_router
    from patron.security.api import router as security_router

    for router in (orders_router, customers_router, org_router, security_router):
        app.include_router(router, prefix="/api/v1")
    _include_optional(app)
    from patron.orders import fast_path
    from patron.security import bodylimit, headers, logfilter

    # add_middleware wraps what was added before: the fast path sits inside the body limit and
    # the security headers, which apply to its answers too.
    fast_path.install(app)
    bodylimit.install(app)  # inside the security headers: its 413 gets them too
    headers.install(app)
    logfilter.install()

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False,
             dependencies=[Depends(public("liveness probe, no data"))])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # Matched first: declared last, the liveness probe was tried against every other route
    # (about 370 path patterns, 1.3 ms of CPU per probe) before its own. No other route
    # answers GET /healthz, so the order changes nothing but that cost; it is still a FastAPI
    # route with its dependencies and middlewares (the benchmarks' anchor, docs/benchmarks.md).
    probe = next(r for r in app.router.routes if getattr(r, "path", None) == "/healthz")
    app.router.routes.remove(probe)
    app.router.routes.insert(0, probe)
    return app


def _include_optional(app: FastAPI) -> None:
    """Areas that add their own routers (imports, webhooks, pages)."""
    import importlib

    for module, prefix in (("patron.imports.api", "/api/v1"), ("patron.webhooks.api", "/api/v1"),
                           ("patron.analytics.api", "/api/v1"),
                           ("patron.analytics.churn_api", "/api/v1"),
                           ("patron.analytics.crosssell_api", "/api/v1"),
                           ("patron.analytics.predictions_api", "/api/v1"),
                           ("patron.loyalty.api", "/api/v1"),
                           ("patron.coupons.api", "/api/v1"),
                           ("patron.checkout.api", "/api/v1"),
                           ("patron.loyalty.reports_api", "/api/v1"),
                           ("patron.storedvalue.api", "/api/v1"),
                           ("patron.rewards.api", "/api/v1"),
                           ("patron.benefits.api", "/api/v1"),
                           ("patron.analytics.jobs_api", "/api/v1"),
                           ("patron.analytics.dashboards_api", "/api/v1"),
                           ("patron.messaging.api", "/api/v1"),
                           ("patron.segments.api", "/api/v1"),
                           ("patron.tags.api", "/api/v1"),
                           ("patron.segments.pages", ""),
                           ("patron.tags.pages", ""),
                           ("patron.privacy.api", "/api/v1"),
                           ("patron.automations.api", "/api/v1"),
                           ("patron.campaigns.api", "/api/v1"),
                           ("patron.messaging.pages", ""),
                           # /messages/templates, /messages/limits before /messages/{id}
                           # (declared in that order inside the module)
                           ("patron.messaging.staff_pages", ""),
                           # before the automation pages: /automations/new and
                           # /campaigns/new are not codes
                           ("patron.automations.editor", ""),
                           ("patron.campaigns.pages", ""),
                           ("patron.automations.pages", ""),
                           ("patron.experiments.pages", ""),
                           ("patron.web.pages", ""),
                           ("patron.privacy.pages", ""),
                           ("patron.selfservice.pages", "")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        app.include_router(mod.router, prefix=prefix)


__all__ = ["create_app", "error_body", "validation_errors"]
