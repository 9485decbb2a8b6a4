"""A meter whose network path drops TCP connections idle for less than its long-poll (a NAT
box or proxy with a short idle timer): the real firmware (MicroPython unix port) and the real
head-end on loopback, with tools/lab/middlebox.py between them closing connections idle
for IDLE_S. The meter must learn to hold its long-polls shorter than the box allows, without
backing off, so work still arrives within a second or two."""

import json
import subprocess
import sys
import threading
import time

import pytest

from lab import processes

pytestmark = pytest.mark.system

IDLE_S = 6          # the box's idle timer, well under the meter's 25 s long-poll
WORKS = 3


def _closes(proc, counts):
    for line in proc.stdout:
        try:
            counts[json.loads(line)["closed"]] += 1
        except (ValueError, KeyError):
            pass


def test_long_polls_adapt_to_a_path_that_cuts_idle_connections(tmp_path):
    he = processes.Headend(tmp_path)
    key = he.add_device("meter-m")
    api = he.api(he.add_token("alice", "operator"))
    he.start()
    box = subprocess.Popen([sys.executable, "-m", "lab.middlebox",
                            "127.0.0.1", "0", "127.0.0.1", str(he.port), str(IDLE_S)],
                           stdout=subprocess.PIPE, text=True)
    meter = None
    try:
        ready = box.stdout.readline().split()
        assert ready[0] == "ready", ready
        counts = {"idle": 0, "eof": 0}
        threading.Thread(target=_closes, args=(box, counts), daemon=True).start()
        meter = processes.Meter(tmp_path, "meter-m", key, "http://127.0.0.1:%s" % ready[1],
                             report_s=600, poll_wait_s=25).start()
        processes.wait_until(lambda: api.get("/v1/devices/meter-m").json()["last_contact"], 30,
                          "the meter's first exchange")
        processes.wait_until(lambda: counts["idle"] >= 1, IDLE_S + 10,
                          "the box to cut a held long-poll")
        time.sleep(5 * IDLE_S)               # idle: a long-poll after another through the box
        cut = counts["idle"]
        latencies = []
        for n in range(WORKS):
            time.sleep(IDLE_S * 0.3 * n)
            t0 = time.monotonic()
            w = processes.run_work(api, "meter-m", "read", timeout=60)
            latencies.append(time.monotonic() - t0)
            assert w["status"] == "done", w
        # the meter learnt to hold each long-poll shorter than the box's timer: no more cuts,
        # no back-off, and work arrives at once
        assert cut <= 2, (counts, meter.log()[-2000:])
        assert max(latencies) < 3.0, (latencies, counts)
    finally:
        if meter is not None:
            meter.kill()
        box.kill()
        he.kill()
