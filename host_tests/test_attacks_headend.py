"""Attacks on the head-end, written as an attacker would try them (issue 12, head-end side;
docs/security.md "Threats"): device ids that smuggle a second broker password, device
registration with an operator token, malformed and non-ASCII signatures, telling unknown
devices from bad signatures, a request body trickled a byte at a time, secrets left readable
by other users, and plain HTTP served to the network."""

import json
import os
import socket
import sqlite3
import stat
import threading
import time

import httpx
import pytest
import store_harness
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter, hmac_hex
from headend_harness import GuardedServer, Headend

from headend import broker, devices, exchange, release_keys, server
from headend.cli import main
from headend.db import Database

pytestmark = pytest.mark.unit

PROTOCOLS = ["h11"] + (["httptools"] if server.GuardedHttpTools is not None else [])

# ids an attacker with a registering token tries: `meter-a:hunter2` became a second
# `meter-a:<password>` line in mosquitto_passwd's input (split at the first `:`)
HOSTILE_IDS = ["meter-a:hunter2", "meter-a\nmeter-b:x", "meter-a\n", "Meter-A", "METER-A",
               "meter a", "-meter", ".meter", "_meter", "", "m" * 65, "meter/a", "meter+a",
               "meter#", "bc/#", "m\u00e8ter", "meter-a\x00", "meter-a\r"]
GOOD_IDS = ["m", "meter-a", "a.b_c-d", "0" * 64, "sim-meter-1"]


@pytest.fixture
def he(tmp_path):
    return Headend(tmp_path)


@pytest.fixture
def client(he):
    with TestClient(he.app) as c:
        yield c


def auth(token):
    return {"Authorization": "Bearer %s" % token}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# --- device ids and who may register ---

def test_hostile_device_ids_are_refused_by_the_api_and_the_database(he, client):
    for bad in HOSTILE_IDS:
        r = client.post("/v1/devices", headers=auth(he.admin_token), json={"id": bad})
        assert r.status_code == 422 and r.json()["error"], (bad, r.status_code, r.text)
        with pytest.raises(ValueError, match="device id must be"):
            devices.create(he.hub.db, bad)
    assert he.count("devices") == 0
    for good in GOOD_IDS:
        r = client.post("/v1/devices", headers=auth(he.admin_token), json={"id": good})
        assert r.status_code == 201, (good, r.text)


def test_cli_add_device_refuses_a_colon_id(tmp_path, capsys):
    db = str(tmp_path / "hub.db")
    with pytest.raises(SystemExit) as e:
        main(["add-device", "meter-a:hunter2", "--db", db])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("backchannel: error: device id must be") and "hunter2" in err
    assert Database(db).one("SELECT COUNT(*) AS n FROM devices")["n"] == 0


def test_broker_write_refuses_a_colon_id_already_in_the_database(tmp_path):
    """An id that got into the database another way (an old file, a hand edit) must not
    reach mosquitto_passwd, where it would add a second password for meter-a."""
    db = Database(str(tmp_path / "hub.db"))
    devices.create(db, "meter-a")
    db.run("INSERT INTO devices(id, key, created, poll) VALUES (?, ?, ?, 0)",
           "meter-a:hunter2", "ab" * 32, time.time())
    with pytest.raises(ValueError, match="device id must be.*meter-a:hunter2"):
        broker.write(db, tmp_path / "broker")
    assert not (tmp_path / "broker" / broker.PASSWD).exists()
    assert not (tmp_path / "broker" / broker.ACL).exists()


def test_broker_plain_listener_stays_on_loopback(tmp_path):
    db = Database(str(tmp_path / "hub.db"))
    for bind in ("0.0.0.0", "::", "10.0.0.1", "meters.example"):
        with pytest.raises(ValueError, match="plain listener must bind a loopback"):
            broker.write(db, tmp_path / "broker", bind=bind)
    assert not (tmp_path / "broker" / broker.CONF).exists()
    conf = broker.conf_text(tmp_path / "broker", tls_port=8883, certfile="c", keyfile="k")
    # a listener option: under each listener (before the first, it would open mosquitto's
    # default listener on every address)
    assert "\nlistener 1883 127.0.0.1\nuse_username_as_clientid true\n" in conf
    assert "\nlistener 8883\nuse_username_as_clientid true\n" in conf
    assert conf.count("use_username_as_clientid") == 2


