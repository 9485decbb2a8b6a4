"""boards/esp32_ota.py (whole-image ESP32 updates) on a fake esp32.Partition, under the
MicroPython unix port and CPython.

host_tests/fakes/esp32.py simulates the partition table (ota_0 / ota_1 of 64 KiB, NOR
flash: erase to 0xFF, then write) and records set_boot and mark_app_valid_cancel_rollback.
mp_scripts/esp32_ota_checks.py writes a random image through ImageWriter in uneven chunks and
reports what happened; the expected digests come from CPython's hashlib here.
mpy-cross compilation (xtensawin included) is in test_mpy_cross.py.
"""

import hashlib
import json
import random

import pytest

from lab import runner

pytestmark = pytest.mark.unit

DRIVER = runner.ROOT / "host_tests" / "mp_scripts" / "esp32_ota_checks.py"
# fake machine, rp2, esp32, network: first on the path
FAKES = runner.ROOT / "host_tests" / "fakes"
BLOCK = 4096
CAPACITY = 16 * BLOCK
IMAGE = bytes([0xE9]) + random.Random(32).randbytes(10 * BLOCK + 1234)  # ESP image magic
DIGEST = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request):
    stdin = ("%s\n%s\n" % (IMAGE.hex(), DIGEST)).encode()
    return json.loads(runner.run(request.param, DRIVER, str(runner.ROOT), stdin=stdin,
                                 extra=[FAKES]))


def test_full_write_verify_switch(out):
    full = out["full"]
    assert full["target"] == "ota_1"  # the next update partition after the running ota_0
    assert full["capacity"] == CAPACITY
    assert full["finish"] == len(IMAGE)
    assert full["flash_sha"] == DIGEST
    assert full["flash_tail_erased"] and full["running_untouched"]
    assert full["verify"] is True and full["verify_upper"] is True
    assert full["set_boot"] == ["ota_1"] and full["boot"] == "ota_1"


def test_verify_rejects_wrong_digest_length_and_corruption(out):
    full = out["full"]
    assert full["verify_wrong_length"] is False
    assert full["verify_wrong_digest"] is False
    assert full["verify_corrupted"] is False


def test_switch_needs_a_verified_image(out):
    kind, message = out["full"]["switch_before_verify"]
    assert kind == "ValueError" and "verify()" in message
    kind, message = out["limits"]["switch_invalid_image"]  # set_boot's own image check
    assert kind == "OSError" and "set_boot refused partition 'ota_1'" in message
    assert out["limits"]["boot_after_invalid"] == "ota_0"


def test_resume_after_power_cut(out):
    res = out["resume"]
    assert res["target"] == "ota_0"  # running ota_1: the next one wraps around
    assert res["flushed_at_cut"] == 3 * BLOCK  # the partial fourth block was lost
    assert res["verify"] is True
    # each block erased exactly once: the three flushed before the cut are not rewritten
    assert res["erases"] == -(-len(IMAGE) // BLOCK)
    assert res["misaligned"][0] == "ValueError" and "multiple of 4096" in res["misaligned"][1]
    assert res["beyond"][0] == "ValueError"


def test_oversize_image_refused(out):
    lim = out["limits"]
    kind, message = lim["oversize"]
    assert kind == "ValueError"
    assert "%d bytes" % (CAPACITY + 1) in message and "%d bytes" % CAPACITY in message
    assert "ota_1" in message
    assert lim["exact"] == ["ok"]
    assert lim["zero"][0] == "ValueError"


def test_misuse_is_a_clear_error(out):
    lim = out["limits"]
    assert lim["write_before_begin"] == ["ValueError", "begin() first"]
    assert lim["too_long"][0] == "ValueError" and "longer than announced" in lim["too_long"][1]
    assert lim["finish_short"] == ["ValueError", "image incomplete: 4 of 10 bytes"]
    assert lim["verify_unflushed"][0] == "ValueError"
    assert lim["running"][0] == "ValueError" and "running partition" in lim["running"][1]


def test_build_without_ota_partitions(out):
    kind, message = out["limits"]["no_ota"]
    assert kind == "OSError" and "no OTA update partition" in message


def test_confirm(out):
    assert out["confirm"] == {"enabled": True, "marked": 1, "disabled": False}


def test_write_does_not_copy_the_data(out):
    # MicroPython only: a few small objects (memoryview slices) per call, not the 1000
    # bytes a copy of each chunk would cost; the block buffer is allocated once
    if out["heap_per_write"] is None:
        pytest.skip("gc.mem_alloc is MicroPython's")
    assert out["heap_per_write"] < 200


def test_both_interpreters_agree():
    stdin = ("%s\n%s\n" % (IMAGE.hex(), DIGEST)).encode()
    runs = [json.loads(runner.run(i, DRIVER, str(runner.ROOT), stdin=stdin, extra=[FAKES]))
            for i in runner.INTERPRETERS if runner.available(i)]
    for run in runs:
        run.pop("heap_per_write")
    assert all(run == runs[0] for run in runs[1:])
