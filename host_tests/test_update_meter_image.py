"""Whole-image updates (ota_0/ota_1 partitions, simulated bootloader) on the meter
(docs/ota.md), under MicroPython and CPython. Harness: update_meter_harness.py."""

import pytest
from update_meter_harness import Meter, esp_image, install, manifest_text, sign, states

pytestmark = pytest.mark.unit


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
