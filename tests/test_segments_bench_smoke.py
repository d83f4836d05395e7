"""The segment benchmark runs end to end at a tiny size on both databases, and Patron's count,
on the database and on the audience replica, equals the hand-written SQL count for every case
(never a speed assertion)."""

from benchmarks import segments


def test_segment_benchmark_counts_agree_with_the_hand_written_sql():
    found = (segments.run("sqlite", 400, 1, replica_rounds=2)
             + segments.run("postgresql", 400, 1, replica_rounds=2))
    # per database: the database's rows, the replica's median and p99 rows, the sync
    assert len(found) == 2 * (3 * len(segments.CASES) + 1)
    for figure in found:
        assert figure.value > 0 and figure.anchor_value > 0, figure.name
        if "sync" in figure.name:
            assert figure.notes["rows"]["customers"] == 400
            continue
        assert figure.notes["count"] == figure.notes["anchor_count"], figure.name
        if "replica" in figure.name:  # the replica, the database and DuckDB agree
            assert figure.notes["duckdb_count"] == figure.notes["count"], figure.name
    assert sum("replica live count" in f.name for f in found) == 4 * len(segments.CASES)
    assert any(f.notes.get("count", 0) > 0 for f in found)
