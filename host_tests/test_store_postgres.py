"""PostgreSQL as the head-end's store (issue 19): what only that store has. The rest of the
head-end's tests run on it too (`--store=postgresql`, the postgresql lane of make test).

A cluster of this module's own (headend/pg_server.py), since one test stops and restarts it:
an exchange while the database is down gets 503 with Retry-After and nothing is
acknowledged; the meter's retry after the restart stores its items once."""

import secrets
import subprocess
import threading
import time

import pytest
from fastapi.testclient import TestClient
from headend_fake_meter import ExchangeError, FakeMeter
from headend_harness import FAST

from headend import datastore, devices, dialect, pg_server, schema, sealed
from headend.cli import main
from headend.settings import Settings
from headend.webapp import create_app

pytestmark = pytest.mark.system      # real PostgreSQL clusters: the system lane


def test_placeholders_are_rewritten_outside_quoted_text_only():
    pg = dialect.Postgres()
    sql = "SELECT '?%', \"a?\" FROM work INDEXED BY work_dev WHERE k LIKE 'enc1:%' AND x = ?"
    assert pg.sql(sql) == ("SELECT '?%%', \"a?\" FROM work WHERE k LIKE 'enc1:%%' AND x = %s")
    assert pg.sql("SELECT 1 FROM t WHERE k LIKE 'a%'", False) == \
        "SELECT 1 FROM t WHERE k LIKE 'a%'"
    assert "DOUBLE PRECISION" in pg.ddl("t REAL") and "BIGINT" in pg.ddl("n INTEGER")


@pytest.fixture(scope="module")
def cluster():
    reason = pg_server.missing_reason()
    if reason:
        pytest.skip(reason)
    server = pg_server.temporary(fast=True).start()
    yield server
    pg_server.remove(server)


def fresh(cluster):
    """A new database in the cluster; its URL."""
    name = "d_" + secrets.token_hex(5)
    import psycopg
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE %s" % name)
    return cluster.url(name)


def app_on(url, tmp_path):
    return create_app(Settings(db=url, db_key=str(tmp_path / "hub.key"), **FAST))


