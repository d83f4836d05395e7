"""The application's route table with each route's declared guards, for the route audit test,
the IDOR and fuzzing tests and the permission matrix page.

FastAPI keeps included routers lazily (``_IncludedRouter``) since 0.16x; its own
``_iter_routes_with_context`` flattens them with their prefixes and dependencies. Older
versions expose plain ``APIRoute`` objects, handled the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from patron.deps import GUARD_ATTR


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    guards: tuple[tuple[str, str], ...]  # (kind, detail): permission | signed_in | public | member
    in_schema: bool
    endpoint: str  # module.function, to say where a route is defined

    @property
    def permissions(self) -> tuple[str, ...]:
        return tuple(d for k, d in self.guards if k == "permission")

    @property
    def path_params(self) -> tuple[str, ...]:
        import re

        return tuple(re.findall(r"\{([^}:]+)", self.path))


def _guards(dependant: Any, out: list[tuple[str, str]]) -> list[tuple[str, str]]:
    for dep in getattr(dependant, "dependencies", ()):
        guard = getattr(dep.call, GUARD_ATTR, None)
        if guard is not None and guard not in out:
            out.append(guard)
        _guards(dep, out)
    return out


def _contexts(app: FastAPI) -> Iterator[tuple[Any, Any]]:
    try:
        from fastapi.routing import _iter_routes_with_context  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - FastAPI before lazy included routers
        for route in app.routes:
            yield route, (route if isinstance(route, APIRoute) else None)
        return
    for route, ctx in _iter_routes_with_context(app.routes):
        yield route, (ctx if ctx is not None or not isinstance(route, APIRoute) else route)


def app_routes(app: FastAPI) -> tuple[list[RouteInfo], list[str]]:
    """(every API and page route with its guards, the paths of other routes: mounts and
    FastAPI's own documentation routes)."""
    routes: list[RouteInfo] = []
    others: list[str] = []
    for original, ctx in _contexts(app):
        if ctx is None or getattr(ctx, "dependant", None) is None:
            others.append(str(getattr(original, "path", original)))
            continue
        endpoint = getattr(ctx, "endpoint", None) or getattr(original, "endpoint", None)
        where = f"{getattr(endpoint, '__module__', '?')}.{getattr(endpoint, '__name__', '?')}"
        guards = tuple(_guards(ctx.dependant, []))
        for method in sorted(ctx.methods or ()):
            if method == "HEAD":
                continue
            routes.append(RouteInfo(method=method, path=ctx.path, guards=guards,
                                    in_schema=bool(getattr(ctx, "include_in_schema", True)),
                                    endpoint=where))
    return routes, others
