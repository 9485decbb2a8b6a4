"""PostgreSQL as the head-end's store (psycopg 3): the same interface as db.Database (tx, run,
one, all, many, insert, script), so every module runs unchanged on either.

One connection per process, guarded by a lock, as with SQLite: the head-end's transactions
are short and the event loop runs them one at a time. Durability, as on SQLite: tx() (sync
True, the operator API, the CLI) commits synchronously: COMMIT returns once PostgreSQL has
flushed the WAL. The exchange path (sync=False) commits with synchronous_commit off, which
returns at once, and group_commit.py then calls sync_wal() in its worker thread before any
of those exchanges is answered: one synchronous commit on a second connection, whose WAL
flush covers every commit made before it (the WAL is flushed in order). So one flush serves
a batch of exchanges, and nothing is answered before it is on disk. (Without this, every
exchange's COMMIT would wait for its own flush while holding the event loop.)

The database may go away (restart, network). Any call that cannot reach it raises
datastore.StoreUnavailable (the exchange answers 503 with Retry-After) and the next call
connects again. A transaction cut off before its COMMIT returned is rolled back by the
server, or it committed and its answer was lost: either way nothing was acknowledged, and
the meter's retry is deduplicated (items by (device, epoch, seq), work results by id)."""

import threading
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

from . import dialect, schema, sealed
from .datastore import NulInText, StoreUnavailable

MIGRATION_LOCK = 0x6263_0001          # pg_advisory_lock key: schema migrations ("bc" 1)
CONNECT_TIMEOUT_S = 5
BEGIN = (("BEGIN", ()),)
ASYNC_BEGIN = (("BEGIN", ()), ("SET LOCAL synchronous_commit = off", ()))


class Row(dict):
    """A row by column name, like sqlite3.Row, and by position."""
    __slots__ = ("_values",)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._values[key]
        return dict.__getitem__(self, key)

    def __iter__(self):                 # values, as sqlite3.Row (dict(row) still works)
        return iter(self._values)


def _rows(cursor):
    # the names straight from the result: cursor.description builds a Column object per
    # column and statement, which was about 40 % of the head-end's CPU on this store
    res = cursor.pgresult
    names = [res.fname(i).decode() for i in range(res.nfields)] if res is not None else []

    def make(values):
        row = Row(zip(names, values))
        row._values = values
        return row
    return make


