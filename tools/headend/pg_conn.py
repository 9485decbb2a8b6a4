"""One thread's connection to PostgreSQL, for pg_store.PgDatabase: its statements, the writes
it defers to the next round trip, and its reconnection after the server went away.

Each thread that uses the store gets a Session of its own (pg_store keeps them per thread),
so a round trip made in a worker thread (the exchange, pg_store.OFF_LOOP) does not hold the
event loop, whose own statements go on its own connection. PostgreSQL orders the two as it
orders two head-end processes (row locks: lock_device).

write() defers a statement nobody reads (an UPDATE, a row lock, NOTIFY) inside a transaction:
it is sent with the next statement that needs an answer, or with COMMIT, in one pipeline
(psycopg's pipeline mode: one round trip for all). BEGIN goes with the transaction's first
statement the same way."""

import threading
from urllib.parse import urlsplit, urlunsplit

import psycopg

from .datastore import NulInText, StoreUnavailable

CONNECT_TIMEOUT_S = 5


class Row(dict):
    """A row by column name, like sqlite3.Row, and by position."""
    __slots__ = ("_values",)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._values[key]
        return dict.__getitem__(self, key)

    def __iter__(self):                 # values, as sqlite3.Row (dict(row) still works)
        return iter(self._values)


def rows(cursor):
    """psycopg row factory: Row. The names straight from the result: cursor.description
    builds a Column object per column and statement, about 40 % of the head-end's CPU on
    this store in a profile."""
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


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect(url, name):
    """A new autocommit connection (transactions are explicit), or StoreUnavailable."""
    try:
        return psycopg.connect(url, autocommit=True, row_factory=rows,
                               connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="backchannel-headend")
    except psycopg.OperationalError as e:
        raise StoreUnavailable("database %s unreachable: %s" % (name, first_line(e))) \
            from None


def check_text(args):
    for a in args:
        if a.__class__ is str and "\x00" in a:
            raise NulInText("text may not contain NUL characters")


def _gone(conn):
    return conn is None or conn.closed or conn.broken


class Session:
    """A connection and the state of its transaction: depth (nested tx() calls), the
    deferred statements, and whether BEGIN is still among them (`fresh`)."""

    def __init__(self, url, name):
        self.url, self.name = url, name
        self.conn = None
        self.lock = threading.RLock()
        self.depth = 0
        self.pending = []
        self.fresh = False

    def unavailable(self, error):
        return StoreUnavailable("database %s: %s" % (self.name, first_line(error)))

    def live(self):
        if _gone(self.conn):
            self.drop()
            if self.depth:          # never finish a transaction on a new connection
                raise StoreUnavailable("database %s: connection lost" % self.name)
            self.conn = connect(self.url, self.name)
        return self.conn

    def drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None

    def execute(self, text, args, batch=True):
        """One statement (`text` in psycopg's form), after the deferred ones: all in one
        round trip. batch=False: the statement alone (a script of several statements)."""
        check_text(args)
        if self.pending:
            return self.send(text, args, batch)
        conn = self.live()
        try:
            if args:
                return conn.execute(text, args)
            return conn.execute(text)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if _gone(self.conn):
                self.drop()
                raise self.unavailable(e) from None
            raise

    def send(self, text=None, args=(), batch=True):
        """The deferred statements, and `text` with them unless batch is False (then after
        them); the last cursor. A batch that starts the transaction and does not commit it
        is sent once more on a new connection if the server had dropped the old one (a
        restart): nothing of it can have taken effect."""
        statements, self.pending = self.pending, []
        fresh, self.fresh = self.fresh, False
        alone = text is not None and not (batch and (args or ";" not in text))
        if text is not None and not alone:
            statements.append((text, args))
        retry = fresh and text != "COMMIT"
        while True:
            conn = self.conn
            try:
                if _gone(conn):
                    raise psycopg.OperationalError("the connection was lost")
                with conn.pipeline():
                    for query, values in statements:
                        cur = conn.execute(query, values or None)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if not _gone(conn):
                    raise
                self.drop()
                if not retry:
                    raise self.unavailable(e) from None
                retry = False
                self.conn = connect(self.url, self.name)
        if alone:
            return self.execute(text, args)
        return cur

    def rollback(self):
        self.pending, self.fresh = [], False
        if _gone(self.conn):
            self.drop()
            return
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            self.drop()
