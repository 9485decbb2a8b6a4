"""The real firmware (MicroPython unix port, simulated board) against the real head-end
(uvicorn + SQLite) over loopback HTTP: the back channel end to end, without firewalls."""

import pytest

from headend import work_size
from lab import netlab, processes

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("site")
    he = processes.Headend(work, config={"peer_rules": [      # the rendezvous test's send
        {"from": "*", "to": "*", "ops": ["read"]}]})
    key = he.add_device("meter-a")
    key_b = he.add_device("meter-b")
    op = he.add_token("alice", "operator")
    util = he.add_token("uma", "utility")
    he.start()
    meter = processes.Meter(work, "meter-a", key, he.url).start()
    meter_b = processes.Meter(work, "meter-b", key_b, he.url).start()
    api = he.api(op)
    processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 30,
                      "the first reading from the meter")
    yield {"headend": he, "meter": meter, "api": api, "util": he.api(util), "work": work}
    meter.kill()
    meter_b.kill()
    he.kill()


def test_read_round_trip(site):
    w = processes.run_work(site["api"], "meter-a", "read")
    assert w["status"] == "done", w
    body = w["result"]
    assert body["reading"]["vrms"] == pytest.approx(230, rel=0.01)
    # the saved registers, and apart what was metered since the last save
    assert body["registers"]["import_wh"] >= 0 and body["unsaved"]["import_wh"] >= 0
    assert body["registers"]["import_wh"] + body["unsaved"]["import_wh"] > 0


def test_readings_arrive_once_each(site):
    rows = site["api"].get("/v1/devices/meter-a/readings?limit=500").json()
    times = [r["body"]["t"] for r in rows]
    assert len(times) == len(set(times)) and len(rows) >= 1
    assert all(abs(r["body"]["vrms"] - 230) < 2 for r in rows)


def test_set_config_validated_and_applied(site):
    bad = processes.run_work(site["api"], "meter-a", "set_config", {"changes": {"report_s": -5}})
    assert bad["status"] == "rejected" and "report_s" in bad["reason"]
    good = processes.run_work(site["api"], "meter-a", "set_config", {"changes": {"report_s": 2}})
    assert good["status"] == "done"
    cfg = processes.run_work(site["api"], "meter-a", "get_config")["result"]
    assert cfg["report_s"] == 2 and cfg["device_key"] == "(set)"  # secrets never come back


def test_release_key_cannot_be_changed_over_the_back_channel(site):
    key = "04" + "11" * 64
    w = processes.run_work(site["api"], "meter-a", "set_config",
                        {"changes": {"update_key": key, "report_s": 3}})
    assert w["status"] == "rejected" and "serial console" in w["reason"], w
    cfg = processes.run_work(site["api"], "meter-a", "get_config")["result"]
    assert cfg["update_key"] != key and cfg["report_s"] != 3   # nothing of it applied


def test_unknown_op_and_roles(site):
    w = processes.run_work(site["api"], "meter-a", "make_coffee")
    assert w["status"] == "unknown_op"
    r = site["api"].post("/v1/devices/meter-a/work", json={"op": "reset_energy", "args": {}})
    assert r.status_code == 403
    w = processes.run_work(site["util"], "meter-a", "reset_energy")
    assert w["status"] == "done" and "before" in w["result"]


def test_relay_sets_presence(site):
    w = processes.run_work(site["api"], "meter-a", "relay", {"state": "open"})
    assert w["status"] == "done"
    processes.wait_until(lambda: site["api"].get("/v1/presence").json()[0]["state"]
                      == "available_off", 10, "presence available_off")
    w = processes.run_work(site["api"], "meter-a", "set_presence",
                        {"state": "available_restricted", "note": "critical process until 13:03"})
    assert w["status"] == "done"
    processes.wait_until(lambda: site["api"].get("/v1/presence").json()[0]["state"]
                      == "available_restricted", 10, "presence available_restricted")


def test_command_latency_is_long_poll_fast(site):
    w = processes.run_work(site["api"], "meter-a", "read")
    assert w["status"] == "done"
    assert w["finished_at"] - w["created"] < 2.0, w  # long-poll: not a poll interval


def test_meter_listens_on_nothing(site):
    assert netlab.Lab.listening_sockets(None, site["meter"].proc.pid) == []


