"""Which store a head-end runs on: SQLite (the default: a file name) or PostgreSQL (a
`postgresql://` URL), both behind the interface of db.Database (docs/scaling.md)."""

import os


class StoreUnavailable(Exception):
    """The database cannot be reached now (PostgreSQL down or restarting): the caller
    answers 503 with Retry-After and acknowledges nothing."""


class NulInText(ValueError):
    """A text argument holds a NUL character, which PostgreSQL's text cannot store: the
    API answers 400 (SQLite would store it; no identifier or name the head-end makes has
    one)."""


RETRY_AFTER_S = 5          # what a 503 for an unreachable database tells the client


def is_postgres(location):
    return str(location).startswith(("postgresql://", "postgres://"))


def beside(settings, name):
    """The path `name` next to the database file; on PostgreSQL next to the device-key file
    (the head-end's own directory), else in the current one."""
    anchor = settings.db
    if is_postgres(anchor):
        anchor = settings.db_key or os.path.join(os.getcwd(), "backchannel.key")
    return os.path.join(os.path.dirname(os.path.abspath(anchor)), name)


def open_store(location, key_path=None):
    """The store at `location`: a PostgreSQL URL, or a SQLite file (":memory:" too).
    key_path: the device-key file (sealed.py); default <file>.key for SQLite, and for
    PostgreSQL none (a key for this process only): a server passes settings.db_key."""
    if is_postgres(location):
        from .pg_store import PgDatabase  # psycopg only for a head-end on PostgreSQL
        return PgDatabase(location, key_path)
    from .db import Database
    return Database(location, key_path)
