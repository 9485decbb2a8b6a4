"""A signed update over the MQTT transport with nothing faked: the real firmware (MicroPython
unix port, tools/sim/meter_main.py, transport=mqtt), mosquitto as an operator runs it, and the
real head-end with its MQTT bridge serving fetch/chunk from its releases directory. The
meter downloads over its own MQTT session, reboots into the release and confirms it."""

import json
import os
import shutil

import pytest
from update_meter_harness import KEY, manifest_text, pub_hex, release_files, sign

from lab import processes

pytestmark = [pytest.mark.system, pytest.mark.skipif(
    not (shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK)),
    reason="mosquitto is not installed (Debian: apt-get install mosquitto)")]

MQ = "meter-mq"


def test_update_over_mqtt(tmp_path):
    he = processes.Headend(tmp_path)
    files = release_files("0.2.0")
    text = manifest_text("0.2.0", files)
    rel = tmp_path / "releases" / "0.2.0"  # the head-end's default: `releases` beside its db
    for path, data in files.items():
        (rel / path).parent.mkdir(parents=True, exist_ok=True)
        (rel / path).write_bytes(data)
    (rel / "manifest.json").write_text(text)
    (rel / "manifest.sig").write_text(sign(text))
    key = he.add_device(MQ)
    op = he.add_token("alice", "operator")
    broker = processes.Broker(tmp_path, he.db)
    procs = []
    try:
        broker.start()
        he.extra += broker.serve_args()
        he.start()
        procs.append(he)
        meter = processes.Meter(tmp_path, MQ, key, "", update_key=pub_hex(KEY),
                             **broker.meter_settings())
        procs.append(meter.start())
        api = he.api(op)
        processes.wait_until(lambda: api.get("/v1/devices/%s/readings" % MQ).json(), 30,
                          "the first reading over MQTT")
        w = processes.run_work(api, MQ, "update", {"manifest": text, "sig": sign(text)})
        assert w["status"] == "done" and w["result"]["state"] == "downloading", w

        def state():
            rows = api.get("/v1/updates", params={"version": "0.2.0"}).json()
            return rows and rows[0]["state"] == "installed"

        processes.wait_until(state, 120, "the meter to report 0.2.0 installed")
        assert processes.run_work(api, MQ, "read")["result"]["version"] == "0.2.0"
        pointer = json.loads((meter.dir / "fw" / "current.json").read_text())
        assert pointer["version"] == "0.2.0" and pointer["probation"] is False
        assert sorted(os.listdir(meter.dir / "fw" / "0.2.0")) == sorted(
            {p.split("/")[0] for p in files})
    finally:
        for p in reversed(procs):
            p.kill()
        broker.stop()
