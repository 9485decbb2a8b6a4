"""The relay state and the stated presence with its note survive a `reboot` and a kill -9
(issue 13, item 3): the simulated meter (MicroPython unix port) against the real head-end.
Before, the relay came back closed and presence `available`, so work held
`when_available` went to a site its crew had marked restricted."""

import signal
import time

import pytest

from lab import processes

pytestmark = pytest.mark.system

NOTE = "crew on site until 15:00"


def _read(api):
    w = processes.run_work(api, "m-1", "read")
    assert w["status"] == "done", w
    return w["result"]


def _restarts(meter):
    return meter.log().count('"type": "started"')


def test_relay_and_presence_survive_reboot_and_kill_9(tmp_path):
    he = processes.Headend(tmp_path)
    key = he.add_device("m-1")
    api = he.api(he.add_token("op", "operator"))
    he.start()
    meter = processes.Meter(tmp_path, "m-1", key, he.url).start()
    try:
        assert processes.run_work(api, "m-1", "relay", {"state": "open"})["status"] == "done"
        w = processes.run_work(api, "m-1", "set_presence",
                               {"state": "available_restricted", "note": NOTE})
        assert w["status"] == "done", w

        # a `reboot` op: the next App starts from what is on flash
        started = _restarts(meter)
        assert processes.run_work(api, "m-1", "reboot")["status"] == "done"
        processes.wait_until(lambda: _restarts(meter) > started, 30, "the meter to restart")
        body = _read(api)
        assert (body["relay"], body["presence"]) == ("open", "available_restricted"), body

        meter.kill(signal.SIGKILL)
        meter.start()
        body = _read(api)
        assert (body["relay"], body["presence"]) == ("open", "available_restricted"), body
        now = api.get("/v1/presence").json()[0]
        assert (now["state"], now["note"]) == ("available_restricted", NOTE), now

        # work held for an available site stays held after the restart
        r = api.post("/v1/devices/m-1/work", json={"op": "read", "when_available": True})
        assert r.status_code == 202, r.text
        time.sleep(4)
        held = api.get("/v1/work/%s" % r.json()["id"]).json()
        assert held["status"] == "held", held
    finally:
        meter.kill()
        he.kill()
