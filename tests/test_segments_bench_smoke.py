"""The segment benchmark runs end to end at a tiny size on both databases, and Patron's count
equals the hand-written SQL count for every case (never a speed assertion)."""

from benchmarks import segments


def test_segment_benchmark_counts_agree_with_the_hand_written_sql():
    found = segments.run("sqlite", 400, 1) + segments.run("postgresql", 400, 1)
    assert len(found) == 2 * len(segments.CASES)
    for figure in found:
        assert figure.notes["count"] == figure.notes["anchor_count"], figure.name
        assert figure.value > 0 and figure.anchor_value > 0
    assert any(f.notes["count"] > 0 for f in found)
