"""Issue 12, Done when: "A board-clock-in-2000 meter joins in the e2e lab." A meter whose
board clock starts at 2000-01-01, or in 2040, behind its site's stateful firewall in the
e2e lab, joins the head-end outside within two exchanges, over HTTP and over MQTT: its first
request is refused with the signed server time, the retry is taken. Real processes in
network namespaces (tools/lab/netlab.py), as `make e2e` runs them."""

import json
import time
import uuid

import pytest
from e2e_env import MQTT_KEEPALIVE, SKIP, _why_skip_mqtt

from lab import netlab, processes

pytestmark = [pytest.mark.root, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

Y2000 = 946684800                   # 2000-01-01 00:00 UTC
Y2040 = 2208988800                  # 2040-01-01 00:00 UTC


def _refusals(he, transport):
    """The time refusals the head-end gave, in its log."""
    if transport == "mqtt":
        return he.log().count("refused: ts outside the replay window")
    return sum(1 for ln in he.log().splitlines() if "/v1/exchange" in ln and " 409" in ln)


@pytest.mark.parametrize("start", [Y2000, Y2040], ids=["2000", "2040"])
@pytest.mark.parametrize("transport", ["http", "mqtt"])
def test_a_board_clock_in_2000_or_2040_joins_in_the_e2e_lab(tmp_path, transport, start):
    if transport == "mqtt" and _why_skip_mqtt():
        pytest.skip(_why_skip_mqtt())
    lab = netlab.Lab("bc-c%s" % uuid.uuid4().hex[:6])
    broker = None
    try:
        lab.up()
        he = processes.Headend(tmp_path, host=lab.headend_ip, lab=lab)
        api = he.api(he.add_token("alice", "operator"))
        key = he.add_device("meter-a")
        link, url = {}, he.url
        if transport == "mqtt":
            broker = processes.Broker(tmp_path, he.db, host=lab.headend_ip, lab=lab, ns="out")
            broker.start()
            he.extra += broker.serve_args()
            link, url = broker.meter_settings(keepalive=MQTT_KEEPALIVE), ""
        he.start()
        if broker is not None:
            processes.wait_until(lambda: api.get("/v1/mqtt").json()["connected"], 30,
                                 "the bridge to connect")
        meter = processes.Meter(tmp_path, "meter-a", key, url, lab=lab, ns="a",
                                clock_offset=int(start - time.time()), **link).start()
        processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 40,
                             "the first reading from a meter whose clock started in %d:\n%s"
                             % (time.gmtime(start).tm_year, meter.log()[-1500:]))
        started = [json.loads(ln) for ln in meter.log().splitlines()
                   if ln.startswith("{") and '"started"' in ln][0]
        assert abs(started["unix"] - start) < 120, "the board's clock did not start off"
        # within two exchanges: one signed time refusal, then the retry is taken
        assert _refusals(he, transport) == 1, he.log()[-3000:]
        assert api.get("/v1/devices/meter-a").json()["transport"] == transport
        w = processes.run_work(api, "meter-a", "read")
        assert w["status"] == "done", w
    finally:
        try:
            if broker is not None:
                broker.stop()
        finally:
            lab.down()
