"""Issue 12's first attack, as an attacker holding one operator token would try it through
the real head-end and a real meter: re-home the meter (new key, plain-http head-end) or cut
its watchdog, then change what the bill says. The meter refuses each with the reason and
keeps its config; a utility token may change calibration."""

import pytest

from lab import processes

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("attack-config")
    he = processes.Headend(work)
    key = he.add_device("meter-a")
    op = he.add_token("mallory", "operator")
    util = he.add_token("uma", "utility")
    he.start()
    meter = processes.Meter(work, "meter-a", key, he.url).start()
    api = he.api(op)
    processes.wait_until(lambda: api.get("/v1/devices/meter-a/readings").json(), 30,
                         "the first reading from the meter")
    yield {"api": api, "util": he.api(util), "url": he.url}
    meter.kill()
    he.kill()


@pytest.mark.parametrize("changes", [
    {"device_key": "ab" * 16, "server_url": "http://attacker.example:80"},
    {"server_url": "http://attacker.example:80"},
    {"ca_file": "evil.der"},
    {"transport": "mqtt", "mqtt_host": "attacker.example"},
    {"wdt_s": 0},
    {"device_id": "meter-b"},
])
def test_an_operator_token_cannot_rehome_or_brick_a_meter(site, changes):
    w = processes.run_work(site["api"], "meter-a", "set_config", {"changes": changes})
    assert w["status"] == "rejected" and "serial console" in w["reason"], w
    cfg = processes.run_work(site["api"], "meter-a", "get_config")["result"]
    assert cfg["server_url"] == site["url"] and cfg["device_id"] == "meter-a"
    assert cfg["transport"] == "http" and cfg["wdt_s"] != 0


def test_calibration_needs_a_utility_token(site):
    w = processes.run_work(site["api"], "meter-a", "set_config", {"changes": {"v_cal": 1.2}})
    assert w["status"] == "rejected" and "utility" in w["reason"], w
    assert processes.run_work(site["api"], "meter-a", "get_config")["result"]["v_cal"] == 1.0
    w = processes.run_work(site["util"], "meter-a", "set_config", {"changes": {"v_cal": 1.01}})
    assert w["status"] == "done", w
    assert processes.run_work(site["api"], "meter-a", "get_config")["result"]["v_cal"] == 1.01
