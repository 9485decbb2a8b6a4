"""SQLite (WAL) storage: the schema and a small transaction helper.

Every write the head-end acknowledges (an exchange response, a 201/202 from the operator
API) is committed and on disk before the answer leaves. The connection runs with
synchronous=NORMAL (a COMMIT writes the WAL without fsync) and the head-end fsyncs the WAL
itself: right after COMMIT in tx() (sync=True, what synchronous=FULL does), or, for the
exchange path (sync=False), once for a whole batch of commits before their responses leave
(group_commit.py). A statement run outside tx() that changed rows is fsync'd at once too."""

import json
import os
import sqlite3
import threading
from contextlib import contextmanager

from . import exposure, sealed

ITEMS = """
CREATE TABLE IF NOT EXISTS items (     -- the meter's outbox items, one per (device, epoch, seq)
    device TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    body TEXT NOT NULL, received REAL NOT NULL,
    PRIMARY KEY (device, epoch, seq)
);
CREATE INDEX IF NOT EXISTS items_recent ON items(device, kind);  -- by rowid: arrival order
"""

AUDIT = """   -- append-only (audit.py)
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    who TEXT NOT NULL, role TEXT NOT NULL,    -- the token's name and role, or cli:<user>
    action TEXT NOT NULL, target TEXT,        -- e.g. add_work, device:meter-a
    outcome TEXT NOT NULL, detail TEXT        -- ok, or "403: why"; the op and its args
);
CREATE INDEX IF NOT EXISTS audit_target ON audit(target, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    poll INTEGER NOT NULL,
    ack INTEGER,                       -- highest contiguous seq stored in `epoch`; NULL before any
    epoch TEXT,                        -- the meter's current outbox epoch (docs/protocol.md)
    last_contact REAL,
    stated TEXT NOT NULL DEFAULT 'unknown',   -- presence the meter last stated
    stated_note TEXT,
    presence TEXT NOT NULL DEFAULT 'unknown', -- effective presence (stated or derived)
    presence_note TEXT,
    presence_at REAL,
    derived INTEGER NOT NULL DEFAULT 0,       -- 1 while presence is derived unavailable
    transport TEXT,                    -- http | mqtt: how it last exchanged; NULL before any
    room INTEGER NOT NULL DEFAULT 0,   -- work it can still take (its last `room` - sent since)
    firmware TEXT,                     -- JSON: its latest `update` report (updates.py)
    conn TEXT,                         -- the connection nonce of its latest MQTT up (pushes)
    work_seq INTEGER NOT NULL DEFAULT 0  -- the last work sequence assigned to it
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created REAL NOT NULL,
    expires REAL,                      -- NULL: never (tokens.py)
    groups TEXT,                       -- JSON list of group names it is confined to; NULL: all
    revoked REAL                       -- when it was revoked; NULL: not revoked
);
CREATE TABLE IF NOT EXISTS nonces (
    device TEXT NOT NULL, nonce TEXT NOT NULL, seen REAL NOT NULL,
    PRIMARY KEY (device, nonce)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nonces_seen ON nonces(seen);
""" + ITEMS + """CREATE TABLE IF NOT EXISTS presence (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, state TEXT NOT NULL, note TEXT,
    at REAL NOT NULL, source TEXT NOT NULL      -- meter | derived | contact | lwt
);
CREATE INDEX IF NOT EXISTS presence_dev ON presence(device, id);
CREATE TABLE IF NOT EXISTS work (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, op TEXT NOT NULL, args TEXT NOT NULL,
    role TEXT NOT NULL, origin TEXT NOT NULL,
    created REAL NOT NULL, expires INTEGER NOT NULL,
    status TEXT NOT NULL,   -- queued delivered done rejected unknown_op expired cancelled
    when_available INTEGER NOT NULL DEFAULT 0,
    executed INTEGER NOT NULL DEFAULT 0,        -- listed in `done` or a result arrived
    deliveries INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL, finished_at REAL, result TEXT, reason TEXT,
    gid INTEGER, reply_to TEXT, ref TEXT,
    seq INTEGER                        -- the device's work sequence, set at first delivery
);
CREATE INDEX IF NOT EXISTS work_dev ON work(device, status, num);
CREATE INDEX IF NOT EXISTS work_open ON work(status, expires);
CREATE INDEX IF NOT EXISTS work_gid ON work(gid);
CREATE TABLE IF NOT EXISTS updates (   -- the latest `update` state per (device, version)
    device TEXT NOT NULL, version TEXT NOT NULL, state TEXT NOT NULL,
    percent INTEGER, reason TEXT, at REAL NOT NULL,
    PRIMARY KEY (device, version)
);
CREATE INDEX IF NOT EXISTS updates_version ON updates(version, device);
CREATE TABLE IF NOT EXISTS idempotency (   -- Idempotency-Key of operator POSTs (24 h)
    operator TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    ref TEXT NOT NULL,                 -- what it produced: a work id or a group command id
    created REAL NOT NULL,
    PRIMARY KEY (operator, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency(created);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS group_members (
    name TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (name, device)
);
CREATE TABLE IF NOT EXISTS group_work (
    gid INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, op TEXT NOT NULL,
    args TEXT NOT NULL, when_available INTEGER NOT NULL, expires INTEGER NOT NULL,
    created REAL NOT NULL, origin TEXT NOT NULL
);
""" + AUDIT + """
CREATE TABLE IF NOT EXISTS escalation_lists (  -- per group (escalation.py)
    grp TEXT PRIMARY KEY, operators TEXT NOT NULL, timeout_s REAL NOT NULL, kinds TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_duty (operator TEXT PRIMARY KEY, schedule TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, grp TEXT NOT NULL,
    kind TEXT NOT NULL, body TEXT NOT NULL, raised REAL NOT NULL,
    state TEXT NOT NULL,               -- open, acked, unacknowledged
    pos INTEGER NOT NULL, round INTEGER NOT NULL,  -- where on the list, which pass
    operator TEXT, deadline REAL,      -- who has it now, until when
    acked_by TEXT, acked_at REAL
);
CREATE INDEX IF NOT EXISTS alarms_due ON alarms(state, deadline);
CREATE TABLE IF NOT EXISTS alarm_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT, alarm INTEGER NOT NULL, at REAL NOT NULL,
    step TEXT NOT NULL, operator TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS alarm_steps_alarm ON alarm_steps(alarm, id);
CREATE TABLE IF NOT EXISTS mail_seen (  -- Message-IDs the mail gateway acted on (replays)
    message_id TEXT PRIMARY KEY, sender TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_rules (  -- the utility's allow rules (peer_rules.py)
    id INTEGER PRIMARY KEY AUTOINCREMENT, src TEXT NOT NULL, dst TEXT NOT NULL,
    ops TEXT NOT NULL, created REAL NOT NULL, by TEXT NOT NULL
);
"""


