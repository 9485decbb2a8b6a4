"""The last step of a key rotation (docs/protocol.md "Key rotation", step 5) never holds up the
head-end: switching the broker's logins means writing its password file and, on a NATS
cluster, waiting until every running node has reloaded it (up to 10 s when a node is slow).
On SQLite the exchange runs on the event loop, where that wait stopped every other meter and
the API with it. A request under the new key is now promoted in a thread while the loop
serves: here the switch waits until a health check has been answered meanwhile."""

import contextlib
import hashlib
import hmac
import json
import threading

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from headend_fake_meter import ExchangeError
from headend_harness import Headend, Server

from headend import key_rotation

pytestmark = pytest.mark.unit


@contextlib.contextmanager
def _no_lock(directory):
    yield


class SlowSwitch:
    """key_rotation.login_files for a broker whose nodes take their time to reload: the
    rewrite returns once `release` is set (or after 10 s), and says which thread ran it."""

    def __init__(self, directory):
        self.directory = str(directory)
        self.entered, self.release = threading.Event(), threading.Event()
        self.threads, self.keys = [], []

    def files(self, settings):
        return self.directory, _no_lock, self.rewrite

    def rewrite(self, db, directory, keys):
        self.threads.append(threading.get_ident())
        self.keys.append(dict(keys))
        self.entered.set()
        self.release.wait(10)


def _answer_rotation(meter, work):
    """The meter's half of the ECDH (firmware/rekey.py): (new key hex, result body)."""
    args = work["args"]
    mine = ec.generate_private_key(ec.SECP256R1())
    head = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                        bytes.fromhex(args["pub"]))
    new = key_rotation.derive(mine.exchange(ec.ECDH(), head), meter.device, args["rid"]).hex()
    pub = mine.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex()
    return new, {"pub": pub}


def test_the_switch_to_the_new_key_runs_while_the_head_end_serves(tmp_path, monkeypatch):
    he = Headend(tmp_path)
    switch = SlowSwitch(tmp_path)
    with Server(he.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        meter = he.meter(http, "meter-r")
        meter.reading()
        meter.exchange()
        old = meter.key
        r = http.post("/v1/devices/meter-r/rotate-key", headers=he.auth(he.util_token))
        assert r.status_code == 202, r.text
        work = [w for w in meter.exchange()["work"] if w["op"] == "rotate_key"]
        assert len(work) == 1, meter.last
        new, body = _answer_rotation(meter, work[0])
        meter.result(work[0]["id"], "done", body)
        answer = meter.exchange()
        assert answer["rekey"]["check"] == key_rotation.check_value(new), answer

        monkeypatch.setattr(key_rotation, "login_files", switch.files)
        meter.key = new
        done = {}

        def exchange_under_the_new_key():
            try:
                done["answer"] = meter.exchange()
            except (ExchangeError, AssertionError, httpx.HTTPError) as e:
                done["error"] = e
        t = threading.Thread(target=exchange_under_the_new_key)
        t.start()
        try:
            assert switch.entered.wait(10), "the head-end never switched the logins"
            # the switch is waiting for its nodes: the head-end still answers meanwhile
            health = httpx.get(server.url + "/v1/health", timeout=5)
            assert health.status_code == 200
        finally:
            switch.release.set()
            t.join(20)
        assert "error" not in done, done
        assert done["answer"]["ack"] >= 1           # answered, under the new key (checked)
        assert switch.keys == [{"meter-r": new}]
        assert switch.threads[0] != server.thread.ident    # not on the event loop's thread
        # the old key stops; the new one goes on
        meter.key = old
        with pytest.raises(ExchangeError) as refused:
            meter.exchange()
        assert refused.value.response.status_code == 401
        meter.key = new
        meter.reading()
        assert meter.exchange()["ack"] >= 2
    audit = he.hub.db.all("SELECT action, outcome FROM audit WHERE target = ?",
                          "device:meter-r")
    assert any(a["action"] == "rotate_key" and a["outcome"] == "ok" for a in audit), \
        json.dumps([dict(a) for a in audit])


def test_a_switch_that_fails_keeps_both_keys_and_answers_under_the_old(tmp_path, monkeypatch):
    """The broker's logins cannot be written: the answer goes under the old key (the meter
    still holds it), and the next request under the new key tries again."""
    he = Headend(tmp_path)
    with Server(he.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        meter = he.meter(http, "meter-f")
        meter.exchange()
        old = meter.key
        assert http.post("/v1/devices/meter-f/rotate-key",
                         headers=he.auth(he.util_token)).status_code == 202
        work = [w for w in meter.exchange()["work"] if w["op"] == "rotate_key"]
        new, body = _answer_rotation(meter, work[0])
        meter.result(work[0]["id"], "done", body)
        meter.exchange()

        calls = []

        def broken(db, directory, keys):
            calls.append(threading.get_ident())
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(key_rotation, "login_files",
                            lambda settings: (str(tmp_path), _no_lock, broken))
        meter.key = new
        raw = json.dumps(meter.envelope()).encode()
        r = meter.post(None, raw=raw)
        assert r.status_code == 200, r.text
        sig = r.headers["x-bc-signature"]
        assert sig == hmac.new(bytes.fromhex(old), r.content, hashlib.sha256).hexdigest()
        assert calls and calls[0] != server.thread.ident
        # both keys still open: the old one is answered too
        meter.key = old
        meter.exchange()
