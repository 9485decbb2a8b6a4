"""Signed firmware updates on the meter (docs/ota.md), under MicroPython and CPython.

Releases are signed here with the `cryptography` package (P-256, DER -> r||s). Each meter
"boot" is a fresh process running host_tests/drivers/update_meter.py over real files in a
tmp dir: fwboot.select, then the updater, fed by a fake link serving chunks from the release
directory. The oracle for what landed is hashlib over the files on disk; for what runs, the
version.py module the interpreter imported after fwboot.select.
"""

import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

import fw

DRIVER = fw.ROOT / "host_tests" / "drivers" / "update_meter.py"
KEY = ec.derive_private_key(0x5EC12E7, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0xBADC0DE, ec.SECP256R1())


def pub_hex(key):
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint).hex()


def sign(text, key=KEY):
    der = key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return "%064x%064x" % (r, s)


def manifest_text(version, files=None, image=None):
    doc = {"version": version}
    if files is not None:
        doc["files"] = sorted(({"len": len(data), "path": path,
                                "sha256": hashlib.sha256(data).hexdigest()}
                               for path, data in files.items()), key=lambda f: f["path"])
    if image is not None:
        doc["image"] = {"len": len(image), "sha256": hashlib.sha256(image).hexdigest()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def release_files(version):
    rnd = bytes((i * 7919 + 13) % 251 for i in range(21000))
    return {
        "version.py": ('VERSION = "%s"\n\n\ndef parse(text):\n    return tuple(int(p) for p '
                       'in text.split("."))\n\n\ndef newer(a, b):\n    return parse(a) > '
                       'parse(b)\n' % version).encode(),
        "big.bin": rnd,
        "lib/extra.py": b"MARK = 'extra'\n",
        "empty.txt": b"",
    }


class Meter:
    """A meter's flash (base dir) and a release directory, booted one process at a time."""

    def __init__(self, interpreter, tmp_path, version="0.2.0", files=None, image=None,
                 key=KEY):
        self.interpreter = interpreter
        self.version = version
        self.base = tmp_path / "meter"
        self.base.mkdir(parents=True)
        self.release = tmp_path / "release" / version
        self.release.mkdir(parents=True)
        self.files = files if files is not None else (None if image else
                                                      release_files(version))
        for path, data in (self.files or {"firmware.bin": image}).items():
            (self.release / path).parent.mkdir(parents=True, exist_ok=True)
            (self.release / path).write_bytes(data)
        self.manifest = manifest_text(version, self.files, image)
        self.sig = sign(self.manifest, key)
        self.cfg = {"update_key": pub_hex(KEY), "update_probation_s": 300}

    def boot(self, *steps, **opts):
        doc = {"base": str(self.base), "release": str(self.release), "cfg": self.cfg,
               "steps": list(steps), "fakes": str(fw.ROOT / "host_tests" / "fakes"),
               "image_version": self.version}
        doc.update(opts)
        return json.loads(fw.run(self.interpreter, DRIVER, stdin=json.dumps(doc).encode(),
                                 timeout=600))

    def offer(self):
        return ["update", self.manifest, self.sig]

    def pointer(self):
        p = self.base / "fw" / "current.json"
        return json.loads(p.read_text()) if p.exists() else None

    def landed(self, version):
        """True when fw/<version> holds exactly the release's files, byte for byte."""
        root = self.base / "fw" / version
        found = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                 if p.is_file()}
        return found == self.files

    def fw_entries(self):
        root = self.base / "fw"
        return sorted(os.listdir(root)) if root.exists() else []


def states(items):
    return [i["state"] for i in items]


def install(m):
    """Boot 1 of a good update: offered, downloaded, switched, acked."""
    out = m.boot(m.offer(), ["download", None], ["state"], ["ack"], ["state"])
    assert out["results"][0] == ["done", {"version": "0.2.0", "state": "downloading"}]
    return out


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


