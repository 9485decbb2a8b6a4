"""SQLite's WAL checkpoints off the event loop, for a serving head-end.

By default SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages: that
COMMIT copies about 4 MB into the database file and fsyncs it, on the event loop, where every
other meter's exchange waits for it. At 10,000 meters that was about a sixth of the loop's
time (make bench: the head-end's COMMITs in a py-spy profile; the head-end idle 15 % of a
core with meters waiting). So while the head-end serves, its connection never checkpoints
(wal_autocheckpoint=0) and this thread, on a connection of its own, runs a PASSIVE checkpoint
every `interval` seconds: it copies what readers no longer need while the loop goes on
committing (sqlite3 lets go of the GIL while SQLite works), and the WAL starts again from its
beginning once it has all been copied, as with SQLite's own checkpoints.

Durability is unchanged: a commit is acknowledged once the WAL is fsync'd (db.py), and a
checkpoint cut by a crash is redone from the WAL on the next open (SQLite's own recovery)."""

import logging
import os
import sqlite3
import threading

log = logging.getLogger("backchannel")

WARN_BYTES = 256 * 1024 * 1024      # a WAL this large: something holds a read snapshot


class Checkpointer:
    def __init__(self, db, interval=0.2):
        self.db, self.interval = db, interval
        self.passes = 0                  # checkpoints that copied at least one page
        self._stop = threading.Event()
        self._thread = None
        self._conn = None
        self._warned = False

    def start(self):
        self._conn = sqlite3.connect(self.db.path, isolation_level=None,
                                     check_same_thread=False, timeout=10.0)
        with self.db.lock:
            self.db.conn.execute("PRAGMA wal_autocheckpoint=0")
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop the thread; the connection checkpoints by itself again (as SQLite does)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self.db.lock:
            try:
                self.db.conn.execute("PRAGMA wal_autocheckpoint=1000")
            except sqlite3.ProgrammingError:
                pass                     # the database was closed first

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except sqlite3.Error as e:  # the next pass tries again; SQLite's data is intact
                log.warning("WAL checkpoint of %s failed: %s", self.db.path, e)

    def checkpoint(self):
        """One PASSIVE checkpoint: returns (WAL frames, frames copied)."""
        _, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if copied > 0:
            self.passes += 1
        self._check_size()
        return frames, copied

    def _check_size(self):
        try:
            size = os.stat(self.db.path + "-wal").st_size
        except FileNotFoundError:
            return
        if size > WARN_BYTES and not self._warned:
            self._warned = True
            log.warning("the WAL of %s is %d MiB: a long read keeps it from being reused",
                        self.db.path, size >> 20)
