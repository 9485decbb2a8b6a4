"""firmware/health.py: the watchdog fed only while metering and comms make progress, reset
causes, uptime and version in the `read` op, and app.py's use of them (hardware boards
awaited through available(), never paced; make_board() by platform). Runs the driver
host_tests/mp_scripts/health_checks.py on the fake `machine` (host_tests/fakes: WDT counts
feeds, reset_cause() returns what the test sets) under MicroPython and CPython."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "health_checks.py"
# fake machine, rp2, esp32, network: first on the path
FAKES = runner.ROOT / "host_tests" / "fakes"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request, tmp_path_factory):
    state = tmp_path_factory.mktemp("state-" + request.param)
    return json.loads(runner.run(request.param, CHECKS, str(runner.ROOT), str(state),
                                 extra=[FAKES]))


def test_reset_cause_names(out):
    assert out["causes"] == {
        "PWRON_RESET": "power_on", "HARD_RESET": "hard", "WDT_RESET": "watchdog",
        "DEEPSLEEP_RESET": "deep_sleep", "SOFT_RESET": "soft",
        "99": "unknown", "no_reset_cause": "unknown"}


def test_check_allows_each_task_its_own_time(out):
    c = out["check"]
    assert c["both_on_time"] is None and c["meter_at_limit"] is None
    assert c["meter_late"] == "metering made no progress for 10 s"
    assert c["comms_late"] == "comms made no progress for 85 s"
    assert c["comms_long_wait"] is None  # beat(200): a 200 s wait announced
    assert c["comms_ended"] == "comms task ended"


def test_hardware_timeout_capped_per_port(out):
    # RP2040's watchdog counts at most 8388 ms; fed 4 times per timeout, at least every 2 s
    assert out["timeouts"] == [["esp32", 60000, 2000], ["rp2", 8388, 2000],
                               ["rp2", 5000, 1250], ["linux", 1000, 250]]


@pytest.mark.parametrize("case, reason", [("stall_metering", "metering made no progress"),
                                          ("stall_comms", "comms task ended")])
def test_fed_while_alive_then_never_again(out, case, reason):
    s = out[case]
    assert s["wdt_timeout"] == 200
    assert s["fed_while_alive"] and s["starved_while_alive"] is None
    assert s["stopped"]
    assert s["feeds_after"] == 0
    assert s["count_matches"]
    assert len(s["reasons"]) == 1 and s["reasons"][0].startswith(reason)


def test_read_op_reports_reset_cause_uptime_version(out):
    r = out["read"]
    version_py = runner.FIRMWARE / "version.py"
    if version_py.exists():
        scope = {}
        exec(version_py.read_text(), scope)
        assert r["version"] == scope["VERSION"]
    else:
        assert r["version"] == "0.1.0"
    assert r["reset_cause"] == "watchdog"
    assert isinstance(r["uptime_s"], int) and r["uptime_s"] >= 0
    assert r["later"]["reset_cause"] == "power_on"
    assert r["later"]["uptime_s"] - r["uptime_s"] in (1, 2)  # 1.2 s later


def test_app_hardware_board_awaited_and_watchdog_stops_on_stall(out):
    a = out["app_stall"]
    # every block read without read() ever waiting, and none paced by the clock (20 s of
    # samples drained within the driver's 15 s limit)
    assert a["drained"] and a["reads"] == 500
    assert a["wdt_timeout"] == 1000 and a["fed_before"]
    # the board then delivers nothing: metering awaits without blocking the loop (the
    # watchdog task still runs) and the watchdog stops feeding
    assert a["starved"] and a["reason"].startswith("metering made no progress")
    assert a["app_running"]
    assert a["notices"] == ["watchdog: " + a["reason"]]


def test_comms_tells_the_watchdog_how_long_it_will_wait(out):
    c = out["comms_beat"]
    assert c["failed"] and c["watchdog"] is None  # wdt_s 0: no watchdog
    # backing off after one failure (1..2 s: base 1 s x 2, jittered down to half) plus the
    # 60 s margin
    assert 61000 <= c["allow_after"] <= 62000


def test_make_board_by_platform_and_override(out):
    assert out["boards"] == {"esp32": "Esp32Board", "rp2": "Rp2Board", "linux": "SimBoard",
                             "override": "the board module's board"}
