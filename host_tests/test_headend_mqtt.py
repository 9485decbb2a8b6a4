"""The MQTT transport: a real mosquitto (Debian's /usr/sbin/mosquitto) configured by
tools/headend/broker.py on a free loopback port, the head-end's bridge in the app, and
paho-based fake meters (host_tests/mqtt_fake_meter.py) that sign on their own. HTTP fake
meters share the fleet: groups and rendezvous work across the two transports."""

import json
import os
import shutil
import stat
import time

import pytest
from fastapi.testclient import TestClient
from headend_fake_meter import FakeMeter, hmac_hex
from headend_harness import ALLOW_PEERS, Api, Headend
from mqtt_fake_meter import MqttFakeMeter, up_payload

from headend import broker, devices
from headend.cli import main
from lab.processes import free_ports

needs_mosquitto = pytest.mark.skipif(
    not (shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)),
    reason="mosquitto is not installed (Debian: apt-get install mosquitto)")
pytestmark = [pytest.mark.system, needs_mosquitto]


def wait_for(fn, timeout=5.0, what="condition"):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < end, "timed out waiting for %s" % what
        time.sleep(0.02)


class Site:
    """A head-end with its MQTT bridge, a mosquitto for it, MQTT and HTTP fake meters."""

    def __init__(self, tmp_path, mqtt=("q1",), http=(), tls=None, **settings):
        self.tmp = tmp_path
        self.dir = tmp_path / "broker"
        self.port, self.tls_port = free_ports(2)
        self.tls_port = self.tls_port if tls else None
        self.cafile = tls["ca"] if tls else None
        if tls:
            settings.update(mqtt_port=self.tls_port, mqtt_cafile=tls["ca"])
        self.h = Headend(tmp_path, mqtt_dir=str(self.dir), **settings)
        self.keys = {m: devices.create(self.h.hub.db, m, poll=0) for m in mqtt + http}
        self.http_ids = http
        self.write(tls)
        self.proc = broker.start(self.dir)
        self.client = None
        self.meters = []

    def write(self, tls=None):
        kw = dict(tls_port=self.tls_port, certfile=tls["cert"], keyfile=tls["key"]) if tls \
            else {}
        return broker.write(self.h.hub.db, self.dir, port=self.port, **kw)

    def start(self):
        self.client = TestClient(self.h.app)
        self.client.__enter__()
        self.bridge = self.h.app.state.bridge
        assert self.bridge.wait_ready(10), "bridge did not connect"
        self.op = Api(self.client, self.h.op_token)
        return self

    def mqtt(self, device, connect=True, **kw):
        m = MqttFakeMeter("127.0.0.1", self.tls_port or self.port, device, self.keys[device],
                          cafile=self.cafile, **kw)
        self.meters.append(m)
        if connect:
            m.connect()
        return m

    def http(self, device):
        return FakeMeter(self.client, device, self.keys[device])

    def count(self, table, device=None):
        return self.h.count(table, device)

    def presence(self, device):
        return [(e["state"], e["source"], e["note"]) for e in
                reversed(self.op.get("/v1/devices/%s/presence" % device).json())]

    def restart_broker(self):
        broker.stop(self.proc)
        self.proc = broker.start(self.dir)

    def close(self):
        for m in self.meters:
            try:
                m.disconnect()
            except Exception:
                pass
        try:
            if self.client is not None:
                self.client.__exit__(None, None, None)
        finally:
            broker.stop(self.proc)


@pytest.fixture
def make_site(tmp_path, request):
    def make(**kw):
        site = Site(tmp_path, **dict(dict(peer_rules=ALLOW_PEERS), **kw))
        request.addfinalizer(site.close)
        return site.start()
    return make


def test_up_down_round_trip_with_ack(make_site):
    s = make_site()
    q = s.mqtt("q1")
    q.reading(231.0)
    q.add("event", {"kind": "dip"})
    r = q.exchange()
    assert r["ack"] == 2 and r["work"] == [] and r["next"] == 60   # mqtt_heartbeat for poll 0
    assert q.outbox == [] and not q.bad
    assert [x["body"]["vrms"] for x in s.op.get("/v1/devices/q1/readings").json()] == [231.0]
    dev = s.op.get("/v1/devices/q1").json()
    assert dev["transport"] == "mqtt" and dev["presence"] == "available"
    assert s.presence("q1") == [("available", "meter", None)]
    q.publish("bc/q1/presence", q.presence("available"), retain=True)
    q.publish("bc/q1/presence", q.presence("active", "relay closed"), retain=True)
    wait_for(lambda: s.bridge.counts["presence"] == 3, what="the presence messages")
    assert s.presence("q1") == [("available", "meter", None),    # the same again: not twice
                                ("active", "meter", "relay closed")]
    assert s.bridge.counts["answered"] == 1 and s.bridge.counts["refused"] == 0
    assert s.op.get("/v1/mqtt").json()["connected"] is True
    assert s.client.get("/v1/mqtt").status_code == 401