def test_kill_9_mid_run_loses_and_duplicates_nothing(site):
    api, meter = site["api"], site["meter"]
    meter.kill()
    before = {r["seq"] for r in api.get("/v1/devices/meter-a/readings?limit=1000").json()}
    meter.start()
    processes.wait_until(lambda: len(api.get("/v1/devices/meter-a/readings?limit=1000").json())
                      > len(before) + 2, 30, "readings after the restart")
    rows = api.get("/v1/devices/meter-a/readings?limit=1000").json()
    seqs = [r["seq"] for r in rows]
    times = [r["body"]["t"] for r in rows]
    assert len(seqs) == len(set(seqs)) and len(times) == len(set(times))
    assert before <= set(seqs)


def test_rendezvous_a_asks_b(site):
    api = site["api"]
    w = processes.run_work(api, "meter-a", "send", {"to": "meter-b", "op": "read", "ref": "r-1"})
    assert w["status"] == "done" and w["result"]["ref"] == "r-1"

    def routed_back():
        got = processes.run_work(api, "meter-a", "get_messages")["result"]["messages"]
        return [m for m in got if m.get("ref") == "r-1"]

    msg = processes.wait_until(routed_back, 30, "B's result routed back to A", interval=0.5)[0]
    assert msg["from"] == "meter-b" and msg["result"]["status"] == "done"
    assert msg["result"]["body"]["reading"]["vrms"] == pytest.approx(230, rel=0.01)


def test_reboot_sends_its_result_then_restarts(site):
    meter = site["meter"]
    starts = meter.log().count('"started"')
    w = processes.run_work(site["api"], "meter-a", "reboot")
    assert w["status"] == "done"
    processes.wait_until(lambda: meter.log().count('"started"') > starts, 20,
                         "the meter to restart")
    assert meter.proc.poll() is None
    assert processes.run_work(site["api"], "meter-a", "read")["status"] == "done"


def test_event_start_is_pushed_during_a_long_poll(site):
    # report_s 30: the meter sits in 25 s long-polls; an event must not wait for the next one
    he = site["headend"]
    key = he.add_device("meter-c")
    meter = processes.Meter(site["work"], "meter-c", key, he.url, report_s=30,
                         scenario=processes.ROOT / "tools/sim/scenarios/dips.json").start()
    try:
        api = site["api"]
        rows = processes.wait_until(
            lambda: [r for r in api.get("/v1/devices/meter-c/events").json()
                     if r["kind"] == "event_start"], 30, "the first event_start")
        first = min(rows, key=lambda r: r["seq"])
        assert first["received"] - first["body"]["start_s"] < 1.0, first
    finally:
        meter.kill()


def test_oversized_work_is_refused_and_the_meter_carries_on(site):
    """Issue 13: a 300 KB args body was accepted (202) and redelivered with no result while
    later work waited. Now: 413 with the limit, through the API and the CLI (one line)."""
    import subprocess

    from lab import runner
    api = site["api"]
    pad = {"pad": "x" * 300000}
    r = api.post("/v1/devices/meter-a/work", json={"op": "message", "args": pad})
    assert r.status_code == 413 and "262144" in r.json()["error"], r.text
    # the CLI (argv holds at most 128 KB): a meter that has not called in yet takes the
    # smallest of the transports' limits (XMPP's: its stanza carries base64)
    site["headend"].add_device("meter-new")
    token = api.headers["Authorization"].split()[-1]
    p = subprocess.run([str(runner.ROOT / "tools" / "backchannel"), "send", "meter-new",
                        "message", '{"pad": "%s"}' % ("x" * 40000)], capture_output=True,
                       text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "BACKCHANNEL_URL": site["headend"].url,
                            "BACKCHANNEL_TOKEN": token})
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("backchannel: error: HTTP 413: work too large") and \
        "(%d with the envelope)" % min(work_size.LIMITS.values()) in p.stderr and \
        "XMPP's" in p.stderr, p.stderr
    # work the meter cannot run gets its outcome, and the next work runs
    assert processes.run_work(api, "meter-a", "no_such_op")["status"] == "unknown_op"
    w = processes.run_work(site["util"], "meter-a", "set_time", {"unix": "soon"})
    assert w["status"] == "rejected" and w["reason"], w
    assert processes.run_work(api, "meter-a", "read")["status"] == "done"
