"""Chart specs: Plotly's JSON schema, Patron's formats, escaped labels, the fallback table."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from decimal import Decimal

from patron.web import plots


def spec_in(markup: str) -> dict:
    found = re.search(r'data-chart="([^"]*)"', markup)
    assert found, markup
    return json.loads(html.unescape(found.group(1)))


def test_bar_chart_with_a_secondary_line_on_a_date_axis():
    chart = plots.bar([dt.date(2026, 3, 1), dt.date(2026, 3, 2)],
                      [plots.Series("销售额", [Decimal("12.50"), Decimal("0")]),
                       plots.Series("订单", [3, 0], kind="line", secondary=True)],
                      fmt="money", dates=True, y2_fmt="int", id="t")
    bars, orders = chart.data
    assert bars == {"type": "bar", "marker": {"color": plots.COLORS[0]}, "name": "销售额",
                    "x": ["2026-03-01", "2026-03-02"], "y": [12.5, 0.0]}
    assert orders["type"] == "scatter" and orders["yaxis"] == "y2" and orders["y"] == [3, 0]
    assert chart.layout["xaxis"]["type"] == "date"
    assert chart.layout["yaxis"]["tickprefix"] == "¥"
    assert chart.layout["yaxis2"]["tickformat"] == ",d"
    assert chart.rows == [["2026-03-01", "¥12.50", "3"], ["2026-03-02", "¥0.00", "0"]]


def test_html_carries_the_spec_in_an_attribute_and_a_noscript_table():
    chart = plots.bar(["<b>店</b> & Co"], [plots.Series("n", [5])], x_title="门店", id="x1")
    markup = str(plots.chart_html(chart))
    assert "<script" not in markup
    assert markup.startswith('<div class="chart" id="x1"')
    # Data labels are escaped twice over: for Plotly's pseudo-HTML, then for the attribute.
    assert spec_in(markup)["data"][0]["x"] == ["&lt;b&gt;店&lt;/b&gt; &amp; Co"]
    assert "<b>店" not in markup
    table = re.search(r"<noscript>(.*)</noscript>", markup).group(1)
    assert "<th>门店</th>" in table and "&lt;b&gt;店&lt;/b&gt; &amp; Co" in table
    assert str(chart.__html__()) == markup


def test_values_that_are_not_numbers_become_gaps_not_nan():
    chart = plots.line(["a", "b", "c"], [plots.Series("r", [float("nan"), None, 0.25])],
                       fmt="percent")
    assert chart.data[0]["y"] == [None, None, 0.25]
    assert [row[1] for row in chart.rows] == ["–", "–", "25.0%"]
    assert "NaN" not in str(plots.chart_html(chart))


def test_pie_sankey_and_heatmap_specs():
    pie = plots.pie(["冠军", "流失"], [3, 1], title="顾客")
    assert pie.data[0]["type"] == "pie" and pie.data[0]["hole"] > 0
    assert pie.data[0]["values"] == [3, 1] and pie.rows == [["冠军", "3"], ["流失", "1"]]
    flows = plots.sankey(["新客", "活跃"], [(0, 1, 4)], columns=("从", "到", "人数"))
    link = flows.data[0]["link"]
    assert (link["source"], link["target"], link["value"]) == ([0], [1], [4])
    assert flows.rows == [["新客", "活跃", "4"]] and flows.columns == ["从", "到", "人数"]
    grid = plots.heatmap(["M0", "M1"], ["2026-01"], [[1.0, 0.5]], fmt="percent")
    assert grid.data[0]["z"] == [[1.0, 0.5]] and grid.rows == [["2026-01", "100.0%", "50.0%"]]


def test_chart_scripts_point_at_patron_only():
    tags = str(plots.chart_scripts())
    sources = re.findall(r'src="([^"]+)"', tags)
    assert [s.split("?")[0] for s in sources] == ["/static/vendor/plotly.min.js",
                                                  "/static/patron-charts.js"]
    assert all("?v=" in s for s in sources)
