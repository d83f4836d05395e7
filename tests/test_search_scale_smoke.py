"""The search-at-scale benchmark runs end to end at a tiny size (never a speed assertion)."""

from benchmarks import search_scale


def test_search_benchmark_finds_every_loaded_customer_on_both_databases():
    found = search_scale.run("sqlite", 300, 20) + search_scale.run("postgresql", 300, 20)
    assert len(found) == 12
    for figure in found:
        expected = 0 if figure.name.endswith("no match)") else 20
        assert figure.notes["found"] == expected, figure.name
        assert figure.anchor_value > 0 and figure.value > 0


def test_encryption_cost_benchmark_runs_and_prices_both_settings():
    found = search_scale.encryption_cost("sqlite", 50, 200, 10)
    assert found[0].unit == "orders/s" and found[0].value > 0 and found[0].anchor_value > 0
    searches = found[1:]
    assert len(searches) == 6
    for figure in searches:
        expected = 0 if figure.name.endswith("no match)") else 10
        assert figure.notes["found"] == expected, figure.name
