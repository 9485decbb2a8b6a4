# The fake esp32.Partition flash (host_tests/fakes/esp32.py) kept across driver processes
# (one process per meter boot), with the ESP-IDF bootloader's part of an OTA update: boot
# the partition set_boot chose, pending verification; roll back at the next reset when the
# app never called mark_app_valid_cancel_rollback. Factory image: ota_0.

import json

import esp32

LABELS = ("ota_0", "ota_1")


def load(base):
    esp32.partition_table((("ota_0", 16), ("ota_1", 16)), running="ota_0")
    try:
        with open(base + "/flash.json") as f:
            esp32.STATE.update(json.load(f))
        for label in LABELS:
            with open(base + "/flash-%s.bin" % label, "rb") as f:
                f.readinto(esp32.FLASH[label])   # in place: a 64 KiB read could not find
                # room on the board build's heap once it was fragmented (a MemoryError)
    except OSError:
        pass
    _bootloader(esp32.STATE)
    save(base)
    return esp32.STATE["running"]


def _bootloader(st):
    if st["boot"] != st["running"]:  # a new image was set to boot
        st["previous"] = st["running"]
        st["running"] = st["boot"]
        st["pending"] = st["rollback"]
        st["valid_at_boot"] = st["marked_valid"]
    elif st.get("pending"):
        if st["marked_valid"] == st["valid_at_boot"]:  # never confirmed: roll back
            st["running"] = st["boot"] = st["previous"]
        st["pending"] = False


def save(base):
    with open(base + "/flash.json", "w") as f:
        json.dump(esp32.STATE, f)
    for label in LABELS:
        with open(base + "/flash-%s.bin" % label, "wb") as f:
            f.write(esp32.FLASH[label])