def test_operator_work_is_pushed_at_once_within_room(make_site):
    s = make_site()
    q = s.mqtt("q1")
    q.exchange(room=2)
    t0 = time.monotonic()
    w1 = s.op.work("q1", "read")
    d = q.next_down()
    latency = d["_received"] - t0
    assert latency < 0.5, "push took %.3f s" % latency
    assert [w["id"] for w in d["work"]] == [w1["id"]] and d["more"] is False
    assert s.op.status(w1["id"]) == "delivered"
    w2 = s.op.work("q1", "relay", {"state": "open"})
    w3 = s.op.work("q1", "get_config")
    assert [w["id"] for w in q.next_down()["work"]] == [w2["id"]]   # room 2: one left
    assert q.no_down(0.3)                                            # w3 waits for room
    q.execute([d["work"][0]])                  # w1 done; w2 not yet run: redelivered
    r = q.exchange(room=4)
    assert [w["id"] for w in r["work"]] == [w2["id"], w3["id"]]
    assert s.op.status(w1["id"]) == "done" and s.op.status(w3["id"]) == "delivered"
    q.execute(r["work"])
    r = q.exchange()
    assert r["work"] == [] and r["next"] == 60          # poll 0 on MQTT: the heartbeat
    assert s.op.patch("/v1/devices/q1", json={"poll": 30}).status_code == 200
    assert q.exchange()["next"] == 30                                 # the head-end's poll
    assert s.op.status(w2["id"]) == "done" and s.op.status(w3["id"]) == "done"
    assert s.bridge.counts["pushed"] == 2


def test_work_queued_while_offline_is_delivered_on_reconnect_and_lwt_recorded(make_site):
    s = make_site()
    q = s.mqtt("q1")
    q.exchange()
    q.kill()                                   # no DISCONNECT: the broker sends the Will
    wait_for(lambda: ("unavailable", "lwt", "connection lost") in s.presence("q1"),
             what="the Last Will")
    assert s.op.get("/v1/devices/q1").json()["presence"] == "unavailable"
    w = s.op.work("q1", "read")
    time.sleep(0.3)
    assert s.op.status(w["id"]) == "queued"    # not pushed into the void
    q.connect()                                # states `available`, then calls in
    r = q.exchange()
    assert [x["id"] for x in r["work"]] == [w["id"]]
    assert s.presence("q1")[-1][:2] in (("available", "meter"), ("available", "contact"))
    assert [e[:2] for e in s.presence("q1")].count(("unavailable", "lwt")) == 1

    # a clean disconnect leaves no Will: work pushed meanwhile waits in the broker's
    # persistent session, which survives a broker restart
    q.execute(r["work"])
    q.exchange()
    q.disconnect()
    w2 = s.op.work("q1", "relay", {"state": "open"})
    wait_for(lambda: s.op.status(w2["id"]) == "delivered", what="the push")
    s.restart_broker()
    q.connect()
    # the push was bound to the earlier connection (v2): refused, and the next exchange
    # redelivers the work
    wait_for(lambda: q.unbound, what="the held push")
    assert [x["id"] for x in q.unbound[0]["work"]] == [w2["id"]]
    d = q.exchange()
    assert [x["id"] for x in d["work"]] == [w2["id"]]
    wait_for(lambda: s.bridge.wait_ready(0.01), what="the bridge to reconnect")
    q.execute(d["work"])
    q.exchange()
    assert s.op.status(w2["id"]) == "done"


