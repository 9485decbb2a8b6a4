"""PostgreSQL as the head-end's store (psycopg 3): the same interface as db.Database (tx, run,
one, all, many, insert, script), so every module runs unchanged on either.

One connection per thread that uses the store (pg_conn.Session): the event loop's, and the
worker threads' that run the exchange's statements off the loop (OFF_LOOP, hub.off_loop), so a
round trip to the server holds neither the loop's health checks nor its other requests.
Durability, as on SQLite: tx() (sync True, the operator API, the CLI) commits synchronously:
COMMIT returns once PostgreSQL has flushed the WAL. The exchange path (sync=False) commits
with synchronous_commit off, which returns at once, and group_commit.py then calls sync_wal()
in its worker thread before any of those exchanges is answered: one synchronous commit on a
connection of its own, whose WAL flush covers every commit made before it (the WAL is
flushed in order). So one flush serves a batch of exchanges, and nothing is answered before
it is on disk. (Without this, every exchange's COMMIT would wait for its own flush.)

The database may go away (restart, network). Any call that cannot reach it raises
datastore.StoreUnavailable (the exchange answers 503 with Retry-After) and the next call
connects again. A transaction cut off before its COMMIT returned is rolled back by the
server, or it committed and its answer was lost: either way nothing was acknowledged, and
the meter's retry is deduplicated (items by (device, epoch, seq), work results by id)."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg

from . import dialect, pg_conn, schema, sealed
from .datastore import StoreUnavailable

MIGRATION_LOCK = 0x6263_0001          # pg_advisory_lock key: schema migrations ("bc" 1)
BEGIN = (("BEGIN", ()),)
ASYNC_BEGIN = (("BEGIN", ()), ("SET LOCAL synchronous_commit = off", ()))
# threads (connections) for the exchange's statements; 0: on the event loop
OFF_LOOP = int(os.environ.get("BC_PG_THREADS", "2"))
safe_name = pg_conn.safe_name


class PgDatabase:
    dialect = dialect.Postgres()
    off_loop = OFF_LOOP

    def __init__(self, url, key_path=None):
        """key_path: the file of the key that seals device keys; None: a key for this
        process only (tests)."""
        self.url = url
        self.name = safe_name(url)
        self._local = threading.local()
        self._sessions = []                  # (thread, Session): closed by close()
        self._sessions_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.commits = 0
        self.synced_upto = 0
        self._flusher = None                 # sync_wal()'s own connection
        self._flush_lock = threading.Lock()
        self._pool = None                    # executor(): the OFF_LOOP threads
        self._session().live()
        schema.migrate(self)
        self.sealer = sealed.attach(self, key_path)

    # -- this thread's connection ---------------------------------------------------------

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = pg_conn.Session(self.url, self.name)
            with self._sessions_lock:
                dead = [e for e in self._sessions if not e[0].is_alive()]
                self._sessions = [e for e in self._sessions if e[0].is_alive()]
                self._sessions.append((threading.current_thread(), s))
            for _, old in dead:
                old.drop()
        return s

    def executor(self):
        """The worker threads that run the exchange's statements off the event loop
        (hub.off_loop), each on a connection of its own."""
        if not OFF_LOOP:
            return None
        with self._sessions_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(OFF_LOOP, thread_name_prefix="pg-store")
            return self._pool

    @property
    def lock(self):
        return self._session().lock

    @property
    def conn(self):
        return self._session().conn

    @property
    def tx_depth(self):
        """Nesting of the open transaction (0: none), as db.Database.tx_depth."""
        return self._session().depth

    def _counted(self, durable_upto=None):
        """A commit; durable_upto: the commits known to be on disk with it (those counted
        before a synchronous COMMIT was sent)."""
        with self._count_lock:
            self.commits += 1
            if durable_upto is not None:
                self.synced_upto = max(self.synced_upto, durable_upto)

    def _query(self, sql, args):
        """A read outside a transaction is sent once more on a new connection if the server
        had dropped the old one (a restart)."""
        s = self._session()
        text = self.dialect.sql(sql, bool(args))
        if s.depth or sql.lstrip()[:6].upper() != "SELECT":
            return s.execute(text, args)
        try:
            return s.execute(text, args)
        except StoreUnavailable:
            return s.execute(text, args)

    # -- the store interface (db.Database's) ----------------------------------------------

    @contextmanager
    def tx(self, sync=True):
        """BEGIN ... COMMIT; nested calls join the outer one. `sync` is accepted for
        db.Database's callers: a COMMIT here is durable when it returns. BEGIN is sent with
        the transaction's first statement, and the writes deferred by write() with COMMIT."""
        s = self._session()
        with s.lock:
            if s.depth:
                s.depth += 1
                try:
                    yield self
                finally:
                    s.depth -= 1
                return
            s.live()
            # sync=False: the caller waits for sync_wal() (group commit) before answering
            begin = BEGIN if sync else ASYNC_BEGIN
            s.pending, s.fresh = list(begin), True
            s.depth = 1
            try:
                yield self
            except BaseException:
                s.depth = 0
                if s.fresh:             # nothing sent
                    s.pending, s.fresh = [], False
                else:
                    s.rollback()
                raise
            before = self.commits
            try:
                if s.fresh and len(s.pending) == len(begin):
                    s.pending, s.fresh = [], False      # nothing to commit
                    return
                s.execute("COMMIT", ())
            except BaseException:
                s.rollback()
                raise
            finally:
                s.depth = 0
            self._counted(before if sync else None)

    @contextmanager
    def migration_lock(self):
        """Head-end processes starting together: one migrates, the others wait for it."""
        s = self._session()
        with s.lock:
            s.execute("SELECT pg_advisory_lock(%d)" % MIGRATION_LOCK, ())
            try:
                yield
            finally:
                s.execute("SELECT pg_advisory_unlock(%d)" % MIGRATION_LOCK, ())

    def script(self, sql):
        with self.tx():
            self._session().execute(self.dialect.sql(sql, False), (), batch=False)

    def compact(self):
        """Rewrite `devices` so the plain keys just sealed leave its pages (VACUUM FULL)."""
        s = self._session()
        with s.lock:
            s.execute("VACUUM FULL devices", ())

    def sync(self):
        """Every commit so far on disk (outside a transaction)."""
        target = self.commits
        if self.synced_upto < target:
            self.sync_wal()
            with self._count_lock:
                self.synced_upto = max(self.synced_upto, target)

    def sync_wal(self):
        """Flush the WAL up to now (any thread): a synchronous commit of a transaction that
        has an id, on a connection of its own, returns once the WAL is flushed past it, so
        past every commit made before it started."""
        with self._flush_lock:
            try:
                if self._flusher is None or self._flusher.closed or self._flusher.broken:
                    self._flusher = pg_conn.connect(self.url, self.name)
                self._flusher.execute("BEGIN; SELECT txid_current(); COMMIT")
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if self._flusher is not None:
                    self._flusher.close()
                self._flusher = None
                raise StoreUnavailable("database %s: %s" % (self.name, pg_conn.first_line(e))) \
                    from None

    def announce(self, devices):
        """NOTIFY the other head-end processes, delivered if this transaction commits."""
        from . import pg_notify
        pg_notify.send(self, devices)

    def lock_device(self, device):
        """The device's row, locked until this transaction ends: two processes (or two of a
        process's threads) handling the same meter compute its ack and work sequence one
        after the other. Sent with the transaction's next statement, which runs after it,
        as every later one does."""
        self.write("SELECT 1 FROM devices WHERE id = ? FOR UPDATE", device)

    def write(self, sql, *args):
        """A statement whose result nobody reads (an UPDATE, a row lock): inside a
        transaction it is sent with the next statement that needs an answer, or with COMMIT,
        in one round trip; an error it raises comes from that statement (the transaction
        is rolled back either way)."""
        s = self._session()
        if not s.depth:
            self.run(sql, *args)
            return
        pg_conn.check_text(args)
        s.pending.append((self.dialect.sql(sql, bool(args)), args))

    def listener(self, hub):
        from . import pg_notify
        return pg_notify.Listener(hub, self.url)

    def checkpointer(self):
        """The server checkpoints its own WAL (db.Database: SQLite's, off the loop)."""
        return None

    def run(self, sql, *args):
        s = self._session()
        with s.lock:
            before = self.commits
            cur = s.execute(self.dialect.sql(sql, bool(args)), args)
            if not s.depth:             # autocommit: durable when it returns
                self._counted(before)
            return cur

    def many(self, sql, rows):
        s = self._session()
        with s.lock:
            if not s.depth:
                raise RuntimeError("many() runs inside tx()")
            rows = list(rows)
            if not rows:
                return
            if s.pending:
                s.send()
            conn = s.live()
            try:
                with conn.cursor() as cur:
                    cur.executemany(self.dialect.sql(sql), rows)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                s.drop()
                raise s.unavailable(e) from None

    def insert(self, sql, *args, key):
        """Run an INSERT; the new row's `key` column (its identity)."""
        return self.run(sql + " RETURNING " + key, *args).fetchone()[key]

    def one(self, sql, *args):
        with self.lock:
            return self._query(sql, args).fetchone()

    def all(self, sql, *args):
        with self.lock:
            return self._query(sql, args).fetchall()

    def close(self):
        """Every thread's connection, and the flusher's; the worker threads end."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
            self._local = threading.local()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        for _, s in sessions:
            with s.lock:
                s.drop()
        with self._flush_lock:
            if self._flusher is not None:
                self._flusher.close()
                self._flusher = None
