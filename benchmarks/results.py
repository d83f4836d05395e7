"""Figures with their anchors, the table printed to stdout and the JSON written next to it."""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Figure:
    """One measured figure next to the anchor it is read against.

    For rates (``higher_is_better``) the ratio is value / anchor: the share of the anchor's rate
    Patron reaches. For latencies it is also value / anchor: how many times the anchor's time
    Patron takes. ``target`` is the goal in words; ``passed`` is None when there is none.
    ``anchor_unit`` is the anchor's unit when it differs from the figure's (an API's orders/s
    against ``GET /healthz``'s req/s); empty means the same unit.
    """

    name: str
    value: float
    unit: str
    anchor: str
    anchor_value: float
    higher_is_better: bool = True
    target: str = ""
    passed: bool | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    anchor_unit: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.anchor_value:
            return None
        return self.value / self.anchor_value


def percentile(samples: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation; 0 for no samples."""
    if not samples:
        return 0.0
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1] if p < 100 \
        else max(samples)


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f} ms"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:,.0f} {unit}"


def print_table(figures: list[Figure], console: Console | None = None) -> None:
    # Piped output (make bench | tee) gets a wide table rather than rich's 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="Patron benchmarks (each figure against an anchor measured in this run)")
    for col in ("figure", "value", "anchor", "anchor value", "ratio", "target", "result"):
        table.add_column(col, justify="right" if col in ("value", "anchor value", "ratio")
                         else "left")
    for f in figures:
        ratio = f.ratio
        result = "-" if f.passed is None else ("PASS" if f.passed else "FAIL")
        table.add_row(f.name, _fmt(f.value, f.unit), f.anchor,
                      _fmt(f.anchor_value, f.anchor_unit or f.unit),
                      "-" if ratio is None else f"{ratio:.2f}", f.target or "-", result)
    console.print(table)


def write_json(path: Path, meta: dict[str, Any], figures: list[Figure]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta,
           "figures": [{**asdict(f), "ratio": f.ratio} for f in figures]}
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
