"""Interactive charts: specs built in Python, drawn in the browser by Plotly.js.

A chart is a plain dict in Plotly's JSON schema (``{"data": [...], "layout": {...}}``) with
Patron's colours and the caller's translated titles. In a template ``{{ chart }}`` (or
``{{ spec|chart }}``) writes ``<div class="chart" data-chart="…json…">`` and, for browsers
without JavaScript, a ``<noscript>`` table of the same figures. A page that shows charts puts
``{{ chart_scripts() }}`` in its ``head`` block: Plotly.js (served by Patron from the installed
``plotly`` package, never from a CDN) and ``/static/patron-charts.js``, which finds the divs and
draws them with zoom, pan, hover and legend toggles (Plotly's defaults), in Chinese when the
page is. No inline script: the data travels in the attribute, so a strict
``Content-Security-Policy: script-src 'self'`` would allow the pages as they are.

Figures stay ``Decimal`` everywhere else; here they become floats because a chart is for the eye.
Labels that come from the data (store, product, segment names) are escaped for Plotly, which
reads a little HTML (``<b>``, ``<a href>``) inside its texts.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from markupsafe import Markup

from patron.deps import public

Format = Literal["money", "percent", "int", "decimal", "plain"]

FONT = ('-apple-system, BlinkMacSystemFont, "PingFang SC", "Noto Sans CJK SC", "Noto Sans SC", '
        '"Microsoft YaHei", "Segoe UI", Roboto, sans-serif')

# The stylesheet's accent first, then colours that stay apart for up to a dozen series
# (the RFM map has eleven segments).
COLORS = ("#2563eb", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
          "#84cc16", "#f97316", "#6366f1", "#14b8a6", "#a855f7")
MUTED = "#9ca3af"
GRID = "#e5e7eb"
TEXT = "#4b5563"

_TICK = {"money": ",.0f", "percent": ".0%", "int": ",d", "decimal": ",.2f", "plain": ""}
_HOVER = {"money": ",.2f", "percent": ".1%", "int": ",d", "decimal": ",.3f", "plain": ""}


# --- values -------------------------------------------------------------------------------------

def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None  # no NaN/inf


def _plain(value: Any) -> Any:
    """A JSON value: dates as ISO text, Decimals as numbers, NaN as null."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | float):
        return _number(value)
    return value


def label(text: Any) -> str:
    """Text from the data, safe inside Plotly's pseudo-HTML labels."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def format_value(value: Any, fmt: Format) -> str:
    """A figure as the fallback table shows it."""
    number = _number(value) if not isinstance(value, str) else None
    if isinstance(value, str):
        return value
    if number is None:
        return "–"
    if fmt == "money":
        return f"¥{Decimal(str(value)):,.2f}"
    if fmt == "percent":
        return f"{number * 100:.1f}%"
    if fmt == "int":
        return f"{int(number):,}"
    if fmt == "decimal":
        return f"{number:,.3f}"
    return str(value)


# --- the chart ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Series:
    """One named series; ``values`` line up with the chart's categories."""

    name: str
    values: Sequence[Any]
    color: str | None = None
    kind: Literal["bar", "line"] | None = None  # a line over bars, e.g. a rate over counts
    dash: str | None = None
    secondary: bool = False  # on the right-hand axis (its own scale and format)
    colors: Sequence[str] | None = None  # one colour per bar (e.g. each segment its own)
    x: Sequence[Any] | None = None  # for :func:`curves`: this series' own x values


@dataclass(slots=True)
class Chart:
    """A Plotly figure plus the table a browser without JavaScript shows instead."""

    data: list[dict[str, Any]]
    layout: dict[str, Any]
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    id: str | None = None
    height: int = 320

    def spec(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout}

    def __html__(self) -> str:
        return str(chart_html(self))


def _layout(*, x_title: str | None, y_title: str | None, fmt: Format, height: int,
            legend: bool = True) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 12, "color": TEXT},
        "colorway": list(COLORS),
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "margin": {"l": 56, "r": 16, "t": 12, "b": 44},
        "height": height,
        "hovermode": "closest",
        "hoverlabel": {"font": {"family": FONT}},
        "showlegend": legend,
        "legend": {"orientation": "h", "y": -0.18, "x": 0},
        "xaxis": {"gridcolor": GRID, "zeroline": False, "automargin": True},
        "yaxis": {"gridcolor": GRID, "zeroline": False, "automargin": True,
                  "tickformat": _TICK[fmt], "hoverformat": _HOVER[fmt]},
    }
    if fmt == "money":
        layout["yaxis"]["tickprefix"] = "¥"
    if x_title:
        layout["xaxis"]["title"] = {"text": label(x_title)}
    if y_title:
        layout["yaxis"]["title"] = {"text": label(y_title)}
    return layout


