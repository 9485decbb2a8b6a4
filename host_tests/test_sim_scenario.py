"""A scenario's config (swell.json: 120 V / 60 Hz) is honoured by `make sim` over the network,
on every transport, as `--offline` honours it (issue 13, item 5): the meter, told 230 V /
50 Hz, saw the 120 V supply as a dip in progress from the start and never a swell."""

import json
import shutil
import socket
import statistics

import pytest
from sim_process import SCENARIOS, Sim

from headend import mail_server
from lab import processes

pytestmark = pytest.mark.system


@pytest.mark.parametrize("transport", ["http", "mqtt", "email"])
def test_swell_scenario_meters_120_v_60_hz_over_the_network(tmp_path, transport):
    if transport == "mqtt" and shutil.which("mosquitto", path="/usr/sbin:/usr/bin") is None:
        pytest.skip("mosquitto is not installed")
    if transport == "email" and mail_server.missing():
        pytest.skip(mail_server.missing())
    state = tmp_path / ".sim"
    port = processes.free_port()
    sim = Sim(state, port, SCENARIOS / "swell.json", transport=transport)
    try:
        # the scenario swells at 3 s of every 8 s: the first swell has ended by 4 s
        sim.wait_for(lambda r: r.get("type") == "event" and r.get("kind") == "swell", 60)
        for _ in range(3):
            sim.wait_reading()
        cfg = json.loads((state / "meter.json").read_text())
        assert (cfg["nominal_v"], cfg["frequency"]) == (120, 60)
        readings = [r for r in sim.records if r.get("type") == "reading"]
        assert abs(statistics.median(r["vrms"] for r in readings) - 120) < 1.2
        assert all(abs(r["f"] - 60) < 0.05 for r in readings), [r["f"] for r in readings]
        kinds = {(r["type"], r.get("kind")) for r in sim.records if "event" in r["type"]}
        assert ("event", "swell") in kinds and not any(k == "dip" for _, k in kinds), kinds
        # the same over the back channel: what the head-end stored
        api = sim.api()
        stored = processes.wait_until(
            lambda: api.get("/v1/devices/sim-meter-1/readings?limit=20").json(), 30,
            "readings at the head-end")
        assert abs(statistics.median(r["body"]["vrms"] for r in stored) - 120) < 1.2
        assert all(abs(r["body"]["f"] - 60) < 0.05 for r in stored)
        events = processes.wait_until(
            lambda: api.get("/v1/devices/sim-meter-1/events?limit=20").json(), 30,
            "events at the head-end")
        assert {e["body"].get("kind") for e in events} == {"swell"}, events
    finally:
        sim.stop()
    if transport == "email":        # Ctrl-C to the group stopped postfix's master too
        conf = json.loads((state / "headend-mail.json").read_text())
        processes.wait_until(lambda: processes_free(conf["mail_smtp_port"]), 10,
                             "postfix's master to stop (its SMTPS listener)")


def processes_free(port):
    """Nothing listens on port any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True
