"""Online backup and restore on both stores (issue 19, item 5; headend/backup.py): a meter
keeps exchanging with a running head-end while `backchannel backup` runs; the backup,
restored into a new database and served by a new head-end, holds every reading the meter
had been acknowledged before the backup began, each once.

Real processes: `backchannel serve`, `backup` and `restore`, and for PostgreSQL a private
cluster (pg_server.py) with pg_dump and pg_restore."""

import threading

import httpx
import psycopg
import pytest
from headend_fake_meter import FakeMeter

from headend import pg_server
from lab import processes

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def cluster():
    reason = pg_server.missing_reason()
    if reason:
        pytest.skip(reason)
    server = pg_server.temporary(fast=True).start()
    yield server
    pg_server.remove(server)


def _locations(store, request, tmp_path):
    """(the running head-end's database, the one to restore into, the device-key file)."""
    if store == "sqlite":
        return str(tmp_path / "live" / "hub.db"), str(tmp_path / "back" / "hub.db"), None
    cluster = request.getfixturevalue("cluster")
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        for name in ("live_db", "back_db"):
            conn.execute("DROP DATABASE IF EXISTS %s" % name)
            conn.execute("CREATE DATABASE %s" % name)
    return cluster.url("live_db"), cluster.url("back_db"), tmp_path / "hub.key"


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_restore_holds_everything_acknowledged_before_the_backup(store, request, tmp_path):
    live_db, back_db, key = _locations(store, request, tmp_path)
    (tmp_path / "live").mkdir()
    (tmp_path / "back").mkdir()
    he = processes.Headend(tmp_path / "live", db=live_db, db_key=key)
    device_key = he.add_device("meter-a")
    token = he.add_token("alice", "operator")
    he.start(60)
    stop = threading.Event()
    acked = []                                   # seqs acknowledged, in order
    meter = FakeMeter(httpx.Client(base_url=he.url, timeout=30), "meter-a", device_key)

    def report():
        while not stop.wait(0.05):               # a few hundred readings in all
            meter.reading()
            pending = {i["seq"] for i in meter.outbox}
            meter.exchange()
            acked.extend(sorted(pending - {i["seq"] for i in meter.outbox}))

    t = threading.Thread(target=report, daemon=True)
    restored = None
    try:
        t.start()
        processes.wait_until(lambda: len(acked) >= 20, 60, "20 acknowledged readings")
        before = set(acked)                      # acknowledged before the backup began
        out = tmp_path / "hub.backup"
        written = he.cli("backup", "--db", live_db, "--out", str(out))
        assert str(out) in written.split()
        processes.wait_until(lambda: len(acked) >= len(before) + 5, 60,
                             "readings acknowledged during and after the backup")
        stop.set()
        t.join(30)
        he.kill()
        he.cli("restore", "--db", back_db, "--from", str(out))
        restored = processes.Headend(tmp_path / "back", db=back_db, db_key=key).start(60)
        api = restored.api(token)
        rows = api.get("/v1/devices/meter-a/readings?limit=1000").json()
        assert len(rows) < 1000, "more readings than one page"
        seqs = [r["seq"] for r in rows]
        assert len(seqs) == len(set(seqs)), "a reading twice"
        assert before <= set(seqs), sorted(before - set(seqs))[:10]
        # and the restored head-end goes on with the same meter: its next seq is acked
        meter.http = httpx.Client(base_url=restored.url, timeout=30)
        seq = meter.reading()
        assert meter.exchange()["ack"] >= seq
    finally:
        stop.set()
        he.kill()
        if restored is not None:
            restored.kill()


def test_restore_refuses_an_existing_sqlite_file(tmp_path):
    he = processes.Headend(tmp_path)
    he.add_device("meter-a")
    he.cli("backup", "--db", he.db, "--out", str(tmp_path / "b"))
    with pytest.raises(RuntimeError, match="exists: restore into a new file"):
        he.cli("restore", "--db", he.db, "--from", str(tmp_path / "b"))