def test_registering_devices_needs_an_admin_or_utility_token(he, client):
    r = client.post("/v1/devices", headers=auth(he.op_token), json={"id": "meter-x"})
    assert r.status_code == 403
    assert r.json() == {"error": "registering devices requires an admin or utility token"}
    assert client.post("/v1/devices", json={"id": "meter-x"}).status_code == 401
    assert he.count("devices") == 0
    for token, name in ((he.admin_token, "meter-a"), (he.util_token, "meter-u")):
        assert client.post("/v1/devices", headers=auth(token),
                           json={"id": name}).status_code == 201
    # an admin's work reaches the meter as an operator's, never as a utility's
    r = client.post("/v1/devices/meter-a/work", headers=auth(he.admin_token),
                    json={"op": "read"})
    assert r.status_code == 202 and r.json()["role"] == "operator"
    r = client.post("/v1/devices/meter-a/work", headers=auth(he.admin_token),
                    json={"op": "reset_energy"})
    assert r.status_code == 403


# --- signatures: malformed ones, and what an unknown device learns ---

def _signed_body(meter):
    meter.reading()
    return json.dumps(meter.envelope()).encode()


MALFORMED = [b"\xc3\xa9" * 32, b"\xff" * 64, "é".encode("latin-1") * 64, b"0" * 63,
             b"0" * 65, b"0" * 128, b"zz" * 32, b"0x" + b"0" * 62, b" ", b"\xef\xbb\xbf" +
             b"0" * 64]


def test_malformed_signatures_get_401_never_500(he, client):
    m = he.meter(client, "meter-a")
    raw = _signed_body(m)
    for sig in MALFORMED:
        r = client.post("/v1/exchange", content=raw,
                        headers=[(b"content-type", b"application/json"),
                                 (b"x-bc-signature", sig)])
        assert r.status_code == 401, (sig, r.status_code, r.text)
        assert r.json()["error"] in (exchange.MALFORMED, "missing signature"), r.text
    # over MQTT the bridge hands the same core the 64 bytes before the space, as latin-1
    for sig in ("\u00ff" * 64, "\u00e9" * 64, "g" * 64):
        with pytest.raises(exchange.Refused) as e:
            exchange.authenticate(he.hub, raw, sig, topic_device="meter-a")
        assert e.value.status == 401 and e.value.reason == exchange.MALFORMED
    assert he.count("nonces") == 0 and he.count("items") == 0
    assert m.post(json.loads(raw), raw=raw).status_code == 200


@pytest.mark.parametrize("http", PROTOCOLS)
def test_non_ascii_signature_bytes_on_a_real_server(he, http):
    raw = _signed_body(he.meter(None, "meter-a"))
    with GuardedServer(he.app, http=http) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST /v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nX-BC-Signature: " + b"\xc3\xa9" * 32 + b"\r\nContent-Length: %d\r\n"
                  b"\r\n" % len(raw) + raw)
        reply = b""
        while b"}" not in reply:        # headers and the JSON body may come apart
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
        s.close()
    assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
    assert exchange.MALFORMED.encode() in reply


def test_unknown_device_and_bad_signature_answer_alike(he, client):
    """An attacker probing ids: a made-up id signed with a made-up key, and a real id
    signed with a wrong key, get byte-identical answers (status, headers, body)."""
    he.meter(client, "meter-a")
    answers = []
    for device in ("meter-a", "meter-ghost"):
        probe = FakeMeter(client, device, "cd" * 32)
        raw = _signed_body(probe)
        r = probe.post(None, raw=raw)
        answers.append((r.status_code, sorted(r.headers.items()), r.content))
        with pytest.raises(exchange.Refused) as e:      # the MQTT core says the same
            exchange.authenticate(he.hub, raw, hmac_hex(probe.key, raw), topic_device=device)
        answers[-1] += ((e.value.status, e.value.reason),)
    assert answers[0] == answers[1]
    assert answers[0][0] == 401 and json.loads(answers[0][2]) == {"error": exchange.DENIED}


# --- a request body trickled a byte at a time ---

