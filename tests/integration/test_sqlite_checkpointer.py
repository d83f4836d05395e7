"""SQLite's WAL is copied back into the database file by a thread of the engine's own after
commits (``patron.db.WalCheckpointer``), not by the committing writer; committed data stays
readable throughout and the thread ends when the commits stop."""

import threading
import time

from sqlalchemy import text

from patron.db import WalCheckpointer, make_engine


def _wait(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _checkpointer_threads():
    return [t for t in threading.enumerate() if t.name == "patron-wal-checkpoint"]


def test_commits_are_checkpointed_off_the_writer_and_the_thread_ends(tmp_path):
    path = tmp_path / "ck.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        for n in range(20):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t (v) VALUES (:v)"),
                             [{"v": f"{n}-{i}" * 50} for i in range(200)])
        # The rows (about 1 MB) reach the database file only through a checkpoint, and the
        # writer's own automatic one waits for 16,384 pages: the engine's thread copied them,
        # while the engine's pooled connection stays open.
        assert _wait(lambda: path.stat().st_size > 500_000), "no checkpoint after the commits"
        assert _wait(lambda: not _checkpointer_threads()), "the thread did not end"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 4000
    finally:
        engine.dispose()


def test_a_checkpoint_never_creates_a_missing_database(tmp_path):
    gone = tmp_path / "gone.sqlite3"
    WalCheckpointer(str(gone)).checkpoint()
    assert not gone.exists()


def test_a_memory_database_has_no_checkpointer():
    # Threads of earlier tests' file databases end 0.3 s after their last commit; this
    # worker runs one test at a time, so none starts while this one runs.
    assert _wait(lambda: not _checkpointer_threads()), "an earlier test's thread did not end"
    engine = make_engine("sqlite://")
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
        time.sleep(0.05)
        assert not _checkpointer_threads()
    finally:
        engine.dispose()
