"""`make sim TRANSPORT=xmpp`: the sim starts its private Prosody, gives the meter an
account with login keys computed at start (the meter's config holds no password), the
head-end joins as the component, and the meter exchanges over XMPP: readings arrive, a
`read` is pushed and answered; SIGTERM ends Prosody with everything else."""

import json
import shutil
import signal

import pytest
from sim_process import Sim, alive, command_line, descendants, port_free

from lab import processes

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("prosody") is None,
                                 reason="prosody is not installed (apt-get install prosody)")]


def test_make_sim_over_xmpp(tmp_path):
    port = processes.free_port()
    sim = Sim(tmp_path / ".sim", port, transport="xmpp")
    try:
        sim.wait_reading()
        kids = descendants(sim.proc.pid)
        assert any("prosody" in command_line(p) for p in kids), [command_line(p) for p in kids]
        cfg = json.loads((tmp_path / ".sim" / "meter.json").read_text())
        assert cfg["transport"] == "xmpp" and len(cfg["xmpp_scram"].split(":")) == 4
        assert "password" not in json.dumps(cfg)
        api = sim.api()
        processes.wait_until(lambda: api.get("/v1/devices/sim-meter-1").json()["transport"]
                             == "xmpp", 30, "the meter's first exchange over XMPP")
        w = processes.run_work(api, "sim-meter-1", "read")
        assert w["status"] == "done" and "reading" in w["result"], w
        assert api.get("/v1/xmpp").json()["meters"]["online"] == ["sim-meter-1"]
        sim.proc.send_signal(signal.SIGTERM)
        assert sim.wait() == 0, sim.stderr()
        assert alive(kids) == [], [command_line(p) for p in alive(kids)]
        assert port_free(port)
    finally:
        sim.stop()
