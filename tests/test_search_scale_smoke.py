"""The search-at-scale benchmark runs end to end at a tiny size (never a speed assertion)."""

from benchmarks import search_scale


def test_search_benchmark_finds_every_loaded_customer_on_both_databases():
    found = search_scale.run("sqlite", 300, 20) + search_scale.run("postgresql", 300, 20)
    assert len(found) == 12
    for figure in found:
        expected = 0 if figure.name.endswith("no match)") else 20
        assert figure.notes["found"] == expected, figure.name
        assert figure.anchor_value > 0 and figure.value > 0
