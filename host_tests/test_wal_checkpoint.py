"""A serving head-end on SQLite checkpoints its WAL in a thread of its own (wal_checkpoint.py),
never inside a COMMIT on the event loop: its connection's autocheckpoint is off while it
serves, everything committed is copied into the database file shortly after, the WAL is
reused from its beginning, and what was committed is all there after a restart."""

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from headend.settings import Settings
from headend.webapp import create_app

pytestmark = pytest.mark.unit


def wal_state(path):
    """(WAL frames, frames already in the database file), asked on a connection of our own."""
    c = sqlite3.connect(path, isolation_level=None)
    try:
        _, frames, copied = c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames, copied
    finally:
        c.close()


def autocheckpoint(db):
    with db.lock:
        return db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def write(db, rows, size=3000):
    for i in range(rows):
        with db.tx():
            db.run("INSERT INTO scratch(x) VALUES (?)", "%d" % i + "x" * size)


def test_the_wal_is_checkpointed_off_the_loop_and_reused(tmp_path):
    path = str(tmp_path / "hub.db")
    app = create_app(Settings(db=path, sweep_interval=3600))
    db = app.state.hub.db
    db.script("CREATE TABLE scratch(x TEXT)")
    assert autocheckpoint(db) == 1000                 # SQLite's own, until the server starts
    with TestClient(app):
        ckpt = app.state.checkpointer
        assert autocheckpoint(db) == 0                 # never inside a COMMIT while serving
        write(db, 400)                                 # about 1,200 pages: past SQLite's 1,000
        end = time.monotonic() + 10
        while time.monotonic() < end and ckpt.passes == 0:
            time.sleep(0.05)
        assert ckpt.passes >= 1
        end = time.monotonic() + 10
        while time.monotonic() < end and wal_state(path)[0] != wal_state(path)[1]:
            time.sleep(0.05)
        frames, copied = wal_state(path)
        assert frames == copied and frames > 0, (frames, copied)
        size = (tmp_path / "hub.db-wal").stat().st_size
        write(db, 50)                                  # the WAL starts again from its start
        assert (tmp_path / "hub.db-wal").stat().st_size <= size
    assert autocheckpoint(db) == 1000                  # stopped with the server
    db.close()
    again = sqlite3.connect(path)
    assert again.execute("SELECT COUNT(*) FROM scratch").fetchone()[0] == 450
    again.close()


def test_without_the_thread_nothing_is_copied(tmp_path):
    """The checks above can fail: autocheckpoint off and no thread, the WAL keeps growing."""
    path = str(tmp_path / "hub.db")
    app = create_app(Settings(db=path, sweep_interval=3600))
    db = app.state.hub.db
    db.script("CREATE TABLE scratch(x TEXT)")
    with db.lock:
        db.conn.execute("PRAGMA wal_autocheckpoint=0")
    write(db, 400)
    size = (tmp_path / "hub.db-wal").stat().st_size
    write(db, 50)
    assert (tmp_path / "hub.db-wal").stat().st_size > size > 4 * 1024 * 1024
    db.close()
