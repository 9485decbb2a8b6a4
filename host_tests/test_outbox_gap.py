"""The email campaign 1 finding (docs/reliability.md, "five readings lost behind later ones")
replayed on the outbox alone: lives with `hold` 5 and campaign-sized readings (~740 bytes,
8 KiB segments, 4 KiB requests), a presence at each start, the newest record torn at a kill
(faults.ledger.tear), the damage notice at the next start, and acks computed as the
head-end does (headend/ingest.advance_ack: from the request's lowest seq, contiguous). The
oracle: every request starts at the lowest intact unacked record on flash, and no ack ever
covers a record on flash the head-end did not store. Driver-based, on the three
interpreters."""

import json

import pytest
from outbox_helpers import boundaries, ops, segments, seqs_of

pytestmark = pytest.mark.unit

READING = {"pad": "r" * 700}
OPEN = {"hold": 5, "seg_bytes": 8192, "max_bytes": 64 * 1024}


def on_flash(d, acked):
    """Seqs of the intact records above acked, in file order (the campaign's ledger view)."""
    out = []
    for seg in segments(d):
        data = seg.read_bytes()
        pos = 0
        while pos + 11 <= len(data):
            n = int.from_bytes(data[pos + 3:pos + 7], "little")
            if pos + 11 + n > len(data):
                break
            seq = json.loads(data[pos + 7:pos + 7 + n])["seq"]
            if seq > acked:
                out.append(seq)
            pos += 11 + n
    return out


def readings(n):
    return [["append", "reading", READING]] * n


def headend_ack(stored, ack, seqs):
    ack = max(ack, min(seqs) - 1) if seqs else ack
    while ack + 1 in stored:
        ack += 1
    return ack


def tear_newest(d):
    seg = segments(d)[-1]
    data = seg.read_bytes()
    a, b = boundaries(data)[-1]
    seg.write_bytes(data[:a + (b - a) // 2])


def test_torn_tail_after_held_batches_keeps_every_record_in_order(interpreter, tmp_path):
    d = str(tmp_path / "ob")
    stored, ack = set(), 0
    # life 1: a backlog sent and acked, then (offline) two held batches of five readings
    r = ops(interpreter, ["open", d, OPEN], ["append", "presence", {}], *readings(12),
            ["peek", 16, 4096])
    sent = seqs_of(r[-1])
    stored.update(sent)
    ack = headend_ack(stored, ack, sent)
    r = ops(interpreter, ["open", d, OPEN], ["ack", ack], ["append", "presence", {}],
            *readings(10))
    batch = r[3:]
    assert batch[0] > ack
    # lives 2 and 3: a presence each, offline; the third's is torn at its kill
    ops(interpreter, ["open", d, OPEN], ["append", "presence", {}])
    ops(interpreter, ["open", d, OPEN], ["append", "presence", {}])
    tear_newest(d)
    # life 4: the damage is found and reported; then it exchanges until nothing is left
    r = ops(interpreter, ["open", d, OPEN], ["append", "notice", {"what": "damaged"}],
            ["append", "presence", {}])
    assert r[0]["dropped_corrupt"] == 1
    for _ in range(12):
        r = ops(interpreter, ["open", d, OPEN], ["peek", 16, 4096])
        acked = r[0]["acked"]
        flash = on_flash(d, acked)
        sent = seqs_of(r[1])
        assert flash == sorted(flash)
        assert sent == flash[:len(sent)], "request skips records on flash"
        stored.update(sent)
        ack = headend_ack(stored, ack, sent)
        assert all(s in stored for s in flash if s <= ack), "ack covers unstored records"
        ops(interpreter, ["open", d, OPEN], ["ack", ack])
        if not sent:
            break
    assert all(s in stored for s in batch[:10])
