"""Idempotency-Key on work POSTs: a retry returns the original work and queues nothing, a
different request with the same key is refused, keys are per operator and kept 24 h, and a
head-end killed between COMMIT and the 202 answers the retry with the committed work."""

import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from headend_harness import ROOT, Api, client, headend, http, op, server  # noqa: F401
from test_headend_crash import admin, free_port, start

from headend import devices  # noqa: E402
from headend.client import Client, CliError  # noqa: E402

pytestmark = pytest.mark.system

KEY = "k-0001"
CRASHER = ROOT / "host_tests" / "headend_crash_after_commit.py"


def post(api, path, body, key=None):
    hdr = dict(api.headers, **({"Idempotency-Key": key} if key is not None else {}))
    return api.http.post(path, json=body, headers=hdr)


def test_retry_returns_the_same_work_once(client, headend, op):
    headend.meter(client, "meter-a")
    body = {"op": "read", "args": {}, "expires_in": 600}
    first = post(op, "/v1/devices/meter-a/work", body, KEY)
    again = post(op, "/v1/devices/meter-a/work", body, KEY)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert headend.count("work") == 1
    op.work("meter-a", "read")                       # without a key: queued every time
    op.work("meter-a", "read")
    assert headend.count("work") == 3


def test_same_key_different_request_is_refused(client, headend, op):
    headend.meter(client, "meter-a")
    headend.meter(client, "meter-b")
    assert post(op, "/v1/devices/meter-a/work", {"op": "read"}, KEY).status_code == 202
    for path, body in (("/v1/devices/meter-a/work", {"op": "get_config"}),
                       ("/v1/devices/meter-a/work", {"op": "read", "expires_in": 60}),
                       ("/v1/devices/meter-b/work", {"op": "read"})):
        r = post(op, path, body, KEY)
        assert r.status_code == 422, r.text
        assert "already used for a different request" in r.json()["error"]
    assert headend.count("work") == 1


def test_keys_are_per_operator_and_checked(client, headend, op):
    headend.meter(client, "meter-a")
    other = Api(client, devices.add_token(headend.hub.db, "bob", "operator"))
    a = post(op, "/v1/devices/meter-a/work", {"op": "read"}, KEY)
    b = post(other, "/v1/devices/meter-a/work", {"op": "read"}, KEY)
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]
    for bad in ("", "x" * 65, "has space", "caf\u00e9"):
        r = post(op, "/v1/devices/meter-a/work", {"op": "read"}, bad.encode())
        assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"], (bad, r.text)
    r = post(op, "/v1/devices/meter-a/work", {"op": "read"}, "~" * 64)
    assert r.status_code == 202
    assert headend.count("work") == 3


def test_keys_are_forgotten_after_a_day(client, headend, op, monkeypatch):
    headend.meter(client, "meter-a")
    first = post(op, "/v1/devices/meter-a/work", {"op": "read"}, KEY).json()["id"]
    t = headend.hub.now()
    monkeypatch.setattr(headend.hub, "now", lambda: t + 86399)
    assert post(op, "/v1/devices/meter-a/work", {"op": "read"}, KEY).json()["id"] == first
    monkeypatch.setattr(headend.hub, "now", lambda: t + 86401)
    post(op, "/v1/devices/meter-a/work", {"op": "read"}, "other")    # prunes old keys
    assert headend.hub.db.one("SELECT COUNT(*) AS n FROM idempotency")["n"] == 1
    assert post(op, "/v1/devices/meter-a/work", {"op": "read"}, KEY).json()["id"] != first


def test_group_command_retry(client, headend, op):
    for m in ("m1", "m2", "m3"):
        headend.meter(client, m)
    r = op.post("/v1/groups", json={"name": "g", "members": ["m1", "m2", "m3"]})
    assert r.status_code == 201
    body = {"op": "read", "when_available": True}
    first = post(op, "/v1/groups/g/work", body, KEY)
    again = post(op, "/v1/groups/g/work", body, KEY)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert headend.count("work") == 3
    r = post(op, "/v1/groups/g/work", {"op": "get_config"}, KEY)
    assert r.status_code == 422 and headend.count("work") == 3


class LoseFirstReply(httpx.HTTPTransport):
    """The first request reaches the server, its reply is lost (connection dropped)."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def handle_request(self, request):
        self.keys.append(request.headers.get("idempotency-key"))
        response = super().handle_request(request)
        if len(self.keys) == 1:
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return response


def test_client_retries_a_lost_reply_with_the_same_key(headend, server, monkeypatch):
    import headend.client as client_mod
    monkeypatch.setattr(client_mod, "RETRY_PAUSE_S", 0)
    devices.create(headend.hub.db, "meter-a", poll=60)
    c = Client(server.url, headend.op_token)
    lossy = LoseFirstReply()
    c.http = httpx.Client(base_url=server.url, transport=lossy, headers=c.http.headers)
    work = c.post("/v1/devices/meter-a/work", {"op": "read"})
    assert len(lossy.keys) == 2 and lossy.keys[0] == lossy.keys[1] and len(lossy.keys[0]) == 32
    assert headend.count("work") == 1
    assert work["id"] == "w-%08d" % headend.hub.db.one("SELECT num FROM work")["num"]
    c.post("/v1/devices/meter-a/work", {"op": "read"})         # a new command: a new key
    assert len(set(lossy.keys)) == 2 and headend.count("work") == 2
    down = Client("http://127.0.0.1:%d" % free_port(), headend.op_token)
    with pytest.raises(CliError, match="cannot connect"):
        down.post("/v1/devices/meter-a/work", {"op": "read"})


def test_kill_9_between_commit_and_reply(tmp_path):
    db = str(tmp_path / "crash.db")
    admin("add-device", "meter-a", "--db", db)
    token = admin("add-token", "alice", "--role", "operator", "--db", db)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(CRASHER), "serve", "--db", db, "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = "http://127.0.0.1:%d" % port
    auth = {"Authorization": "Bearer " + token}
    body = {"op": "read", "args": {}, "expires_in": 600}
    try:
        for _ in range(400):
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                httpx.get(url + "/v1/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        with pytest.raises(httpx.TransportError):     # no reply: the process died first
            httpx.post(url + "/v1/devices/meter-a/work", json=body, timeout=10,
                       headers=dict(auth, **{"Idempotency-Key": "crash-1"}))
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
    with sqlite3.connect(db) as con:                  # the work was committed
        committed = [n for (n,) in con.execute("SELECT num FROM work")]
    assert len(committed) == 1

    proc, url = start(db)
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=10) as c:
            r = c.post("/v1/devices/meter-a/work", json=body,
                       headers={"Idempotency-Key": "crash-1"})
            assert r.status_code == 202 and r.headers["idempotent-replayed"] == "true"
            assert r.json()["id"] == "w-%08d" % committed[0]
            r = c.post("/v1/devices/meter-a/work", json={"op": "get_config"},
                       headers={"Idempotency-Key": "crash-1"})
            assert r.status_code == 422
            assert len(c.get("/v1/devices/meter-a/work").json()) == 1
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
