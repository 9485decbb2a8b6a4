"""The MQTT transport end to end with nothing faked: the real firmware (MicroPython unix
port, simulated board, transport=mqtt), a real mosquitto configured and run the way an
operator does it (`backchannel broker-config`, `backchannel broker`), and the real head-end
(uvicorn + SQLite) with its MQTT bridge (`serve --mqtt-dir`). An HTTP meter shares the
fleet: groups and rendezvous cross the two transports. Free ports, a tmp dir, every process
torn down."""

import os
import shutil
import time

import pytest

from lab import processes

pytestmark = [pytest.mark.system, pytest.mark.skipif(
    not (shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)),
    reason="mosquitto is not installed (Debian: apt-get install mosquitto)")]

MQ, HT = "meter-mq", "meter-ht"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("mqtt-site")
    he = processes.Headend(work, config={"peer_rules": [      # the rendezvous test's send
        {"from": "*", "to": "*", "ops": ["read"]}]})
    keys = {MQ: he.add_device(MQ), HT: he.add_device(HT)}
    op = he.add_token("alice", "operator")
    broker = processes.Broker(work, he.db)      # after the meters: its passwd and acl name them
    procs = []
    try:
        broker.start()
        he.extra += broker.serve_args()
        he.start()
        procs.append(he)
        mq = processes.Meter(work, MQ, keys[MQ], "", **broker.meter_settings())
        ht = processes.Meter(work, HT, keys[HT], he.url)
        procs += [mq.start(), ht.start()]
        api = he.api(op)
        processes.wait_until(lambda: api.get("/v1/mqtt").json()["connected"], 20,
                          "the bridge to connect")
        processes.wait_until(lambda: api.get("/v1/devices/%s/readings" % MQ).json(), 30,
                          "the first reading over MQTT")
        processes.wait_until(lambda: api.get("/v1/devices/%s" % HT).json()["last_contact"], 30,
                          "the HTTP meter's first exchange")
        yield {"headend": he, "broker": broker, "mq": mq, "ht": ht, "api": api, "work": work}
    finally:
        for p in reversed(procs):
            p.kill()
        broker.stop()


def readings(api, device):
    return api.get("/v1/devices/%s/readings?limit=1000" % device).json()


def presence(api, device):
    """The presence history, oldest first, as (state, source)."""
    return [(e["state"], e["source"]) for e in
            reversed(api.get("/v1/devices/%s/presence?limit=1000" % device).json())]