def test_forged_replayed_and_misaddressed_requests_store_nothing(make_site):
    s = make_site(mqtt=("q1", "q2"))
    q1, q2 = s.mqtt("q1"), s.mqtt("q2", stated=None)
    env = q1.envelope(items=[{"seq": 1, "kind": "reading", "body": {"vrms": 1.0}}])
    stale = q1.envelope(ts=time.time() - 3600, items=[{"seq": 1, "kind": "reading", "body": {}}])
    cases = [
        up_payload("00" * 32, env),                                  # wrong key
        up_payload(q1.key, raw=b"{not json"),
        b"no-signature-here",
        up_payload(q1.key, stale),
        up_payload(q2.key, q2.envelope(items=[{"seq": 1, "kind": "reading",     # q2's body,
                                               "body": {"vrms": 2.0}}])),     # on q1's topic
    ]
    for payload in cases:
        q1.publish("bc/q1/up", payload)
    wait_for(lambda: s.bridge.counts["refused"] == len(cases), what="the refusals")
    assert s.count("items") == 0 and s.count("nonces") == 0
    # the stale ts, correctly signed, gets the signed time refusal; the others no answer
    refusal = q1.next_down()
    assert refusal["re"] == stale["nonce"] and abs(refusal["time"] - time.time()) < 5
    assert q1.no_down(0.2) and q2.no_down(0.01)
    reasons = " | ".join(s.bridge.refused)
    for word in ("bad signature", "malformed JSON", "<sig> <JSON>", "replay window",
                 "does not match the topic"):
        assert word in reasons, reasons

    good = up_payload(q1.key, env)
    q1.sent.add(env["nonce"])               # published by hand: its answer is bound to it
    q1.publish("bc/q1/up", good)
    assert q1.next_down()["ack"] == 1
    q1.publish("bc/q1/up", good)                                    # the same message again
    wait_for(lambda: s.bridge.counts["refused"] == len(cases) + 1, what="the replay")
    assert "replay: nonce already seen" in s.bridge.refused
    assert s.count("items") == 1 and s.count("nonces") == 1 and q1.no_down(0.2)
    assert s.count("items", "q2") == 0


def test_acl_keeps_a_meter_to_its_own_topics(make_site):
    s = make_site(mqtt=("q1", "q2"))
    q1, q2 = s.mqtt("q1"), s.mqtt("q2")
    q2.exchange()
    ups = s.bridge.counts["up"]
    forged = up_payload(q2.key, q2.envelope(items=[{"seq": 1, "kind": "reading",
                                                    "body": {"vrms": 9.0}}]))
    q1.publish("bc/q2/up", forged)                                   # even with q2's signature
    q1.publish("bc/q2/presence", json.dumps({"state": "unavailable",
                                             "note": "connection lost"}), retain=True)
    q1.publish("bc/q2/down", b"0" * 64 + b' {"ack": 99}')
    q1.subscribe("bc/q2/down")                  # mosquitto grants it but delivers nothing
    q1.subscribe("bc/+/up")
    q1.exchange()                               # a sentinel after the forbidden publishes
    time.sleep(0.2)
    assert s.bridge.counts["up"] == ups + 1 and s.count("items", "q2") == 0
    assert s.presence("q2") == [("available", "meter", None)]
    assert q2.no_down(0.01)
    w = s.op.work("q2", "read")
    assert [x["id"] for x in q2.next_down()["work"]] == [w["id"]]
    assert q1.no_down(0.3)                      # q1 never sees q2's down, nor q2's up
    intruder = MqttFakeMeter("127.0.0.1", s.port, "q1", s.keys["q2"])   # q2's key, q1's name
    rc = intruder.connect(expect_ok=False)
    intruder.disconnect()
    assert rc.is_failure and "authori" in str(rc).lower()


def test_group_command_reaches_http_and_mqtt_meters(make_site):
    s = make_site(mqtt=("q1",), http=("h1",))
    q, h = s.mqtt("q1"), s.http("h1")
    q.exchange()
    h.exchange()
    assert s.op.post("/v1/groups", json={"name": "feeder", "members": ["h1", "q1"]}
                     ).status_code == 201
    r = s.op.post("/v1/groups/feeder/work", json={"op": "read"}).json()
    gid = r["gid"]
    d = q.next_down()                                                # pushed at once
    assert [x["id"] for x in d["work"]] == [r["work"]["q1"]]
    q.execute(d["work"], lambda w: ("done", {"vrms": 230.0}))
    q.exchange()
    hw = h.exchange()["work"]
    h.execute(hw, lambda w: ("unknown_op", {}))
    h.exchange()
    st = s.op.get("/v1/groups/feeder/work/%d" % gid).json()
    assert {m: o["status"] for m, o in st["outcomes"].items()} == {"h1": "unknown_op",
                                                                   "q1": "done"}
    assert st["outcomes"]["q1"]["result"] == {"vrms": 230.0}
    transports = {d["id"]: d["transport"] for d in s.op.get("/v1/devices").json()}
    assert transports == {"h1": "http", "q1": "mqtt"}


