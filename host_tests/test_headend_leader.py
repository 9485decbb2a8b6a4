"""Leader election for the fleet-wide timers on PostgreSQL (issue 19, headend/leader.py):
one leader at a time, takeover when it dies or stops past its lease, and a fencing token
that keeps a stale leader from writing (split brain). Real PostgreSQL, several sessions as
several processes would hold them."""

import secrets
import time

import psycopg
import pytest

from headend import datastore, leader, pg_server

pytestmark = pytest.mark.system      # real PostgreSQL clusters: the system lane


@pytest.fixture(scope="module")
def cluster():
    reason = pg_server.missing_reason()
    if reason:
        pytest.skip(reason)
    server = pg_server.temporary(fast=True).start()
    yield server
    pg_server.remove(server)


@pytest.fixture
def db(cluster, tmp_path):
    name = "l_" + secrets.token_hex(5)
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE %s" % name)
    store = datastore.open_store(cluster.url(name), str(tmp_path / "k"))
    yield store
    store.close()


def leads_within(who, seconds=5.0):
    """Tries as a sweep tick would (a session ends a moment after its process does)."""
    deadline = time.monotonic() + seconds
    while not who.lead():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def fenced_write(store, who, value):
    """A leader's write: fenced, then one row."""
    with store.tx():
        who.fence(store)
        store.run("INSERT INTO groups(name, created) VALUES (?, 0)", value)


def test_one_leader_and_takeover_when_it_dies(db):
    a, b = leader.PgLeader(db, "sweep", 10), leader.PgLeader(db, "sweep", 10)
    assert a.lead() and not b.lead() and a.lead()
    first = a.token
    a.close()                                   # its process died: the session ends
    assert leads_within(b) and b.token == first + 1
    assert not a.lead()                         # back, it finds the lock taken
    b.close()


def test_a_leader_stopped_past_its_lease_is_replaced_and_fenced(db):
    a, b = leader.PgLeader(db, "sweep", 1.0), leader.PgLeader(db, "sweep", 1.0)
    assert a.lead()
    fenced_write(db, a, "by-a-1")
    time.sleep(2.5)                             # A is stopped: it renews nothing
    assert leads_within(b), "B never took over"
    assert b.token == a.token + 1
    # A resumes, still believing it leads: its write is refused in its own transaction
    with pytest.raises(leader.NotLeader):
        fenced_write(db, a, "by-a-2")
    fenced_write(db, b, "by-b")
    names = [r["name"] for r in db.all("SELECT name FROM groups ORDER BY name")]
    assert names == ["by-a-1", "by-b"]
    assert not a.lead()                         # and it steps down for good
    a.close()
    b.close()


def test_a_new_leaders_token_waits_for_the_old_leaders_open_write(db, cluster):
    """The fence holds the token row: a takeover cannot slip between A's check and its
    commit (A's session killed from outside, as a lease expiry would)."""
    a, b = leader.PgLeader(db, "sweep", 10), leader.PgLeader(db, "sweep", 10)
    assert a.lead()
    with psycopg.connect(db.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (a.conn.info.backend_pid,))
        with db.tx():
            a.fence(db)                          # the row is held FOR SHARE until COMMIT
            admin.execute("SET statement_timeout = 500")
            with pytest.raises(psycopg.errors.QueryCanceled):
                admin.execute("UPDATE leases SET token = token + 1 WHERE name = 'sweep'")
    assert leads_within(b) and b.token == a.token + 1
    a.close()
    b.close()


def test_fleets_in_two_schemas_of_one_database_each_have_a_leader(cluster, tmp_path):
    """Advisory locks are per database: a lock key without the schema let one fleet's leader
    starve every other schema's sweep (work never expired; seen in the postgresql lane)."""
    stores = []
    for n in range(2):
        schema = "s_" + secrets.token_hex(5)
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE SCHEMA %s" % schema)
        url = cluster.url() + ("&" if "?" in cluster.url() else "?") + \
            "options=-c%20search_path%3D" + schema
        stores.append(datastore.open_store(url, str(tmp_path / ("k%d" % n))))
    a, b = (leader.PgLeader(s, "sweep", 10) for s in stores)
    a2 = leader.PgLeader(stores[0], "sweep", 10)
    try:
        assert a.lead() and b.lead(), "each schema's fleet elects its own leader"
        assert not a2.lead(), "still one leader per fleet"
    finally:
        for who in (a, b, a2):
            who.close()
        for s in stores:
            s.close()
