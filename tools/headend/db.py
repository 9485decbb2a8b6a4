"""SQLite (WAL) storage: the schema and a small transaction helper.

Every write the head-end acknowledges (an exchange response, a 201/202 from the operator
API) is committed and on disk before the answer leaves. The connection runs with
synchronous=NORMAL (a COMMIT writes the WAL without fsync) and the head-end fsyncs the WAL
itself: right after COMMIT in tx() (sync=True, what synchronous=FULL does), or, for the
exchange path (sync=False), once for a whole batch of commits before their responses leave
(group_commit.py). A statement run outside tx() that changed rows is fsync'd at once too.

The same methods (tx, run, one, all, many, insert, script) are the store interface that
pg_store.py implements for PostgreSQL; datastore.open_store() picks one by the database's
name. SQL is written in the portable subset dialect.py describes."""

import json
import os
import sqlite3
import threading
from contextlib import contextmanager

from . import dialect, exposure, schema, sealed


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(text):
    return None if text is None else json.loads(text)


class Database:
    """One connection shared by the event loop and the background task, guarded by a lock."""

    dialect = dialect.Sqlite()

    def __init__(self, path, key_path=None):
        """key_path: the file of the key that seals device keys (default: <path>.key)."""
        self.path = self.name = str(path)
        _private_files(self.path)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                    timeout=10.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")     # the WAL fsync is ours: sync_wal
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.lock = threading.RLock()
        self._depth = 0
        self.commits = 0                 # COMMITs on this connection so far
        self.synced_upto = 0             # commits known to be on disk (WAL fsync'd after them)
        self._wal_lock = threading.Lock()
        self._wal = None                 # (fd, st_ino) of the open -wal file
        schema.migrate(self)
        if key_path is None and self.path not in (":memory:", ""):
            key_path = self.path + ".key"
        self.sealer = sealed.attach(self, key_path)   # device keys sealed at rest (sealed.py)
        self.sync_wal()

    @contextmanager
    def migration_lock(self):
        yield           # one SQLite file, opened by one head-end: nothing to coordinate

    def script(self, sql):
        """Several statements (DDL); commits any open transaction first, as sqlite3 does."""
        with self.lock:
            self.conn.executescript(sql)

    def compact(self):
        """Rewrite the file so deleted text leaves the disk (after sealing plain keys)."""
        if self.path not in (":memory:", ""):
            with self.lock:
                self.conn.execute("VACUUM")
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def tx_depth(self):
        """Nesting of the open transaction (0: none)."""
        return self._depth

    @contextmanager
    def tx(self, sync=True):
        """A write transaction (BEGIN IMMEDIATE ... COMMIT); nested calls join the outer one.
        sync: fsync the WAL before returning. With sync=False the caller must wait for
        GroupCommit.synced() before it acknowledges anything."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            changes = self.conn.total_changes
            try:
                yield self
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")
            if self.conn.total_changes != changes:     # a read-only one writes no WAL
                self.commits += 1
                if sync:
                    self.sync()

    def sync(self):
        """Every commit so far on disk (call with the lock held or from the loop thread)."""
        target = self.commits
        if self.synced_upto < target:
            self.sync_wal()
            self.synced_upto = max(self.synced_upto, target)

    def sync_wal(self):
        """fsync the -wal file (safe from any thread). When the file is new to us (first
        call, or SQLite recreated it), its directory entry is fsync'd too."""
        path = self.path + "-wal"
        with self._wal_lock:
            try:
                ino = os.stat(path).st_ino
            except FileNotFoundError:    # no WAL: every commit was checkpointed (and synced)
                return
            if self._wal is None or self._wal[1] != ino:
                if self._wal is not None:
                    os.close(self._wal[0])
                    self._wal = None
                fd = os.open(path, os.O_RDONLY)
                self._wal = (fd, os.fstat(fd).st_ino)
                _fsync_dir(os.path.dirname(os.path.abspath(path)))
            os.fsync(self._wal[0])

    def run(self, sql, *args):
        with self.lock:
            if self._depth or self.conn.in_transaction:
                return self.conn.execute(sql, args)
            before = self.conn.total_changes
            cur = self.conn.execute(sql, args)
            if self.conn.total_changes != before:     # an autocommit write: on disk now
                self.commits += 1
                self.sync()
            return cur

    def executor(self):
        """None: the exchange's statements run on the event loop (no round trips to wait
        for; pg_store.PgDatabase has worker threads)."""
        return None

    def write(self, sql, *args):
        """A statement whose result nobody reads (pg_store.PgDatabase defers it to the next
        round trip); here it runs at once."""
        self.run(sql, *args)

    def announce(self, devices):
        """Work was queued for `devices` (in this transaction): one process per SQLite file,
        so its own wake-ups (Hub) are all there is."""

    def lock_device(self, device):
        """Serialise this transaction with others on the same device: BEGIN IMMEDIATE
        already serialises every write transaction on SQLite."""

    def listener(self, hub):
        """The cross-process wake-up listener (pg_notify.py): none for SQLite."""
        return None

    def checkpointer(self):
        """A serving head-end's WAL checkpoints, off the event loop (wal_checkpoint.py)."""
        if self.path in (":memory:", ""):
            return None
        from .wal_checkpoint import Checkpointer
        return Checkpointer(self)

    def many(self, sql, rows):
        """One statement for each tuple of `rows` (executemany), in the caller's tx."""
        with self.lock:
            if not (self._depth or self.conn.in_transaction):
                raise RuntimeError("many() runs inside tx()")
            self.conn.executemany(sql, rows)

    def insert(self, sql, *args, key):
        """Run an INSERT; the new row's `key` (its INTEGER PRIMARY KEY: the rowid)."""
        return self.run(sql, *args).lastrowid

    def one(self, sql, *args):
        with self.lock:
            return self.conn.execute(sql, args).fetchone()

    def all(self, sql, *args):
        with self.lock:
            return self.conn.execute(sql, args).fetchall()

    def close(self):
        with self.lock:
            self.conn.close()
            with self._wal_lock:
                if self._wal is not None:
                    os.close(self._wal[0])
                    self._wal = None


def _private_files(path):
    """The database holds every device key (sealed, sealed.py): create it 0600 (SQLite
    gives its -wal and -shm the database file's mode), and narrow an older file and its
    -wal/-shm to the owner."""
    if path == ":memory:" or not path:
        return
    try:
        exposure.create_private(path)
    except OSError:
        return                  # no such directory, not writable: sqlite3 says so next
    for p in (path, path + "-wal", path + "-shm"):
        exposure.narrow(p)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