# Columns added after the first release: (table, column, declaration) for older files.
MIGRATIONS = (
    ("devices", "transport", "TEXT"),
    ("devices", "room", "INTEGER NOT NULL DEFAULT 0"),
    ("devices", "firmware", "TEXT"),
    ("devices", "conn", "TEXT"),
    ("devices", "epoch", "TEXT"),
    ("devices", "work_seq", "INTEGER NOT NULL DEFAULT 0"),
    ("work", "seq", "INTEGER"),
    ("tokens", "expires", "REAL"),
    ("tokens", "groups", "TEXT"),
    ("tokens", "revoked", "REAL"),
)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(text):
    return None if text is None else json.loads(text)


class Database:
    """One connection shared by the event loop and the background task, guarded by a lock."""

    def __init__(self, path):
        self.path = str(path)
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
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.sealer = sealed.attach(self)       # device keys sealed at rest (sealed.py)
        self.sync_wal()

    def _migrate(self):
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(items)")}
        if "epoch" not in have:     # a v1 file: items were keyed by (device, seq) alone
            self.conn.executescript(
                "BEGIN; ALTER TABLE items RENAME TO items_v1; DROP INDEX IF EXISTS items_recent;"
                + ITEMS + "INSERT INTO items(device, epoch, seq, kind, body, received) "
                "SELECT device, '', seq, kind, body, received FROM items_v1 ORDER BY rowid; "
                "DROP TABLE items_v1; COMMIT;")
        for table, column, decl in MIGRATIONS:
            have = {r["name"] for r in self.conn.execute("PRAGMA table_info(%s)" % table)}
            if column not in have:
                self.conn.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, decl))

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
