"""A full heap on a board (issue 11, the soaks): metering goes on and nothing queued is lost
(firmware/memory_guard.py). Readings held in RAM stay held when writing them fails; a
transport whose batch raised MemoryError halves it, and grows it back after good exchanges;
a network error does not shrink it. On every interpreter, with MemoryError raised where a
board's allocator raises it."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

CHECKS = runner.ROOT / "host_tests" / "mp_scripts" / "memory_guard_checks.py"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request, tmp_path_factory):
    state = tmp_path_factory.mktemp("mem-" + request.param)
    return json.loads(runner.run(request.param, CHECKS, str(state)))


def test_batch_halves_to_one_item_and_grows_back(out):
    assert out["batch"][:7] == [[16, 8192], [8, 4096], [4, 2048], [2, 1024], [1, 512],
                                [1, 512], [1, 512]]
    assert out["batch"][7] == [8, 4096]       # doubled after each run of 8 good exchanges
    assert out["batch"][8] == [32, 16384]     # and never past the configured batch


def test_a_step_is_retried_once_after_a_collection(out):
    assert out["retry"] == {"value": 42, "calls": 2, "second": "never fits"}


def test_held_readings_survive_a_failed_write(out):
    o = out["outbox"]
    assert o["seqs"] == [1, 2, 3, 4, 5, 6]
    assert o["held"] == [1, 2, 3, 4, 5, 6]    # the failed flush lost none of them
    assert o["flush_raised"] is True
    assert o["on_flash"] == [1, 2, 3, 4, 5, 6] and o["bodies"] == [0, 1, 2, 3, 4, 5]


def test_transport_shrinks_its_batch_only_for_memory(out):
    c = out["comms"]
    # 32 items did not fit: 16, 8, 4 after each MemoryError; 4 fit, and the network errors
    # that follow leave the batch as it is
    assert c["sizes"][:4] == [32, 16, 8, 4]
    assert c["sizes"][4:] == [4] * (len(c["sizes"]) - 4) and len(c["sizes"]) >= 6
    assert c["batch"] == [4, 3]
    assert c["last_error"].startswith("OSError")
    assert c["depth"] == 40                   # nothing acknowledged, nothing lost


def test_metering_goes_on_after_a_memory_error(out):
    m = out["metering"]
    # the board's 12 s all metered (the App ends when the board does), every reading of a
    # run without the failure still there (11), and the head-end told of the skipped step
    assert m["result"] == "done" and m["memory_errors"] == 1
    assert m["readings"] == 11
    assert m["notices"] == [["metering steps skipped (heap full)", 1]]


DUMP = runner.ROOT / "host_tests" / "mp_scripts" / "heap_dump_check.py"


def test_heap_dump_only_when_asked(interpreter):
    """The debug hook (meter_main --heap-dump) prints MicroPython's heap map at a shrink, where
    mem_info exists; off (the field's default), the shrink prints nothing."""
    on = runner.run(interpreter, DUMP, "on")
    off = runner.run(interpreter, DUMP, "off")
    assert off == "BEFORE\nAFTER 2 1024\n"
    assert on.startswith("BEFORE\n") and on.endswith("AFTER 2 1024\n")
    if interpreter == "cpython":
        assert on == off
    else:
        body = on[len("BEFORE\n"):-len("AFTER 2 1024\n")]
        assert "GC: total:" in body and "GC memory layout" in body