def _table(head: str, categories: Sequence[Any], series: Sequence[Series],
           fmt: Format) -> tuple[list[str], list[list[str]]]:
    columns = [head, *(s.name for s in series)]
    rows = []
    for i, category in enumerate(categories):
        rows.append([str(_plain(category)),
                     *(format_value(s.values[i] if i < len(s.values) else None, fmt)
                       for s in series)])
    return columns, rows


def _xs(categories: Sequence[Any]) -> list[Any]:
    return [label(c) if isinstance(c, str) else _plain(c) for c in categories]


def bar(categories: Sequence[Any], series: Sequence[Series], *, x_title: str | None = None,
        y_title: str | None = None, fmt: Format = "int", stacked: bool = False,
        horizontal: bool = False, dates: bool = False, y2_title: str | None = None,
        y2_fmt: Format = "int", height: int = 320, id: str | None = None) -> Chart:
    """Grouped (or stacked) bars, one trace per series; a ``kind="line"`` series is drawn as a
    line, a ``secondary`` one against a right-hand axis (``y2_title``, ``y2_fmt``).
    ``dates`` makes the category axis a date axis (zoom by time)."""
    xs = _xs(categories)
    data = []
    for i, s in enumerate(series):
        color = s.color or COLORS[i % len(COLORS)]
        values = [_plain(v) for v in s.values]
        if s.kind == "line":
            trace: dict[str, Any] = {"type": "scatter", "mode": "lines+markers",
                                     "line": {"color": color, "dash": s.dash or "solid"}}
        else:
            trace = {"type": "bar", "marker": {"color": list(s.colors) if s.colors else color}}
        trace["name"] = label(s.name)
        if s.secondary:
            trace["yaxis"] = "y2"
        if horizontal:
            trace.update({"y": xs, "x": values, "orientation": "h"})
        else:
            trace.update({"x": xs, "y": values})
        data.append(trace)
    layout = _layout(x_title=x_title, y_title=y_title, fmt=fmt, height=height,
                     legend=len(series) > 1)
    layout["barmode"] = "stack" if stacked else "group"
    if horizontal:
        layout["xaxis"], layout["yaxis"] = layout["yaxis"], layout["xaxis"]
        layout["yaxis"]["autorange"] = "reversed"  # first category on top, as in the table
        layout["margin"]["l"] = 120
    if dates:
        layout["xaxis"].update({"type": "date", "tickformat": "%m-%d",
                                "hoverformat": "%Y-%m-%d"})
    if any(s.secondary for s in series):
        layout["yaxis2"] = {"overlaying": "y", "side": "right", "showgrid": False,
                            "zeroline": False, "rangemode": "tozero",
                            "tickformat": _TICK[y2_fmt], "hoverformat": _HOVER[y2_fmt]}
        if y2_fmt == "money":
            layout["yaxis2"]["tickprefix"] = "¥"
        if y2_title:
            layout["yaxis2"]["title"] = {"text": label(y2_title)}
        layout["margin"]["r"] = 56
    columns, rows = _table(x_title or "", categories, series, fmt)
    for s_index, s in enumerate(series):  # the right-hand series keep their own format
        if s.secondary and s_index + 1 < len(columns):
            for i, row in enumerate(rows):
                row[s_index + 1] = format_value(s.values[i] if i < len(s.values) else None,
                                                y2_fmt)
    return Chart(data, layout, columns, rows, id=id, height=height)


def line(x: Sequence[Any], series: Sequence[Series], *, x_title: str | None = None,
         y_title: str | None = None, fmt: Format = "int", dates: bool = False,
         height: int = 320, id: str | None = None) -> Chart:
    """Lines with markers, one trace per series."""
    xs = _xs(x)
    data = [{"type": "scatter", "mode": "lines+markers", "name": label(s.name), "x": xs,
             "y": [_plain(v) for v in s.values],
             "line": {"color": s.color or COLORS[i % len(COLORS)], "dash": s.dash or "solid"}}
            for i, s in enumerate(series)]
    layout = _layout(x_title=x_title, y_title=y_title, fmt=fmt, height=height,
                     legend=len(series) > 1)
    if dates:
        layout["xaxis"].update({"type": "date", "hoverformat": "%Y-%m-%d"})
    columns, rows = _table(x_title or "", x, series, fmt)
    return Chart(data, layout, columns, rows, id=id, height=height)


