"""Charts as inline SVG, drawn on the server with pygal: no JavaScript, nothing fetched."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pygal
from markupsafe import Markup
from pygal.style import Style

from patron.web.dashboard import DayPoint

FONT = ('-apple-system, "PingFang SC", "Noto Sans CJK SC", "Microsoft YaHei", '
        '"Segoe UI", Roboto, sans-serif')

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)

_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#4b5563",
    foreground_strong="#111827",
    foreground_subtle="#e5e7eb",
    colors=("#2563eb", "#10b981"),
    font_family=FONT,
    label_font_family=FONT,
    major_label_font_family=FONT,
    value_font_family=FONT,
    tooltip_font_family=FONT,
    label_font_size=11,
    major_label_font_size=11,
    guide_stroke_color="#e5e7eb",
    major_guide_stroke_color="#e5e7eb",
    guide_stroke_dasharray="0",
    major_guide_stroke_dasharray="0",
)


def sales_trend(points: Sequence[DayPoint], *, title: str) -> Markup:
    """Daily net sales as a bar chart; every fifth day is labelled to keep the axis legible."""
    chart = pygal.Bar(
        style=_STYLE,
        js=[],  # pygal links its tooltip script from the internet by default
        disable_xml_declaration=True,
        show_legend=False,
        width=960,
        height=260,
        margin=8,
        spacing=6,
        show_y_guides=True,
        x_label_rotation=0,
        truncate_label=-1,
        print_values=False,
        title=None,
        value_formatter=lambda v: f"¥{v:,.2f}",
    )
    chart.x_labels = [p.day.strftime("%m-%d") for p in points]
    chart.x_labels_major = [p.day.strftime("%m-%d") for i, p in enumerate(points)
                            if i % 5 == 0 or i == len(points) - 1]
    chart.show_minor_x_labels = False
    # pygal draws floats; these are display values only, the figures stay Decimal elsewhere.
    chart.add(title, [float(p.sales) for p in points])
    # Without its tooltip script (which would come from the internet) the inline config
    # script pygal still writes does nothing: drop it, so pages carry no JavaScript.
    svg = _SCRIPT.sub("", chart.render(is_unicode=True))
    return Markup(svg)  # noqa: S704 - pygal escapes the labels it writes
