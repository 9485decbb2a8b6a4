"""Signed firmware updates on the meter (docs/ota.md), under MicroPython and CPython.

Releases are signed here with the `cryptography` package (P-256, DER -> r||s). Each meter
"boot" is a fresh process running host_tests/mp_scripts/update_meter.py over real files in a
tmp dir: fwboot.select, then the updater, fed by a fake link serving chunks from the release
directory. The oracle for what landed is hashlib over the files on disk; for what runs, the
version.py module the interpreter imported after fwboot.select. Here: the update that
applies, resumes, survives crashes and rolls back; refusals are in
test_update_meter_rejects.py, whole images in test_update_meter_image.py, the shared
harness in update_meter_harness.py.
"""

import json

import pytest
from update_meter_harness import KEY, Meter, install, pub_hex, states

from lab import runner

pytestmark = pytest.mark.unit


def test_good_update_applies(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    out = install(m)
    assert out["version"] == "0.1.0" and out["boot"]["version"] is None
    assert states(out["items"])[-2:] == ["verified", "installing"]
    percents = [i["percent"] for i in out["items"] if i["state"] == "downloading"]
    assert percents[0] == 0 and percents[-1] == 100
    assert all(b // 10 > a // 10 for a, b in zip(percents, percents[1:]))  # every 10 % at most
    assert out["results"][2]["reboot_due"] is False  # the head-end has not got `installing`
    assert out["results"][4]["reboot_due"] is True
    assert out["served"]["bytes"] == sum(len(d) for d in m.files.values())
    assert m.landed("0.2.0")
    assert m.pointer() == {"version": "0.2.0", "previous": None, "probation": True,
                           "boots": 0, "reason": ""}
    assert out["results"][4]["job"] == "installing"
    assert m.fw_entries() == ["0.2.0", "current.json"]

    out = m.boot(["state"], ["exchange"], ["state"])  # the reset into the new version
    assert out["boot"]["version"] == "0.2.0" and out["version"] == "0.2.0"
    assert out["results"][0]["probation"] is True and out["results"][2]["probation"] is False
    assert out["items"] == [{"version": "0.2.0", "state": "installed"}]
    assert m.pointer()["probation"] is False
    assert not (m.base / "state" / "update.json").exists()

    out = m.boot(["state"], m.offer())  # stays on 0.2.0; the same release is not newer
    assert out["version"] == "0.2.0" and out["items"] == [
        {"version": "0.2.0", "state": "rejected",
         "reason": "version downgrade: running 0.2.0, offered 0.2.0"}]
    assert out["results"][1] == ["rejected", "version downgrade: running 0.2.0, offered 0.2.0"]


def test_restart_without_fwboot_waits_for_a_real_one(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    install(m)
    out = m.boot(["state"], ["exchange"], no_select=True)  # no reboot loop, no confirm
    assert out["results"][0] == {"job": "installing", "reboot_due": False,
                                 "probation": False, "running": "0.1.0"}
    assert out["items"] == [] and m.pointer()["probation"] is True
    out = m.boot(["state"], ["exchange"])
    assert out["version"] == "0.2.0" and out["items"] == [{"version": "0.2.0",
                                                           "state": "installed"}]


def test_interrupted_download_resumes(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    first = m.boot(m.offer(), ["download", 3])
    assert first["results"][1] == 3
    second = m.boot(["download", 2])
    third = m.boot(["download", None], ["ack"], ["state"])
    total = sum(len(d) for d in m.files.values())
    served = [b["served"] for b in (first, second, third)]
    assert sum(s["bytes"] for s in served) == total  # no byte fetched twice
    # each boot starts where the previous one stopped
    assert second["served"]["offsets"][0] == ["big.bin", 3 * 4096]
    assert third["served"]["offsets"][0] == ["big.bin", 5 * 4096]
    assert third["results"][2]["reboot_due"] is True and m.landed("0.2.0")
    assert states(third["items"])[-2:] == ["verified", "installing"]


def test_a_link_asks_for_longer_chunks(interpreter, tmp_path):
    """A link whose round trips are dear (email: mail_comms.FETCH_LEN) asks for more per
    fetch; a download resumes where it stopped whatever length the boot before asked for,
    and lands byte for byte."""
    m = Meter(interpreter, tmp_path)
    first = m.boot(m.offer(), ["download", 2, 8192])
    assert first["served"]["offsets"][:2] == [["big.bin", 0], ["big.bin", 8192]]
    second = m.boot(["download", 1])                  # the default length, then longer again
    third = m.boot(["download", None, 8192], ["ack"], ["state"])
    assert second["served"]["offsets"] == [["big.bin", 16384]]
    assert third["served"]["offsets"][0] == ["big.bin", 16384 + 4096]
    total = sum(len(d) for d in m.files.values())
    served = [b["served"] for b in (first, second, third)]
    assert sum(s["bytes"] for s in served) == total   # no byte fetched twice
    big = len(m.files["big.bin"])
    assert sum(1 for p, _ in first["served"]["offsets"] + third["served"]["offsets"]
               if p == "big.bin") == 2 + -(-(big - 16384 - 4096) // 8192)
    assert third["results"][2]["reboot_due"] is True and m.landed("0.2.0")


@pytest.mark.parametrize("point", ["before_install", "before_rename", "after_rename",
                                   "before_pointer", "after_pointer"])
def test_crash_during_switch_leaves_a_bootable_meter(interpreter, tmp_path, point):
    m = Meter(interpreter, tmp_path)
    out = m.boot(m.offer(), ["download", None], crash=point)
    assert out["crashed"] == point
    switched = point == "after_pointer"
    out = m.boot(["state"], ["ack"], ["state"], ["exchange"])  # power back on
    assert out["boot"]["error"] is None
    if not switched:  # still the old version, whole; this boot finishes the switch
        assert out["boot"]["version"] is None and out["version"] == "0.1.0"
        assert out["results"][2]["reboot_due"] is True
        assert m.landed("0.2.0") and m.pointer()["version"] == "0.2.0"
        out = m.boot(["state"], ["exchange"])
    assert out["boot"]["version"] == "0.2.0" and out["version"] == "0.2.0"
    assert m.landed("0.2.0") and out["results"][0]["probation"] is True
    assert out["items"][-1] == {"version": "0.2.0", "state": "installed"}
    assert m.pointer()["probation"] is False and m.fw_entries() == ["0.2.0", "current.json"]
    out = m.boot(["state"])
    assert out["version"] == "0.2.0" and out["items"] == []


@pytest.mark.parametrize("how", ["deadline", "crash before any exchange", "watchdog"])
def test_failed_probation_rolls_back(interpreter, tmp_path, how):
    m = Meter(interpreter, tmp_path)
    install(m)
    m.cfg["update_probation_s"] = 0  # out of the config's range, so the deadline is now
    out = m.boot(["state"], ["watch"] if how == "deadline" else ["state"])
    assert out["version"] == "0.2.0"
    if how == "deadline":
        assert out["results"][1] is True  # the app reboots
    out = m.boot(["state"], watchdog=how == "watchdog")
    reason = "watchdog reset" if how == "watchdog" else "no healthy exchange within probation"
    assert out["boot"] == {"version": None, "rolled_back": reason, "failed": "0.2.0",
                           "error": None}
    assert out["version"] == "0.1.0"
    assert out["items"] == [{"version": "0.2.0", "state": "rolled_back", "reason": reason}]
    assert m.pointer()["version"] is None and m.pointer()["probation"] is False
    assert "0.2.0" not in m.fw_entries()
    out = m.boot(["state"], m.offer())  # reported once; the release may be offered again
    assert out["version"] == "0.1.0" and out["boot"]["rolled_back"] is None
    assert out["items"][0]["state"] == "downloading"


@pytest.mark.parametrize("damage", ["garbage", "missing dir"])
def test_damaged_pointer_boots_factory(interpreter, tmp_path, damage):
    m = Meter(interpreter, tmp_path)
    (m.base / "fw").mkdir()
    text = "{not json" if damage == "garbage" else json.dumps(
        {"version": "0.3.0", "previous": None, "probation": False, "boots": 0, "reason": ""})
    (m.base / "fw" / "current.json").write_text(text)
    out = m.boot(["state"])
    assert out["boot"]["version"] is None and out["version"] == "0.1.0"
    assert out["boot"]["error"].startswith("firmware pointer unusable")
    notices = [i for i in out["notices"] if i["what"].startswith("firmware pointer")]
    assert len(notices) == 1  # the head-end hears of it


def test_mqtt_carries_fetch_and_chunk(interpreter, tmp_path):
    out = json.loads(runner.run(interpreter, runner.ROOT / "host_tests" / "mp_scripts" /
                            "update_mqtt_link.py", str(tmp_path)))
    assert "fetch" not in out["idle"]  # no download: the request is as before
    assert out["downloading"]["fetch"] == {"version": "1.0.0", "path": "a.py", "offset": 0,
                                           "len": 4096}
    assert out["downloading"]["wait"] == 0
    assert out["chunks"] == [{"version": "1.0.0", "path": "a.py", "offset": 0, "size": 3,
                              "data": "QUJD"}]
    assert out["want_up"] is True  # the next fetch goes out at once


def test_update_config_keys(interpreter, tmp_path):
    script = tmp_path / "cfg.py"
    script.write_text(
        "import json, sys, config\n"
        "out = []\n"
        "for changes in json.loads(sys.stdin.read()):\n"
        "    try:\n"
        "        c = config.validate(changes)\n"
        "        out.append([c['update_key'], c['update_probation_s']])\n"
        "    except ValueError as e:\n"
        "        out.append(str(e))\n"
        "print(json.dumps(out))\n")
    key = pub_hex(KEY)
    cases = [{}, {"update_key": key, "update_probation_s": 30}, {"update_key": key[:-2]},
             {"update_key": "05" + key[2:]}, {"update_key": key[:-1] + "g"},
             {"update_probation_s": 29}, {"update_probation_s": 3601}]
    out = json.loads(runner.run(interpreter, script, stdin=json.dumps(cases).encode()))
    assert out[0] == ["", 300] and out[1] == [key, 30]
    assert out[2] == out[3] == "update_key must be 130 hex digits starting 04 (or empty)"
    assert out[4] == "update_key must be hex digits"
    assert out[5] == "update_probation_s must be between 30 and 3600, got 29"
    assert out[6] == "update_probation_s must be between 30 and 3600, got 3601"
