"""Waveform capture on the meter (issue 14, item 3; firmware/capture.py): a ring of raw
samples frozen when a PQ event starts, 4 cycles before and 8 after by default, uploaded in
chunks through the outbox; the samples are exactly the board's; a capture that cannot fit
in RAM is refused at configuration. On every interpreter."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

SCRIPT = runner.ROOT / "host_tests" / "mp_scripts" / "capture_app.py"
DIPS = runner.ROOT / "tools" / "sim" / "scenarios" / "dips.json"


@pytest.fixture(scope="module", params=runner.INTERPRETERS)
def out(request, tmp_path_factory):
    if not runner.available(request.param):
        pytest.skip(runner.board_missing_reason())
    state = tmp_path_factory.mktemp("capture") / "state"
    return json.loads(runner.run(request.param, SCRIPT, str(DIPS), str(state)))


def test_capture_is_the_boards_samples_around_the_event(out):
    assert out["n"] == 12 * 64                        # 4 + 8 cycles at 64 samples a cycle
    assert out["at"] >= 0 and out["same_i"]           # a contiguous run of what the board gave
    (head, *_) = out["heads"]
    assert head["pre"] == 4 * 64 and head["kind"] == "dip"
    dip = int(3.0 * out["rate"])                      # the scenario's dip starts at 3.0 s
    assert dip <= out["at"] + head["pre"] <= dip + 64   # frozen within a cycle of its start


def test_uploaded_in_chunks_that_say_what_they_are(out):
    heads = out["heads"]
    assert [h["chunk"] for h in heads] == [0, 1, 2] and {h["chunks"] for h in heads} == {3}
    assert [h["first"] for h in heads] == [0, 256, 512]
    assert len({h["event"] for h in heads}) == 1
    assert heads[0]["rate"] == [3200000, 1000] and heads[0]["v_mid"] == 2048


def test_ram_is_bounded_and_a_capture_too_large_is_refused(out):
    assert out["capture_bytes"] == 4 * 768            # two array('H') rings
    assert "needs 38400 bytes of RAM; at most 32768" in out["refused"]
