"""Time-of-use and billing end to end: the real firmware (MicroPython unix port) and the real
head-end. The utility sets a local-time tariff through the API (compiled to UTC switch times
at the head-end), the meter's readings carry the rate in force, a freeze on demand reaches
the head-end and exports as CSV and JSON with the meter's exact registers."""

import time

import pytest

from lab import processes

pytestmark = pytest.mark.system

# every day: offpeak, then peak from the next whole minute that is at least 20 s away
def tariff(now):
    switch = (int(now) // 60 + 1) * 60
    if switch - now < 20:
        switch += 60
    hm = time.strftime("%H:%M", time.gmtime(switch))
    day = [["00:00", "offpeak"], [hm, "peak"]] if hm != "00:00" else [["00:00", "peak"]]
    return {"id": "sys-1", "timezone": "UTC", "rates": ["peak", "offpeak"],
            "week": {"mon-sun": day}}, switch


def test_tariff_rates_and_a_freeze_reach_the_head_end(tmp_path):
    he = processes.Headend(tmp_path)
    key = he.add_device("meter-t")
    util = he.api(he.add_token("uma", "utility"))
    op = he.api(he.add_token("alice", "operator"))
    he.start()
    meter = processes.Meter(tmp_path, "meter-t", key, he.url).start()
    try:
        spec, switch = tariff(time.time())
        r = util.post("/v1/devices/meter-t/tariff", json={"tariff": spec, "days": 2})
        assert r.status_code == 202, r.text
        wid = r.json()["id"]
        w = processes.wait_until(
            lambda: (lambda w: w if w["status"] not in ("queued", "held", "delivered")
                     else None)(op.get("/v1/work/%s" % wid).json()), 30, "the tariff op")
        assert w["status"] == "done", w
        assert w["result"]["tariff"] == "sys-1" and w["result"]["rates"] == ["peak", "offpeak"]

        def rate_after_switch():
            rows = op.get("/v1/devices/meter-t/readings?limit=200").json()
            rates = {r["body"].get("rate") for r in rows if r["body"]["t"] >= switch + 2}
            return rates or None
        assert processes.wait_until(rate_after_switch, 90, "a reading after the switch") == \
            {"peak"}
        rows = op.get("/v1/devices/meter-t/readings?limit=500").json()
        before = {r["body"].get("rate") for r in rows
                  if "rate" in r["body"] and r["body"]["t"] < switch - 1}
        assert before <= {"offpeak"}
        f = processes.run_work(util, "meter-t", "freeze")
        assert f["status"] == "done", f
        sid = f["result"]["id"]

        def exported():
            snaps = op.get("/v1/devices/meter-t/billing/export?format=json").json()
            return [s for s in snaps if s["body"]["id"] == sid] or None
        (snap,) = processes.wait_until(exported, 30, "the snapshot at the head-end")
        b = snap["body"]
        assert b["cause"] == "utility" and b["tariff"] == "sys-1"
        # the rates count from the tariff on; the totals also hold the seconds before it
        assert 0 < b["import_mwh"] - sum(b["rate_import_mwh"]) < b["import_mwh"] / 4
        assert min(b["rate_import_mwh"]) > 0
        csv = op.get("/v1/devices/meter-t/billing/export").text.splitlines()
        total = [line for line in csv if line.startswith(sid + ",") and ",total," in line]
        assert total and ",%d.%03d," % divmod(b["import_mwh"], 1000) in total[0]
    finally:
        meter.kill()
        he.kill()
