"""Outbox against a plain model, and damaged segment files: hypothesis, the firmware module
in-process under CPython."""

import json
import tempfile

import pytest
from budget import examples
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from outbox import Outbox, OutboxFull  # firmware/, on the tests' path (pyproject.toml)
from outbox_helpers import BIG, boundaries, increasing, segments, seqs_of

pytestmark = pytest.mark.unit

# (op, kind, size, n, limit): op < 12 appends, < 16 acks, < 18 peeks, else restarts
OPS = st.lists(st.tuples(st.integers(0, 19),
                         st.sampled_from(["reading", "reading", "event", "result"]),
                         st.integers(0, 40), st.integers(0, 6), st.integers(0, 300)),
               min_size=5, max_size=100)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=examples(150), deadline=None)
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
