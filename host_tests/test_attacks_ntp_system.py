"""A meter whose board clock started in 2000 joins the real head-end at its first exchange
when `ntp_host` is configured (issue 12, 6): the request is already inside the replay
window, so the head-end never refuses its time. Real processes: the head-end, a meter under
MicroPython, the SNTP server of test_attacks_ntp.py."""

import time

import pytest
from test_attacks_ntp import Y2000, sntp  # noqa: F401

from lab import processes

pytestmark = pytest.mark.system

def test_a_meter_whose_board_starts_in_2000_joins_at_its_first_exchange_with_ntp(tmp_path,
                                                                                 sntp):  # noqa: F811
    """The real head-end and a real meter (MicroPython): with NTP the first request is
    already inside the replay window, so the head-end never refuses its time. The NTP server
    answers 1.2 s late: the comms wait for it (ntp.first) instead of racing it."""
    server = sntp("ok", 0, 1.2)
    he = processes.Headend(tmp_path).start()
    try:
        key = he.add_device("meter-a")
        meter = processes.Meter(tmp_path, "meter-a", key, he.url,
                                clock_offset=int(Y2000 - time.time()),
                                ntp_host="127.0.0.1:%d" % server.port)
        meter.start()
        api = he.api(he.add_token("op", "operator"))
        processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 30,
                             "the first reading")
        # uvicorn logs an exchange after its answer has gone: wait for the line too
        processes.wait_until(lambda: "/v1/exchange" in he.log(), 10, "the exchange logged")
        exchanges = [ln for ln in he.log().splitlines() if "/v1/exchange" in ln]
        assert exchanges and not [ln for ln in exchanges if " 409" in ln], exchanges[:5]
        assert server.requests >= 1
        meter.kill()
    finally:
        he.kill()