def test_rendezvous_between_an_http_meter_and_an_mqtt_meter(make_site):
    s = make_site(mqtt=("q1",), http=("h1",))
    q, h = s.mqtt("q1"), s.http("h1")
    q.exchange()
    # HTTP meter -> MQTT meter -> back to the HTTP meter
    h.add("send", {"to": "q1", "ref": "h-1", "op": "read", "args": {}})
    h.exchange()
    (w,) = q.next_down()["work"]                                     # pushed at once
    assert (w["op"], w["role"], w["from"]) == ("read", "peer", "device:h1")
    q.execute([w], lambda w: ("done", {"vrms": 229.5}))
    q.exchange()
    (m,) = h.exchange(wait=5)["work"]
    assert (m["op"], m["from"]) == ("message", "device:q1")
    assert m["args"] == {"from": "q1", "ref": "h-1",
                         "result": {"status": "done", "body": {"vrms": 229.5}}}
    h.execute([m])
    h.exchange()
    # MQTT meter -> HTTP meter -> back to the MQTT meter
    q.add("send", {"to": "h1", "ref": "q-1", "op": "get_events", "args": {}})
    q.exchange()
    (w,) = h.exchange(wait=5)["work"]
    assert (w["op"], w["role"], w["from"]) == ("get_events", "peer", "device:q1")
    h.execute([w], lambda w: ("done", {"state": "open"}))
    h.exchange()
    (m,) = q.next_down()["work"]                                     # pushed at once
    assert m["args"] == {"from": "h1", "ref": "q-1",
                         "result": {"status": "done", "body": {"state": "open"}}}
    q.execute([m])
    q.exchange()
    assert s.op.status(m["id"]) == "done"


def test_tls_listener_bridge_and_meter(make_site, tmp_path):
    from lab import pki
    certs = tmp_path / "pki"
    pki.init(certs)                                  # server cert for localhost, 127.0.0.1
    p = pki.paths(certs)
    tls = {"ca": str(p["ca_pem"]), "cert": str(p["server_pem"]), "key": str(p["server_key"])}
    s = make_site(tls=tls)
    assert s.bridge.status()["broker"] == "127.0.0.1:%d" % s.tls_port
    q = s.mqtt("q1")
    q.reading()
    assert q.exchange()["ack"] == 1
    w = s.op.work("q1", "read")
    assert [x["id"] for x in q.next_down()["work"]] == [w["id"]]


def test_broker_config_cli_writes_files_and_reloads(make_site, capsys):
    s = make_site(mqtt=("q1",))
    creds = json.loads((s.dir / "bridge.json").read_text())
    for name in ("passwd", "acl", "bridge.json"):
        assert stat.S_IMODE(os.stat(s.dir / name).st_mode) == 0o600, name
    conf = (s.dir / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "persistence true",
                 "listener %d 127.0.0.1" % s.port, "password_file %s" % (s.dir / "passwd"),
                 "acl_file %s" % (s.dir / "acl")):
        assert line in conf.splitlines(), line
    acl = (s.dir / "acl").read_text()
    assert "user q1\ntopic write bc/q1/up\ntopic write bc/q1/presence\n" \
           "topic write bc/q1/state\ntopic write homeassistant/sensor/q1/#\n" \
           "topic read bc/q1/down\ntopic read homeassistant/status\n" in acl
    assert "user backchannel-headend\ntopic readwrite bc/#\ntopic read homeassistant/#\n" in acl
    passwd = (s.dir / "passwd").read_text()
    assert passwd.startswith("q1:$7$") and creds["password"] not in passwd
    assert broker.meter_password(s.keys["q1"]) == hmac_hex(s.keys["q1"], b"mqtt-password")

    # a meter added later: the CLI rewrites the files and the running broker rereads them
    key = devices.create(s.h.hub.db, "q9", poll=0)
    s.keys["q9"] = key
    with pytest.raises(SystemExit) as e:
        main(["broker-config", "--db", s.h.settings.db, "--dir", str(s.dir),
              "--port", str(s.port)])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "2 meter(s)" in out and "reloaded" in out
    assert json.loads((s.dir / "bridge.json").read_text()) == creds   # same bridge password
    q9 = wait_for(lambda: _try_connect(s, "q9"), what="q9 admitted after the reload")
    q9.reading()
    assert q9.exchange()["ack"] == 1

    with pytest.raises(SystemExit) as e:
        main(["broker-config", "--db", s.h.settings.db, "--dir", str(s.tmp / "x"),
              "--certfile", str(s.dir / "acl")])
    assert e.value.code == 1 and "keyfile" in capsys.readouterr().err


def _try_connect(site, device):
    m = site.mqtt(device, connect=False)
    if m.connect(expect_ok=False).is_failure:
        m.disconnect()
        return None
    return m


def test_serve_refuses_missing_mqtt_settings(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--db", str(tmp_path / "x.db"), "--mqtt-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "bridge.json" in err and "broker-config" in err