def test_read_round_trip_is_pushed(site):
    api = site["api"]
    w = processes.run_work(api, MQ, "read")
    assert w["status"] == "done", w
    assert w["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    assert w["result"]["registers"]["import_wh"] + w["result"]["unsaved"]["import_wh"] > 0
    # pushed at once, not at the next 60 s heartbeat
    assert w["finished_at"] - w["created"] < 2.0, w
    dev = api.get("/v1/devices/%s" % MQ).json()
    assert dev["transport"] == "mqtt" and dev["presence"] == "available"
    assert api.get("/v1/devices/%s" % HT).json()["transport"] == "http"
    counts = api.get("/v1/mqtt").json()["counts"]
    assert counts["pushed"] >= 1 and counts.get("refused", 0) == 0, counts


def test_set_config_validated_and_applied(site):
    api = site["api"]
    bad = processes.run_work(api, MQ, "set_config", {"changes": {"report_s": -5}})
    assert bad["status"] == "rejected" and "report_s" in bad["reason"]
    bad = processes.run_work(api, MQ, "set_config", {"changes": {"transport": "carrier-pigeon"}})
    assert bad["status"] == "rejected" and "transport" in bad["reason"]
    good = processes.run_work(api, MQ, "set_config", {"changes": {"report_s": 2}})
    assert good["status"] == "done", good
    cfg = processes.run_work(api, MQ, "get_config")["result"]
    assert cfg["report_s"] == 2 and cfg["transport"] == "mqtt"
    assert cfg["device_key"] == "(set)"                      # secrets never come back
    assert processes.run_work(api, MQ, "set_config",
                           {"changes": {"report_s": 1}})["status"] == "done"


def test_readings_arrive_once_each(site):
    rows = readings(site["api"], MQ)
    seqs = [r["seq"] for r in rows]
    times = [r["body"]["t"] for r in rows]
    assert len(rows) >= 1
    assert len(seqs) == len(set(seqs)) and len(times) == len(set(times))
    assert all(abs(r["body"]["vrms"] - 230) < 2 for r in rows)


def test_group_command_reaches_the_http_and_the_mqtt_meter(site):
    api = site["api"]
    r = api.post("/v1/groups", json={"name": "feeder", "members": [HT, MQ]})
    assert r.status_code == 201, r.text
    r = api.post("/v1/groups/feeder/work", json={"op": "read", "expires_in": 60})
    assert r.status_code in (200, 201, 202), r.text
    gid = r.json()["gid"]

    def settled():
        st = api.get("/v1/groups/feeder/work/%d" % gid).json()
        done = all(o["status"] not in ("queued", "held", "delivered")
                   for o in st["outcomes"].values())
        return st if done else None

    st = processes.wait_until(settled, 30, "both members' outcomes")
    assert {m: o["status"] for m, o in st["outcomes"].items()} == {HT: "done", MQ: "done"}
    for o in st["outcomes"].values():
        assert o["result"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)


def test_rendezvous_mqtt_meter_asks_the_http_meter(site):
    api = site["api"]
    w = processes.run_work(api, MQ, "send", {"to": HT, "op": "read", "ref": "mq-1"})
    assert w["status"] == "done" and w["result"]["ref"] == "mq-1", w

    def routed_back():
        got = processes.run_work(api, MQ, "get_messages")["result"]["messages"]
        return [m for m in got if m.get("ref") == "mq-1"]

    msg = processes.wait_until(routed_back, 30, "the HTTP meter's result routed back",
                            interval=0.3)[0]
    assert msg["from"] == HT and msg["result"]["status"] == "done"
    assert msg["result"]["body"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)


def test_kill_9_last_will_queued_work_and_no_duplicates(site):
    api, mq = site["api"], site["mq"]
    lwts = presence(api, MQ).count(("unavailable", "lwt"))
    mq.kill()                                   # SIGKILL: no DISCONNECT, the broker sends the Will
    processes.wait_until(lambda: presence(api, MQ).count(("unavailable", "lwt")) > lwts, 10,
                      "the Last Will in the presence history")
    assert api.get("/v1/devices/%s" % MQ).json()["presence"] == "unavailable"
    before = {r["seq"] for r in readings(api, MQ)}

    r = api.post("/v1/devices/%s/work" % MQ, json={"op": "read", "args": {}})
    assert r.status_code == 202, r.text
    wid = r.json()["id"]
    time.sleep(0.5)
    assert api.get("/v1/work/%s" % wid).json()["status"] == "queued"   # not pushed into the void

    mq.start()
    w = processes.wait_until(lambda: (lambda w: w if w["status"] not in ("queued", "delivered")
                                   else None)(api.get("/v1/work/%s" % wid).json()),
                          30, "the queued work to be done after the restart")
    assert w["status"] == "done", w                 # run at once: maybe before any reading
    assert "registers" in w["result"], w
    history = presence(api, MQ)
    last_lwt = len(history) - 1 - history[::-1].index(("unavailable", "lwt"))
    assert any(state == "available" for state, _ in history[last_lwt + 1:]), history
    assert api.get("/v1/devices/%s" % MQ).json()["presence"] == "available"

    processes.wait_until(lambda: len(readings(api, MQ)) > len(before) + 2, 30,
                      "readings after the restart")
    rows = readings(api, MQ)
    seqs = [r["seq"] for r in rows]
    times = [r["body"]["t"] for r in rows]
    assert len(seqs) == len(set(seqs)) and len(times) == len(set(times))
    assert before <= set(seqs)
    assert "Traceback" not in mq.log(), mq.log()
