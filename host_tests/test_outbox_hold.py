"""Held readings (flash life, docs/reliability.md "Flash life"): with hold > 1 the outbox keeps
readings in RAM, sends them like any item, writes `hold` of them in one append, and never
writes a reading (or `acked`) the head-end stored first. What a power cut costs: the held
readings not yet stored, at most `hold`, never an event or a result, never a reused seq."""

import pytest
from outbox_helpers import BIG, ops, segments, seqs_of

from lab import runner

pytestmark = pytest.mark.unit


def test_held_readings_are_sent_and_acked_without_a_write(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"hold": 4}], ["append_n", "reading", 3],
            ["peek", 10, BIG], ["ack", 3], ["stats"])
    assert r[1] == [1, 2, 3] and seqs_of(r[2]) == [1, 2, 3]     # sent from RAM, in order
    assert r[4]["depth"] == 0 and r[4]["appends"] == 0
    assert not segments(d) and not (tmp_path / "ob" / "acked").exists()
    # the next boot continues above them (the seq ceiling is on flash)
    r = ops(interpreter, ["open", d, {"hold": 4}], ["append", "event", {}])
    assert r[0]["next"] > 3 and r[1] > 3


def test_hold_readings_make_one_append_and_other_kinds_go_at_once(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"hold": 4}], ["append_n", "reading", 4], ["stats"],
            ["append_n", "reading", 2], ["append", "event", {"kind": "dip"}], ["stats"],
            ["peek", 100, BIG])
    assert r[2]["appends"] == 1 and r[2]["depth"] == 4          # 4 readings, one write
    assert r[5]["appends"] == 2 and r[5]["depth"] == 7          # 2 held + the event: one write
    assert seqs_of(r[6]) == list(range(1, 8))
    # all on flash: a new boot (a power cut now) finds every one of them
    r = ops(interpreter, ["open", d, {"hold": 4}], ["peek", 100, BIG])
    assert seqs_of(r[1]) == list(range(1, 8))


def test_a_power_cut_loses_only_the_held_readings(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"hold": 6}], ["append", "result", {"work": "w-1"}],
            ["append_n", "reading", 5], ["stats"])
    assert r[3]["depth"] == 6 and r[3]["appends"] == 1
    # the process ends here without a flush: what a power cut leaves
    r = ops(interpreter, ["open", d, {"hold": 6}], ["peek", 100, BIG],
            ["append", "reading", {}], ["flush"], ["peek", 100, BIG])
    assert [it["kind"] for it in r[1]] == ["result"]             # the result survived
    assert r[2] > 6                                             # no seq reused
    assert seqs_of(r[4]) == [1, r[2]]


def test_flush_writes_what_is_held_and_a_clean_restart_keeps_it(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"hold": 16}], ["append_n", "reading", 5], ["flush"],
            ["flush"], ["ack", 2], ["stats"])
    assert r[2] == 1 and r[3] == 1                              # once, then nothing to do
    assert r[4]["depth"] == 3 and (tmp_path / "ob" / "acked").exists()
    r = ops(interpreter, ["open", d, {"hold": 16}], ["peek", 100, BIG])
    assert seqs_of(r[1]) == [3, 4, 5]


def test_held_readings_respect_the_batch_limits(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"hold": 8}], ["append_n", "reading", 2],
            ["append", "event", {}], ["append_n", "reading", 3], ["peek", 4, BIG],
            ["peek", 100, 1])
    assert seqs_of(r[4]) == [1, 2, 3, 4]                        # flash first, then RAM
    assert seqs_of(r[5]) == [1]                                 # always the oldest one


def test_the_app_holds_persist_s_of_readings():
    live = runner.import_firmware("live_config")
    config = runner.import_firmware("config")
    assert live.outbox_hold(config.DEFAULTS) == 6               # 60 s / 10 s
    assert live.outbox_hold(dict(config.DEFAULTS, persist_s=5, report_s=10)) == 1
    assert live.outbox_hold(dict(config.DEFAULTS, persist_s=3600, report_s=1)) == live.HOLD_MAX


def test_held_readings_never_exceed_hold_bytes_in_ram(interpreter, tmp_path):
    """A short report_s makes `hold` large (60 at report_s 1): the bytes held in RAM stay
    bounded all the same (the soak found 60 held readings exhausting a board's heap)."""
    d = str(tmp_path / "ob")
    pad = "x" * 200                                  # a ~230-byte record
    steps = [["open", d, {"hold": 60, "hold_bytes": 1000}]]
    steps += [["append", "reading", {"pad": pad}] for _ in range(10)] + [["stats"]]
    r = ops(interpreter, *steps)
    assert r[-1]["appends"] == 2 and r[-1]["depth"] == 10     # written 5 at a time
    r = ops(interpreter, ["open", d, {"hold": 60}], ["peek", 100, BIG])
    assert seqs_of(r[1]) == list(range(1, 11))                 # all of them on flash