def test_tampered_file_is_rejected(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    out = m.boot(m.offer(), ["download", None], ["state"], tamper={"big.bin": 9000})
    assert out["items"][-1] == {"version": "0.2.0", "state": "rejected",
                                "reason": "hash mismatch: big.bin"}
    assert "verified" not in states(out["items"])
    assert out["results"][2]["job"] is None
    assert m.pointer() is None and m.fw_entries() == []  # stage deleted, nothing switched
    assert not (m.base / "state" / "update.json").exists()
    out = m.boot(["state"])
    assert out["version"] == "0.1.0" and out["items"] == []


@pytest.mark.parametrize("case", ["other key", "edited text", "garbage sig", "no key"])
def test_bad_signature_is_rejected(interpreter, tmp_path, case):
    m = Meter(interpreter, tmp_path, key=OTHER_KEY if case == "other key" else KEY)
    text, sig = m.manifest, m.sig
    if case == "edited text":
        text = text.replace('"len":15', '"len":16')
        assert text != m.manifest
    if case == "garbage sig":
        sig = "zz" * 64
    if case == "no key":
        m.cfg["update_key"] = ""
    reason = "no update key configured" if case == "no key" else "bad signature"
    out = m.boot(["update", text, sig], ["fetch"])
    assert out["results"] == [["rejected", reason], None]
    assert out["items"] == [{"version": "0.2.0", "state": "rejected", "reason": reason}]
    assert out["served"]["chunks"] == 0 and m.fw_entries() == []


@pytest.mark.parametrize("offered", ["0.1.0", "0.0.9"])
def test_downgrade_is_rejected(interpreter, tmp_path, offered):
    m = Meter(interpreter, tmp_path, version=offered)
    out = m.boot(m.offer(), ["fetch"])
    reason = "version downgrade: running 0.1.0, offered %s" % offered
    assert out["results"] == [["rejected", reason], None]


@pytest.mark.parametrize("files, detail", [
    ({"../evil.py": b"x"}, "unsafe or missing path '../evil.py'"),
    ({"/abs.py": b"x"}, "unsafe or missing path '/abs.py'"),
    ({"a": b"x", "a/b.py": b"y"}, "a is both a file and a directory"),
    ({"sp ace.py": b"x"}, "unsafe or missing path 'sp ace.py'"),
])
def test_malformed_manifest_is_rejected(interpreter, tmp_path, files, detail):
    m = Meter(interpreter, tmp_path, files={"ok.py": b"1"})
    text = manifest_text("0.2.0", files)
    out = m.boot(["update", text, sign(text)])
    assert out["results"] == [["rejected", "bad manifest: " + detail]]
    assert m.fw_entries() == []


def test_second_update_while_one_runs(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    out = m.boot(m.offer(), ["download", 1], m.offer())
    assert out["results"][2] == ["rejected", "update already in progress: 0.2.0"]
    assert set(states(out["items"])) == {"downloading"}  # no `rejected` for the running job


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


def test_chunks_are_checked_strictly(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    stale = {"version": "0.2.0", "path": "big.bin", "offset": 4096, "size": 21000,
             "data": "QUJD"}
    wrong_size = dict(stale, offset=0, size=20999)
    out = m.boot(m.offer(), ["chunk", stale], ["fetch"], ["chunk", wrong_size], ["state"])
    assert out["results"][1] is False  # an answer to another fetch: ignored
    assert out["results"][2] == {"version": "0.2.0", "path": "big.bin", "offset": 0,
                                 "len": 4096}
    assert out["results"][3] is True and out["results"][4]["job"] is None
    assert out["items"][-1]["reason"] == "bad chunk: big.bin"


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


def esp_image(n):
    return bytes([0xE9]) + bytes((i * 31 + 7) % 256 for i in range(n - 1))  # 0xE9: app magic


def test_image_update(interpreter, tmp_path):
    image = esp_image(10000)
    m = Meter(interpreter, tmp_path, image=image)
    out = m.boot(m.offer(), ["download", 1], image=True)
    assert out["flash"]["set_boot"] == []
    out = m.boot(["download", None], ["ack"], ["state"], image=True)  # resumes at 4096
    assert [o[1] for o in out["served"]["offsets"]] == [4096, 8192]
    assert out["results"][2]["reboot_due"] is True
    assert (m.base / "flash-ota_1.bin").read_bytes()[:len(image)] == image
    assert out["flash"]["set_boot"] == ["ota_1"] and out["flash"]["running"] == "ota_0"
    assert states(out["items"])[-2:] == ["verified", "installing"]
    out = m.boot(["state"], ["exchange"], image=True)  # the bootloader starts ota_1
    assert out["flash"]["running"] == "ota_1" and out["version"] == "0.2.0"
    assert out["results"][0]["probation"] is True
    assert out["items"] == [{"version": "0.2.0", "state": "installed"}]
    assert out["flash"]["marked_valid"] == 1
    out = m.boot(["state"], image=True)  # confirmed: no rollback at the next reset
    assert out["flash"]["running"] == "ota_1" and out["items"] == []


def test_image_not_confirmed_is_rolled_back(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path, image=esp_image(5000))
    m.boot(m.offer(), ["download", None], ["ack"], image=True)
    out = m.boot(["state"], image=True)  # the new image boots but never confirms
    assert out["version"] == "0.2.0" and out["results"][0]["probation"] is True
    out = m.boot(["state"], image=True)  # the bootloader went back to the old image
    assert out["flash"]["running"] == "ota_0" and out["version"] == "0.1.0"
    assert out["items"] == [{"version": "0.2.0", "state": "rolled_back",
                             "reason": "image not confirmed; the bootloader rolled back"}]


def test_image_that_is_no_app_is_refused_at_the_switch(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path, image=bytes(5000))  # no 0xE9 magic: set_boot refuses
    out = m.boot(m.offer(), ["download", None], ["state"], image=True)
    assert out["items"][-1]["state"] == "rejected"
    assert out["items"][-1]["reason"].startswith("image switch refused")
    assert out["results"][2] == {"job": None, "reboot_due": False, "probation": False,
                                 "running": "0.1.0"}
    assert out["flash"]["set_boot"] == []


def test_image_needs_a_board_that_takes_one(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path, image=esp_image(100))
    out = m.boot(m.offer())
    assert out["results"] == [["rejected", "bad manifest: this board takes no whole image"]]
    m = Meter(interpreter, tmp_path / "big", image=esp_image(70000))
    out = m.boot(m.offer(), image=True)
    assert out["results"] == [["rejected",
                               "bad manifest: image of 70000 bytes, partition holds 65536"]]


def test_mqtt_carries_fetch_and_chunk(interpreter, tmp_path):
    out = json.loads(fw.run(interpreter, fw.ROOT / "host_tests" / "drivers" /
                            "update_mqtt_link.py", str(tmp_path)))
    assert "fetch" not in out["idle"]  # no download: the request is as before
    assert out["downloading"]["fetch"] == {"version": "1.0.0", "path": "a.py", "offset": 0,
                                           "len": 4096}
    assert out["downloading"]["wait"] == 0
    assert out["chunks"] == [{"version": "1.0.0", "path": "a.py", "offset": 0, "size": 3,
                              "data": "QUJD"}]
    assert out["want_up"] is True  # the next fetch goes out at once


def test_image_after_a_file_release_drops_its_modules(interpreter, tmp_path):
    m = Meter(interpreter, tmp_path)
    install(m)
    assert m.boot(["exchange"], image=True)["items"][-1]["state"] == "installed"
    image = esp_image(6000)
    m.version, m.files = "0.3.0", None
    m.release = tmp_path / "release" / "0.3.0"
    m.release.mkdir()
    (m.release / "firmware.bin").write_bytes(image)
    m.manifest = manifest_text("0.3.0", image=image)
    m.sig = sign(m.manifest)
    out = m.boot(m.offer(), ["download", None], ["ack"], ["state"], image=True)
    assert out["version"] == "0.2.0" and out["results"][3]["reboot_due"] is True
    assert m.pointer()["version"] is None  # the new image must not run fw/0.2.0's modules
    out = m.boot(["exchange"], image=True)
    assert out["boot"]["version"] is None and out["version"] == "0.3.0"
    assert out["items"] == [{"version": "0.3.0", "state": "installed"}]
    assert m.fw_entries() == ["current.json"]


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
    out = json.loads(fw.run(interpreter, script, stdin=json.dumps(cases).encode()))
    assert out[0] == ["", 300] and out[1] == [key, 30]
    assert out[2] == out[3] == "update_key must be 130 hex digits starting 04 (or empty)"
    assert out[4] == "update_key must be hex digits"
    assert out[5] == "update_probation_s must be between 30 and 3600, got 29"
    assert out[6] == "update_probation_s must be between 30 and 3600, got 3601"