def trickle(port, declared=262144, interval=0.05, limit=8.0):
    """Headers declaring `declared` body bytes, then one byte every `interval` seconds
    until the server closes (or `limit`). Returns (closed, seconds, bytes received)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/exchange HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-BC-Signature: " + b"0" * 64 + b"\r\nContent-Length: %d\r\n\r\n{" % declared)
    s.settimeout(interval)
    start, got = time.monotonic(), b""
    try:
        while time.monotonic() - start < limit:
            try:
                chunk = s.recv(4096)
                if not chunk:
                    return True, time.monotonic() - start, got
                got += chunk
            except TimeoutError:
                pass
            try:
                s.send(b" ")
            except OSError:
                return True, time.monotonic() - start, got
        return False, time.monotonic() - start, got
    finally:
        s.close()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_trickled_body_is_cut_at_the_deadline(he, http):
    body_timeout = 1.5
    with GuardedServer(he.app, http=http, header_timeout=0.5,
                       body_timeout=body_timeout) as srv, \
            httpx.Client(base_url=srv.url, timeout=10) as c:
        m = he.meter(c, "meter-a")
        waited = []
        # meanwhile a real meter's long-poll outlasts the body deadline: its request is
        # complete, so it is not cut
        poll = threading.Thread(target=lambda: waited.append(_timed(m.exchange, wait=2.0)))
        poll.start()
        closed, seconds, got = trickle(srv.port)
        poll.join(10)
    assert closed, "a trickled body held its connection for %.1f s" % seconds
    assert body_timeout - 0.3 < seconds < body_timeout + 1.5, seconds
    assert got == b"", "answered before the body was complete: %r" % got[:80]
    assert he.count("nonces") == 1                      # the long-poll's alone
    assert waited and waited[0] > 1.8, waited


def _timed(fn, **kw):
    t0 = time.monotonic()
    fn(**kw)
    return time.monotonic() - t0


# --- secrets on disk ---

def test_database_and_its_wal_are_private(tmp_path):
    store_harness.sqlite_only("the file modes of the database, its WAL and shm")
    old = os.umask(0o022)           # a common default: files would be 0644
    try:
        he = Headend(tmp_path)
        devices.create(he.hub.db, "meter-a")
        db = he.settings.db
        for path in (db, db + "-wal", db + "-shm"):
            assert mode(path) == 0o600, (path, oct(mode(path)))
        # a database made before this rule, left 0644 with its WAL, is narrowed on open
        legacy = str(tmp_path / "legacy.db")
        conn = sqlite3.connect(legacy)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t(x)")
        for path in (legacy, legacy + "-wal", legacy + "-shm"):
            os.chmod(path, 0o644)
        Database(legacy)
        for path in (legacy, legacy + "-wal", legacy + "-shm"):
            assert mode(path) == 0o600, (path, oct(mode(path)))
        conn.close()
        # the CLI's admin commands create the database the same way
        cli_db = str(tmp_path / "cli.db")
        with pytest.raises(SystemExit):
            main(["add-token", "ada", "--role", "admin", "--db", cli_db])
        assert mode(cli_db) == 0o600
        priv, _ = release_keys.keygen(str(tmp_path / "keys"))
        assert mode(priv) == 0o600
    finally:
        os.umask(old)


# --- plain HTTP to the network ---

def _serve(tmp_path, capsys, monkeypatch, *args):
    """`backchannel serve ARGS` up to the point where it would listen: (exit code, stderr,
    the hosts server.run was called with)."""
    hosts = []
    monkeypatch.setattr(server, "run", lambda app, host, *a, **k: hosts.append(host))
    with pytest.raises(SystemExit) as e:
        main(["serve", "--db", str(tmp_path / "serve.db"), *args])
    return e.value.code, capsys.readouterr().err, hosts


def test_serve_refuses_plain_http_beyond_loopback(tmp_path, capsys, monkeypatch):
    for host in ("0.0.0.0", "::", "192.0.2.10", "headend.example"):
        rc, err, hosts = _serve(tmp_path, capsys, monkeypatch, "--host", host)
        assert rc == 1 and hosts == [], (host, err)
        assert err.startswith("backchannel: error: refusing plain HTTP on %s" % host)
        assert err.count("\n") == 1
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        rc, err, hosts = _serve(tmp_path, capsys, monkeypatch, "--host", host)
        assert rc == 0 and hosts == [host] and "warning" not in err, (host, err)
    rc, err, hosts = _serve(tmp_path, capsys, monkeypatch, "--host", "0.0.0.0",
                            "--insecure-http")
    assert rc == 0 and hosts == ["0.0.0.0"]
    assert "warning: plain HTTP on 0.0.0.0 (--insecure-http)" in err


def test_serve_warns_about_a_token_file_others_can_read(tmp_path, capsys, monkeypatch):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([{"name": "ops", "role": "admin",
                                   "token": "file-token-0123456789"}]))
    os.chmod(tokens, 0o644)
    rc, err, _ = _serve(tmp_path, capsys, monkeypatch, "--token-file", str(tokens))
    assert rc == 0 and "is readable by other users" in err
    os.chmod(tokens, 0o600)
    rc, err, _ = _serve(tmp_path, capsys, monkeypatch, "--token-file", str(tokens))
    assert rc == 0 and "readable" not in err
