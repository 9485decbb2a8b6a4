"""Device keys at rest, attacked as someone holding a copy of the head-end's database would
(issue 12, "Device keys are encrypted at rest in the head-end's store, under a key that is not
in the database"): a backup or snapshot of hub.db and its WAL, an older database whose keys
were stored plain, a sealed key moved to another meter's row, a database without its key
file."""

import os
import shutil
import sqlite3
import stat

import pytest
import store_harness
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter
from headend_harness import Headend

from headend import devices, sealed
from headend.cli import main
from headend.db import Database

pytestmark = pytest.mark.unit


def disk_bytes(db_path):
    out = b""
    for p in (db_path, db_path + "-wal", db_path + "-shm"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                out += f.read()
    return out


def test_a_copy_of_the_database_holds_no_device_key(tmp_path, capsys):
    store_harness.sqlite_only("the bytes of the file (test_store_postgres.py dumps the database)")
    he = Headend(tmp_path)
    with TestClient(he.app) as client:
        r = client.post("/v1/devices", json={"id": "meter-a"},
                        headers=he.auth(he.admin_token))
        key_api = r.json()["key"]
        with pytest.raises(SystemExit):
            main(["add-device", "meter-b", "--db", he.settings.db])
        key_cli = capsys.readouterr().out.strip()
        meter = FakeMeter(client, "meter-a", key_api)
        meter.exchange()                                    # the sealed key still works
    raw = disk_bytes(he.settings.db)
    for key in (key_api, key_cli):
        assert key.encode() not in raw and bytes.fromhex(key) not in raw
    rows = sqlite3.connect(he.settings.db).execute("SELECT key FROM devices").fetchall()
    assert all(k.startswith(sealed.PREFIX) for (k,) in rows)
    key_file = he.settings.db + ".key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with open(key_file, "rb") as f:
        assert f.read() not in raw


def test_a_database_copied_without_its_key_file_refuses_to_open(tmp_path, capsys):
    store_harness.sqlite_only("a copy of the file (test_store_postgres.py: a missing key file)")
    he = Headend(tmp_path)
    devices.create(he.hub.db, "meter-a")
    he.hub.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    shutil.copy(he.settings.db, stolen / "hub.db")
    with pytest.raises(sealed.MissingKeyFile, match="sealed with .*hub.db.key, which is missing"):
        Database(str(stolen / "hub.db"))
    for args in (["add-device", "meter-x"], ["serve", "--port", "0"],
                 ["broker-config", "--dir", str(stolen / "broker"), "--no-reload"]):
        with pytest.raises(SystemExit) as e:
            main(args + ["--db", str(stolen / "hub.db")])
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "which is missing" in err, err
    assert not (stolen / "hub.db.key").exists(), "a fresh key would hide the loss"


def test_a_sealed_key_moved_to_another_meters_row_does_not_open(tmp_path):
    """The attacker owns meter-b (knows its key) and can write the database, not read the
    key file: copying meter-b's sealed key into meter-a's row does not let it be meter-a."""
    he = Headend(tmp_path)
    with TestClient(he.app) as client:
        key_b = devices.create(he.hub.db, "meter-b")
        devices.create(he.hub.db, "meter-a")
        sealed_b = he.hub.db.one("SELECT key FROM devices WHERE id = 'meter-b'")["key"]
        he.hub.db.run("UPDATE devices SET key = ? WHERE id = 'meter-a'", sealed_b)
        as_a = FakeMeter(client, "meter-a", key_b)
        r = as_a.post(as_a.envelope())
        assert r.status_code == 401
        assert r.json() == {"error": "unknown device or bad signature"}
        assert he.count("nonces", "meter-a") == 0


def test_an_older_database_with_plain_keys_is_sealed_and_scrubbed_on_open(tmp_path):
    path = str(tmp_path / "old.db")
    Database(path).close()
    os.remove(path + ".key")                   # as written before keys were sealed
    plain = "ab" * 32
    con = sqlite3.connect(path)
    con.execute("INSERT INTO devices(id, key, created, poll) VALUES ('meter-a', ?, 0, 0)",
                (plain,))
    con.commit()
    con.close()
    assert plain.encode() in disk_bytes(path)
    db = Database(path)
    assert plain.encode() not in disk_bytes(path)
    assert devices.get(db, "meter-a")["key"] == plain
    assert db.one("SELECT key FROM devices")["key"].startswith(sealed.PREFIX)


def test_a_key_file_left_readable_is_narrowed(tmp_path):
    path = str(tmp_path / "hub.db")
    Database(path).close()
    os.chmod(path + ".key", 0o644)
    Database(path).close()
    assert stat.S_IMODE(os.stat(path + ".key").st_mode) == 0o600


def test_a_damaged_key_file_is_a_clear_error(tmp_path, capsys):
    path = str(tmp_path / "hub.db")
    Database(path).close()
    with open(path + ".key", "w") as f:
        f.write("not hex\n")
    with pytest.raises(SystemExit):
        main(["add-device", "meter-a", "--db", path])
    err = capsys.readouterr().err
    assert "not a device-key file" in err and err.count("\n") == 1
