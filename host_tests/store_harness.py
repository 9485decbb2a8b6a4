"""Which store the head-end tests run on: SQLite (default) or PostgreSQL (`pytest
--store=postgresql`, or BC_STORE=postgresql; the `postgresql` lane of make test).

On PostgreSQL each test gets a schema of its own in one private cluster: the cluster named by
BC_PG_URL (the lane starts one and shares it with its workers), or one this process starts
on first use (headend/pg_server.py) and removes at exit. Without PostgreSQL's binaries the
tests that need it skip, saying why."""

import atexit
import os
import secrets
from urllib.parse import quote

import pytest

from headend import pg_server

_cluster = {}


def postgres():
    """The suite's store is PostgreSQL (conftest sets BC_STORE from --store)."""
    return os.environ.get("BC_STORE") == "postgresql"


def base_url():
    """The URL of the shared test cluster's database (started on first use)."""
    url = os.environ.get("BC_PG_URL")
    if url:
        return url
    if "url" not in _cluster:
        reason = pg_server.missing_reason()
        if reason:
            pytest.skip(reason)
        server = pg_server.temporary(fast=True).start()
        atexit.register(pg_server.remove, server)
        _cluster["url"] = server.url()
    return _cluster["url"]


def fresh_schema_url():
    """A URL whose connections see only a new, empty schema of the test cluster."""
    import psycopg
    url = base_url()
    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA %s" % name)
    options = quote("-c search_path=%s" % name, safe="")
    return url + ("&" if "?" in url else "?") + "options=" + options


def location(tmp_path):
    """settings for a head-end test: db (and db_key) on the store under test."""
    if postgres():
        key = str(tmp_path / "headend.key")
        # the CLI, run in-process or as a child, names the key file by this variable
        os.environ["BACKCHANNEL_DB_KEY"] = key
        return {"db": fresh_schema_url(), "db_key": key}
    return {"db": str(tmp_path / "headend.db")}


def sqlite_only(why):
    """Skip a test about SQLite's own files when the suite runs on PostgreSQL."""
    if postgres():
        pytest.skip("SQLite only: " + why)


def driver_errors():
    """The PostgreSQL driver's error classes, when it is installed (else none)."""
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.Error,)