def safe_name(url):
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = "%s:***@%s%s" % (parts.username or "", host,
                              ":%d" % parts.port if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PgDatabase:
    dialect = dialect.Postgres()

    def __init__(self, url, key_path=None):
        """key_path: the file of the key that seals device keys; None: a key for this
        process only (tests)."""
        self.url = url
        self.name = safe_name(url)
        self.lock = threading.RLock()
        self._depth = 0
        self._pending = []                   # write()'s statements, sent with the next one
        self._fresh = False                  # BEGIN not sent yet
        self.commits = 0
        self.synced_upto = 0
        self.conn = None
        self._flusher = None                 # sync_wal()'s own connection
        self._flush_lock = threading.Lock()
        self._connect()
        schema.migrate(self)
        self.sealer = sealed.attach(self, key_path)

    # -- the connection -------------------------------------------------------------------

    def _connect(self):
        self.conn = None
        self.conn = self._new_connection()

    def _new_connection(self):
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=_rows,
                                   connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="backchannel-headend")
        except psycopg.OperationalError as e:
            raise StoreUnavailable("database %s unreachable: %s"
                                   % (self.name, _first_line(e))) from None

    def _live(self):
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._drop()
            if self._depth:         # never finish a transaction on a new connection
                raise StoreUnavailable("database %s: connection lost" % self.name)
            self._connect()
        return self.conn

    def _drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None

    def _execute(self, sql, args, batch=True):
        """One statement, after the ones write() deferred: all in one round trip (psycopg's
        pipeline mode). batch=False: the statement alone (a script of several statements)."""
        for a in args:
            if a.__class__ is str and "\x00" in a:
                raise NulInText("text may not contain NUL characters")
        text = self.dialect.sql(sql, bool(args))
        if self._pending:
            return self._send(text, args, batch)
        conn = self._live()
        try:
            if args:
                return conn.execute(text, args)
            return conn.execute(text)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self._drop()
                raise StoreUnavailable("database %s: %s" % (self.name, _first_line(e))) \
                    from None
            raise

    def _send(self, text=None, args=(), batch=True):
        """The deferred statements, and `text` with them unless batch is False (then after
        them); the last cursor. A batch that starts the transaction and does not commit it
        is sent once more on a new connection if the server had dropped the old one (a
        restart): nothing of it can have taken effect."""
        statements, self._pending = self._pending, []
        fresh, self._fresh = self._fresh, False
        alone = text is not None and not (batch and (args or ";" not in text))
        if text is not None and not alone:
            statements.append((text, args))
        retry = fresh and text != "COMMIT"
        while True:
            conn = self.conn
            try:
                if conn is None or conn.closed or conn.broken:
                    raise psycopg.OperationalError("the connection was lost")
                with conn.pipeline():
                    for query, values in statements:
                        cur = conn.execute(query, values or None)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if conn is not None and not (conn.closed or conn.broken):
                    raise
                self._drop()
                if not retry:
                    raise StoreUnavailable("database %s: %s" % (self.name, _first_line(e))) \
                        from None
                retry = False
                self.conn = self._new_connection()
        if alone:
            return self._execute(text, args)
        return cur

    def _retrying(self, sql, args):
        """A statement that changes nothing by itself (a read outside a transaction): on a
        connection the server dropped (a restart), once more on a new one."""
        if self._depth or sql.lstrip()[:6].upper() != "SELECT":
            return self._execute(sql, args)
        try:
            return self._execute(sql, args)
        except StoreUnavailable:
            return self._execute(sql, args)

    # -- the store interface (db.Database's) ----------------------------------------------

    @contextmanager
    def tx(self, sync=True):
        """BEGIN ... COMMIT; nested calls join the outer one. `sync` is accepted for
        db.Database's callers: a COMMIT here is durable when it returns. BEGIN is sent with
        the transaction's first statement, and the writes deferred by write() with COMMIT."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._live()
            # sync=False: the caller waits for sync_wal() (group commit) before answering
            begin = BEGIN if sync else ASYNC_BEGIN
            self._pending, self._fresh = list(begin), True
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                sent, self._pending, self._fresh = not self._fresh, [], False
                if sent:
                    self._rollback()
                raise
            try:
                if self._fresh and len(self._pending) == len(begin):
                    self._pending, self._fresh = [], False     # nothing to commit
                    return
                self._execute("COMMIT", ())
            except BaseException:
                self._pending, self._fresh = [], False
                self._rollback()
                raise
            finally:
                self._depth = 0
            self.commits += 1
            if sync:                # flushed, and with it every commit before it
                self.synced_upto = self.commits

    def _rollback(self):
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._drop()
            return
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop()

    @contextmanager
    def migration_lock(self):
        """Head-end processes starting together: one migrates, the others wait for it."""
        with self.lock:
            self._execute("SELECT pg_advisory_lock(%d)" % MIGRATION_LOCK, ())
            try:
                yield
            finally:
                self._execute("SELECT pg_advisory_unlock(%d)" % MIGRATION_LOCK, ())

    def script(self, sql):
        with self.tx():
            self._execute(sql, (), batch=False)

    def compact(self):
        """Rewrite `devices` so the plain keys just sealed leave its pages (VACUUM FULL)."""
        with self.lock:
            self._execute("VACUUM FULL devices", ())

    def sync(self):
        """Every commit so far on disk (from the loop thread, outside a transaction)."""
        target = self.commits
        if self.synced_upto < target:
            self.sync_wal()
            self.synced_upto = max(self.synced_upto, target)

    def sync_wal(self):
        """Flush the WAL up to now (any thread): a synchronous commit of a transaction that
        has an id, on a connection of its own, returns once the WAL is flushed past it, so
        past every commit made before it started."""
        with self._flush_lock:
            try:
                if self._flusher is None or self._flusher.closed or self._flusher.broken:
                    self._flusher = self._new_connection()
                self._flusher.execute("BEGIN; SELECT txid_current(); COMMIT")
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if self._flusher is not None:
                    self._flusher.close()
                self._flusher = None
                raise StoreUnavailable("database %s: %s" % (self.name, _first_line(e))) \
                    from None

    def announce(self, devices):
        """NOTIFY the other head-end processes, delivered if this transaction commits."""
        from . import pg_notify
        pg_notify.send(self, devices)

    def lock_device(self, device):
        """The device's row, locked until this transaction ends: two processes handling
        the same meter (a retry through another process) compute its ack and work sequence
        one after the other. Sent with the transaction's next statement, which runs after
        it, as every later one does."""
        self.write("SELECT 1 FROM devices WHERE id = ? FOR UPDATE", device)

    def write(self, sql, *args):
        """A statement whose result nobody reads (an UPDATE, a row lock): inside a
        transaction it is sent with the next statement that needs an answer, or with COMMIT,
        in one round trip; an error it raises comes from that statement (the transaction
        is rolled back either way)."""
        with self.lock:
            if not self._depth:
                self.run(sql, *args)
                return
            for a in args:
                if a.__class__ is str and "\x00" in a:
                    raise NulInText("text may not contain NUL characters")
            self._pending.append((self.dialect.sql(sql, bool(args)), args))

    def listener(self, hub):
        from . import pg_notify
        return pg_notify.Listener(hub, self.url)

    def run(self, sql, *args):
        with self.lock:
            cur = self._execute(sql, args)
            if not self._depth:
                self.commits += 1
                self.synced_upto = self.commits
            return cur

    def many(self, sql, rows):
        with self.lock:
            if not self._depth:
                raise RuntimeError("many() runs inside tx()")
            rows = list(rows)
            if not rows:
                return
            if self._pending:
                self._send()
            conn = self._live()
            try:
                with conn.cursor() as cur:
                    cur.executemany(self.dialect.sql(sql), rows)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self._drop()
                raise StoreUnavailable("database %s: %s" % (self.name, _first_line(e))) \
                    from None

    def insert(self, sql, *args, key):
        """Run an INSERT; the new row's `key` column (its identity)."""
        return self.run(sql + " RETURNING " + key, *args).fetchone()[key]

    def one(self, sql, *args):
        with self.lock:
            return self._retrying(sql, args).fetchone()

    def all(self, sql, *args):
        with self.lock:
            return self._retrying(sql, args).fetchall()

    def close(self):
        with self.lock:
            self._drop()
        with self._flush_lock:
            if self._flusher is not None:
                self._flusher.close()
                self._flusher = None


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
