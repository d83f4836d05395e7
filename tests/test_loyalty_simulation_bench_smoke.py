"""The loyalty simulation benchmark runs end to end on a tiny demo shop, on both databases, so
that it cannot rot unnoticed. Nothing here asserts a speed."""

from __future__ import annotations

from benchmarks.loyalty_simulation import run


def test_the_simulation_benchmark_measures_every_demo_program(db_url):
    out = run(db_url, 40, 3)
    assert out["orders_loaded"] > 0 and out["members"] > 0
    assert {p["program"] for p in out["programs"]} == {"BEAN", "FRESH", "GLOW"}
    for p in out["programs"]:
        assert set(p["timing_ms"]) == {"load", "replay", "total"}
        assert p["anchor_select_lines_ms"] >= 0
        # Doubling coffee and lowering GOLD never gives fewer points on the same orders.
        assert p["proposed_net_points"] >= p["current_net_points"]
    bean = next(p for p in out["programs"] if p["program"] == "BEAN")
    assert bean["orders"] > 0 and bean["proposed_net_points"] > bean["current_net_points"]