def curves(series: Sequence[Series], *, x_title: str | None = None,
           y_title: str | None = None, x_fmt: Format = "plain", fmt: Format = "plain",
           diagonal: str | None = None, height: int = 320, id: str | None = None) -> Chart:
    """Lines through (x, y) points, each series with its own ``x`` (e.g. a calibration plot:
    mean predicted against observed rate). ``diagonal`` names a dashed y = x reference line
    over the data's range."""
    data = []
    for i, s in enumerate(series):
        data.append({"type": "scatter", "mode": "lines+markers", "name": label(s.name),
                     "x": [_plain(v) for v in (s.x or [])], "y": [_plain(v) for v in s.values],
                     "line": {"color": s.color or COLORS[i % len(COLORS)],
                              "dash": s.dash or "solid"}})
    layout = _layout(x_title=x_title, y_title=y_title, fmt=fmt, height=height)
    layout["xaxis"].update({"tickformat": _TICK[x_fmt], "hoverformat": _HOVER[x_fmt]})
    if diagonal is not None:
        points = [v for s in series for v in [*(s.x or []), *s.values]
                  if _number(v) is not None]
        low = min([_number(v) or 0 for v in points], default=0)
        high = max([_number(v) or 0 for v in points], default=1)
        data.append({"type": "scatter", "mode": "lines", "name": label(diagonal),
                     "x": [low, high], "y": [low, high], "hoverinfo": "skip",
                     "line": {"color": MUTED, "dash": "dot", "width": 1}})
    columns = ["", x_title or "x", y_title or "y"]
    rows = [[s.name, format_value(x, x_fmt), format_value(y, fmt)]
            for s in series for x, y in zip(s.x or [], s.values, strict=False)]
    return Chart(data, layout, columns, rows, id=id, height=height)


def pie(labels: Sequence[str], values: Sequence[Any], *, title: str = "", fmt: Format = "int",
        donut: bool = True, colors: Sequence[str] | None = None, height: int = 320,
        id: str | None = None) -> Chart:
    """Shares of a whole; clicking a legend entry leaves that slice out."""
    trace: dict[str, Any] = {
        "type": "pie", "labels": [label(x) for x in labels],
        "values": [_plain(v) for v in values], "hole": 0.45 if donut else 0,
        "sort": False, "direction": "clockwise", "textinfo": "percent",
        "marker": {"colors": list(colors or [COLORS[i % len(COLORS)]
                                             for i in range(len(labels))])},
    }
    if fmt == "money":
        trace["hovertemplate"] = "%{label}<br>¥%{value:,.2f} (%{percent})<extra></extra>"
    else:
        trace["hovertemplate"] = "%{label}<br>%{value:,} (%{percent})<extra></extra>"
    layout = _layout(x_title=None, y_title=None, fmt=fmt, height=height)
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 0.9}
    layout["margin"] = {"l": 8, "r": 8, "t": 28, "b": 8}
    columns, rows = _table(title, labels, [Series(title or "", values)], fmt)
    return Chart([trace], layout, columns, rows, id=id, height=height)


def heatmap(x: Sequence[Any], y: Sequence[Any], z: Sequence[Sequence[Any]], *,
            x_title: str | None = None, y_title: str | None = None, fmt: Format = "int",
            height: int = 320, id: str | None = None) -> Chart:
    """A grid of values (``z[row][column]``, rows along ``y``), e.g. cohorts by month."""
    trace = {"type": "heatmap", "x": _xs(x), "y": _xs(y),
             "z": [[_plain(v) for v in row] for row in z],
             "colorscale": [[0, "#eff6ff"], [1, COLORS[0]]], "hoverongaps": False}
    if fmt != "plain":
        trace["hovertemplate"] = f"%{{y}} · %{{x}}<br>%{{z:{_HOVER[fmt]}}}<extra></extra>"
    layout = _layout(x_title=x_title, y_title=y_title, fmt="plain", height=height,
                     legend=False)
    columns = [y_title or "", *(str(_plain(c)) for c in x)]
    rows = [[str(_plain(r)), *(format_value(v, fmt) for v in z[i])] for i, r in enumerate(y)]
    return Chart([trace], layout, columns, rows, id=id, height=height)