def test_processes_starting_together_migrate_once(cluster):
    url = fresh(cluster)
    opened, errors = [], []

    def open_one():
        try:
            opened.append(datastore.open_store(url))
        except Exception as e:     # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 4
    rows = opened[0].all("SELECT version, name FROM schema_version ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == [(v, n) for v, n, _ in schema.STEPS]
    assert schema.migrate(opened[0]) == schema.LATEST          # again: nothing to do
    assert len(opened[0].all("SELECT version FROM schema_version")) == len(schema.STEPS)
    for db in opened:
        db.close()


def test_times_and_ids_keep_their_precision(cluster, tmp_path):
    """REAL is float4 on PostgreSQL: the schema must say double precision, or a Unix time
    would be rounded to 128 s (and work ids past 2^31 would not fit INTEGER)."""
    db = datastore.open_store(fresh(cluster), str(tmp_path / "k"))
    now = 1796000000.123456
    db.run("INSERT INTO devices(id, key, created, poll) VALUES (?, ?, ?, 0)", "m", "x", now)
    assert db.one("SELECT created FROM devices WHERE id = ?", "m")["created"] == now
    num = db.insert("INSERT INTO work(num, device, op, args, role, origin, created, expires, "
                    "status) VALUES (?, 'm', 'read', '{}', 'operator', 'o', 0, 0, 'queued')",
                    2**40, key="num")
    assert num == 2**40
    db.close()


def test_a_dump_of_the_database_holds_no_device_key(cluster, tmp_path):
    url = fresh(cluster)
    with TestClient(app_on(url, tmp_path)) as client:
        hub = client.app.state.hub
        key = devices.create(hub.db, "meter-a")
        FakeMeter(client, "meter-a", key).exchange()        # the sealed key works
    dump = subprocess.run([pg_server.bindir() + "/pg_dump", url], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    assert "meter-a" in dump and sealed.PREFIX in dump
    assert key not in dump


def test_sealed_keys_without_their_key_file_do_not_open(cluster, tmp_path, capsys):
    url = fresh(cluster)
    db = datastore.open_store(url, str(tmp_path / "hub.key"))
    devices.create(db, "meter-a")
    db.close()
    with pytest.raises(sealed.MissingKeyFile, match="which is missing"):
        datastore.open_store(url, str(tmp_path / "elsewhere.key"))
    with pytest.raises(SystemExit) as e:                 # the key file is required
        main(["serve", "--port", "0", "--db", url])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "--db-key" in err and "Traceback" not in err, err


def test_text_with_a_nul_is_refused_not_a_server_error(cluster, tmp_path):
    with TestClient(app_on(fresh(cluster), tmp_path)) as client:
        hub = client.app.state.hub
        token = devices.add_token(hub.db, "ada", "admin")
        r = client.post("/v1/groups", json={"name": "g", "members": ["a\u0000b"]},
                        headers={"Authorization": "Bearer %s" % token})
        assert r.status_code == 400 and "NUL" in r.json()["error"]
        meter = FakeMeter(client, "m\u0000", "00" * 32)
        assert meter.post(meter.envelope()).status_code == 400


def test_database_down_answers_503_and_acknowledges_nothing(cluster, tmp_path):
    url = fresh(cluster)
    with TestClient(app_on(url, tmp_path)) as client:
        hub = client.app.state.hub
        token = devices.add_token(hub.db, "ada", "admin")
        meter = FakeMeter(client, "meter-a", devices.create(hub.db, "meter-a"))
        meter.reading()
        assert meter.exchange()["ack"] == 1
        meter.reading()
        meter.reading()
        cluster.stop("fast")
        try:
            with pytest.raises(ExchangeError) as e:
                meter.exchange()
            r = e.value.response
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
            assert [i["seq"] for i in meter.outbox] == [2, 3]     # nothing acknowledged
            api = client.get("/v1/devices", headers={"Authorization": "Bearer %s" % token})
            assert api.status_code == 503 and "retry-after" in api.headers
        finally:
            cluster.start()
        deadline = time.monotonic() + 10
        while True:                                  # the first call may find it starting
            try:
                body = meter.exchange()
                break
            except ExchangeError as e:
                assert e.response.status_code == 503
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert body["ack"] == 3 and meter.outbox == []
        rows = hub.db.all("SELECT seq FROM items WHERE device = 'meter-a' ORDER BY seq")
        assert [r["seq"] for r in rows] == [1, 2, 3]


def test_a_round_trip_in_flight_does_not_hold_the_event_loop(cluster, tmp_path):
    """The exchange's statements run in worker threads (pg_store.OFF_LOOP): while one waits
    for the server (here on a row lock another connection holds), the event loop still
    answers the load balancer's health check; the exchange then completes and stores its
    item. With the statements on the loop, the health check waits for the lock too."""
    import psycopg
    url = fresh(cluster)
    with TestClient(app_on(url, tmp_path)) as client:
        hub = client.app.state.hub
        meter = FakeMeter(client, "meter-a", devices.create(hub.db, "meter-a"))
        meter.reading()
        holder = psycopg.connect(url)                   # a transaction holding the row
        holder.execute("SELECT 1 FROM devices WHERE id = 'meter-a' FOR UPDATE")
        answers = {}
        exchange = threading.Thread(target=lambda: answers.update(ex=meter.exchange()))
        exchange.start()
        health = None
        try:
            with psycopg.connect(url, autocommit=True) as watch:
                deadline = time.monotonic() + 60
                while not watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                        "'Lock' AND datname = current_database()").fetchone()[0]:
                    assert time.monotonic() < deadline, "the exchange never waited on the lock"
                    time.sleep(0.05)
            health = threading.Thread(
                target=lambda: answers.update(health=client.get("/v1/health").status_code))
            health.start()
            health.join(60)
            assert answers.get("health") == 200, "the health check waited for the lock"
            assert exchange.is_alive() and "ex" not in answers   # still waiting on it
        finally:
            holder.rollback()
            holder.close()
            exchange.join(60)
            if health is not None:
                health.join(60)
        assert answers["ex"]["ack"] == 1
        rows = hub.db.all("SELECT seq FROM items WHERE device = 'meter-a'")
        assert [r["seq"] for r in rows] == [1]
