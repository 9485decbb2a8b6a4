"""Guarded changes with fallback (issue 12, "What to build" 1): moving a meter to a new
head-end URL (`set_url`) and changing its encoding (`set_encoding`), one mechanism
(firmware/trial.py), through real HTTPS head-ends and a real MicroPython meter. Only a utility
may; never to http://; a head-end whose certificate does not chain to the pinned CA, or one
that does not answer, costs `within_s` and the meter comes back on its old URL with a notice
saying why, also when power cuts keep it from ever finishing a trial; a good one sticks."""

import json

import pytest

from lab import pki, processes

pytestmark = pytest.mark.system


def _flash(meter):
    data = meter.config.read_bytes()
    if data[:3] == b"BC1":
        data = data[7:-4]
    return json.loads(data)


def _starts(meter):
    return meter.log().count('"type": "started"')


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("attack-move")
    good, other = base / "pki-good", base / "pki-other"
    pki.init(good)
    pki.init(other)                                 # a CA the meter does not pin
    heads = {}
    for name, ca in (("a", good), ("b", good), ("rogue", other)):
        (base / name).mkdir()
        heads[name] = processes.Headend(base / name, certfile=ca / "server.pem",
                                        keyfile=ca / "server.key", cafile=ca / "ca.pem")
    key = heads["a"].add_device("meter-a")
    for name in ("b", "rogue"):
        heads[name].cli("add-device", "meter-a", "--key", key, "--db", heads[name].db)
    tokens = {n: (h.add_token("olga", "operator"), h.add_token("uma", "utility"))
              for n, h in heads.items()}
    for h in heads.values():
        h.start()
    meter = processes.Meter(base, "meter-a", key, heads["a"].url, ca_file=str(good / "ca.der"),
                            persist_s=5)
    meter.start()
    apis = {n: (heads[n].api(op), heads[n].api(ut)) for n, (op, ut) in tokens.items()}
    processes.wait_until(lambda: apis["a"][0].get("/v1/devices/meter-a/readings").json(), 60,
                         "the first reading at head-end a")
    yield {"heads": heads, "meter": meter, "apis": apis}
    meter.kill()
    for h in heads.values():
        h.kill()


def _notices(api):
    return [e for e in api.get("/v1/devices/meter-a/events", params={"limit": 1000}).json()
            if "trial of" in json.dumps(e)]


def test_an_operator_may_not_move_a_meter_nor_may_anyone_to_http(site):
    op, util = site["apis"]["a"]
    for opname, args in (("set_url", {"url": site["heads"]["b"].url}),
                         ("set_encoding", {"encoding": "xml"})):
        r = op.post("/v1/devices/meter-a/work", json={"op": opname, "args": args})
        assert r.status_code == 403 and "utility" in r.text, r.text
    w = processes.run_work(util, "meter-a", "set_url",
                           {"url": "http://127.0.0.1:%d" % site["heads"]["b"].port})
    assert w["status"] == "rejected" and "https" in w["reason"], w
    w = processes.run_work(util, "meter-a", "set_encoding", {"encoding": "yaml"})
    assert w["status"] == "rejected" and "encoding" in w["reason"], w
    assert _flash(site["meter"])["server_url"] == site["heads"]["a"].url


def test_a_head_end_outside_the_pinned_ca_costs_within_s_then_the_meter_is_back(site):
    op, util = site["apis"]["a"]
    before = _starts(site["meter"])
    w = processes.run_work(util, "meter-a", "set_url",
                           {"url": site["heads"]["rogue"].url, "within_s": 10})
    assert w["status"] == "done", w
    processes.wait_until(lambda: _notices(op), 90, "the meter back at a with its notice")
    assert _starts(site["meter"]) >= before + 2        # the trial, then the old value
    assert "no healthy exchange within 10 s" in json.dumps(_notices(op))
    assert _flash(site["meter"])["server_url"] == site["heads"]["a"].url
    rogue_op = site["apis"]["rogue"][0]
    assert not rogue_op.get("/v1/devices/meter-a/readings").json()
    assert processes.run_work(op, "meter-a", "read", timeout=60)["status"] == "done"


def test_power_cuts_during_a_trial_end_it_after_three_starts(site):
    op, util = site["apis"]["a"]
    meter = site["meter"]
    dead = "https://127.0.0.1:%d" % processes.free_port()      # nothing listens there
    w = processes.run_work(util, "meter-a", "set_url", {"url": dead, "within_s": 86400})
    assert w["status"] == "done", w
    for _ in range(3):      # each start on trial is cut short
        n = _starts(meter)
        processes.wait_until(lambda n=n: _starts(meter) > n, 30, "a start")
        meter.kill()
        meter.start()
    processes.wait_until(lambda: "in 3 starts" in json.dumps(_notices(op)), 120,
                         "the trial to end after three starts")
    assert _flash(meter)["server_url"] == site["heads"]["a"].url


def test_a_good_move_sticks_across_a_power_cut(site):
    op, util = site["apis"]["a"]
    op_b = site["apis"]["b"][0]
    w = processes.run_work(util, "meter-a", "set_url",
                           {"url": site["heads"]["b"].url, "within_s": 60})
    assert w["status"] == "done", w
    processes.wait_until(lambda: _flash(site["meter"])["server_url"] == site["heads"]["b"].url,
                         90, "the move to be kept")
    site["meter"].kill()
    site["meter"].start()
    assert processes.run_work(op_b, "meter-a", "read", timeout=60)["status"] == "done"


def test_an_encoding_change_is_guarded_the_same_way(site):
    op_b, util_b = site["apis"]["b"]
    w = processes.run_work(util_b, "meter-a", "set_encoding", {"encoding": "xml", "within_s": 60})
    assert w["status"] == "done", w
    processes.wait_until(lambda: _flash(site["meter"])["encoding"] == "xml", 90,
                         "the encoding to be kept")
    assert processes.run_work(op_b, "meter-a", "read", timeout=60)["status"] == "done"
