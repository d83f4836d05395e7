"""Plotly.js served by Patron from the installed package: public, compressed, cached."""

from __future__ import annotations

import gzip
from importlib import resources

import pytest

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PLOTLY = "/static/vendor/plotly.min.js"


def test_plotly_is_served_from_the_installed_wheel_to_anyone(client):
    shipped = (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    r = client.get(PLOTLY, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"].startswith("text/javascript")
    assert "immutable" in r.headers["cache-control"] and "max-age=31536000" in r.headers[
        "cache-control"]
    assert r.headers["vary"] == "Accept-Encoding"
    assert r.content == shipped  # httpx decoded the gzip body
    assert int(r.headers["content-length"]) < len(shipped) / 2

    plain = client.get(PLOTLY, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == shipped

    again = client.get(PLOTLY, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_charts_script_is_a_static_file(client):
    r = client.get("/static/patron-charts.js")
    assert r.status_code == 200 and "Plotly.newPlot" in r.text


def test_gzip_body_is_the_library(client):
    from patron.web.plots import plotly_asset

    asset = plotly_asset()
    assert gzip.decompress(asset.gzipped) == asset.body
    assert asset.body.startswith(b"/**\n* plotly.js v")
