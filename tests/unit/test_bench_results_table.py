"""The benchmark table prints each anchor in its own unit."""

from __future__ import annotations

from benchmarks.results import Figure, print_table
from rich.console import Console


def _printed(figure: Figure) -> str:
    console = Console(width=400, record=True)
    print_table([figure], console=console)
    return console.export_text()


def test_an_anchor_in_another_unit_is_printed_in_that_unit() -> None:
    out = _printed(Figure("API orders/s (PG, 1 worker)", 1071, "orders/s",
                          "GET /healthz, same load (req/s)", 5200, anchor_unit="req/s"))
    assert "1,071 orders/s" in out
    assert "5,200 req/s" in out and "5,200 orders/s" not in out


def test_an_anchor_without_its_own_unit_takes_the_figure_s() -> None:
    out = _printed(Figure("import orders/s (SQLite)", 9000, "orders/s",
                          "raw INSERT orders+lines (SQLite)", 18000))
    assert "18,000 orders/s" in out