def sankey(nodes: Sequence[str], links: Sequence[tuple[int, int, Any]], *,
           node_colors: Sequence[str] | None = None, height: int = 360,
           columns: tuple[str, str, str] = ("", "", ""), id: str | None = None) -> Chart:
    """Flows between nodes: ``links`` are (source index, target index, value); each link
    takes its target's colour, faded."""
    colors = list(node_colors or [COLORS[i % len(COLORS)] for i in range(len(nodes))])
    trace = {
        "type": "sankey", "arrangement": "snap",
        "node": {"label": [label(n) for n in nodes], "color": colors, "pad": 14,
                 "thickness": 16, "line": {"width": 0}},
        "link": {"source": [s for s, _, _ in links], "target": [t for _, t, _ in links],
                 "value": [_plain(v) for _, _, v in links],
                 "color": [_fade(colors[t]) for _, t, _ in links]},
    }
    layout = _layout(x_title=None, y_title=None, fmt="int", height=height, legend=False)
    layout["margin"] = {"l": 8, "r": 8, "t": 28, "b": 8}
    rows = [[nodes[s], nodes[t], format_value(v, "int")] for s, t, v in links]
    return Chart([trace], layout, list(columns), rows, id=id, height=height)


def _fade(color: str) -> str:
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.35)"


# --- HTML -----------------------------------------------------------------------------------

def chart_html(chart: Chart | Mapping[str, Any], *, id: str | None = None) -> Markup:
    """The chart's div (its spec in ``data-chart``) and the no-JavaScript table."""
    if isinstance(chart, Chart):
        spec, columns, rows = chart.spec(), chart.columns, chart.rows
        chart_id, height = id or chart.id, chart.height
    else:
        spec, columns, rows = {"data": chart["data"], "layout": chart.get("layout", {})}, [], []
        chart_id, height = id, int(chart.get("layout", {}).get("height", 320))
    payload = json.dumps(spec, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                         default=_plain)
    id_attr = Markup(' id="{}"').format(chart_id) if chart_id else Markup("")
    html = Markup('<div class="chart"{} style="min-height:{}px" data-chart="{}"></div>').format(
        id_attr, int(height), payload)
    if columns or rows:
        head = Markup("").join(Markup("<th>{}</th>").format(c) for c in columns)
        body = Markup("").join(
            Markup("<tr>{}</tr>").format(Markup("").join(
                Markup('<td class="{}">{}</td>').format("num" if i else "", v)
                for i, v in enumerate(row)))
            for row in rows)
        html += Markup('<noscript><table class="chart-table"><thead><tr>{}</tr></thead>'
                       "<tbody>{}</tbody></table></noscript>").format(head, body)
    return html


# --- the scripts -------------------------------------------------------------------------------

STATIC = Path(__file__).resolve().parent.parent / "static"
PLOTLY_PATH = "/static/vendor/plotly.min.js"
ONE_YEAR = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str


@cache
def plotly_asset() -> Asset:
    """Plotly.js from the installed ``plotly`` wheel, compressed once and kept in memory."""
    body = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    return Asset(body, gzip.compress(body, compresslevel=6, mtime=0), f'"{digest}"')


@cache
def static_version(name: str) -> str:
    """A short hash of a file under ``static/``, for cache-busting ``?v=`` query strings."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def chart_scripts() -> Markup:
    """The two script tags a page with charts puts in its head (deferred, same origin)."""
    version = plotly_asset().etag.strip('"')
    return Markup('<script src="{}?v={}" defer></script>\n'
                  '<script src="/static/patron-charts.js?v={}" defer></script>').format(
        PLOTLY_PATH, version, static_version("patron-charts.js"))


router = APIRouter(include_in_schema=False,
                   dependencies=[Depends(public("the published Plotly.js library, no data"))])


@router.get(PLOTLY_PATH)
def plotly_js(request: Request) -> Response:
    """Public like the stylesheet: it is the published library, no data. Cached for a year
    (the URL carries the content hash), gzip-compressed when the browser accepts it."""
    asset = plotly_asset()
    headers = {"Cache-Control": f"public, max-age={ONE_YEAR}, immutable", "ETag": asset.etag,
               "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type="text/javascript",
                        headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type="text/javascript", headers=headers)
