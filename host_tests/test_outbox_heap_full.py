"""A full heap while the outbox writes (docs/performance.md, "Soaks under the cap"): a
MemoryError in the middle of a write leaves the outbox as it was, so the write can be tried
again, every item is still sent, and no segment is listed that has no file. Before the fix a
write that failed after starting a new segment left that segment listed without its file:
every later peek raised ENOENT, so no exchange went out again (the soaks' stalls over HTTPS
and MQTT after a reconnect under a tight heap)."""

import json

import outbox as outbox_mod  # firmware/, on the tests' path (pyproject.toml)
import pytest

pytestmark = pytest.mark.unit


def _fail_encode_at(monkeypatch, n):
    """store.encode raises MemoryError at its n-th call (1-based), once."""
    real = outbox_mod.store.encode
    calls = [0]

    def encode(payload):
        calls[0] += 1
        if calls[0] == n:
            raise MemoryError("memory allocation failed (injected)")
        return real(payload)

    monkeypatch.setattr(outbox_mod.store, "encode", encode)


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_write_that_runs_out_of_heap_changes_nothing(tmp_path, monkeypatch, fail_at):
    ob = outbox_mod.Outbox(str(tmp_path / "ob"), seg_bytes=256, hold=3)
    first = ob.append("event", {"n": 0})
    before = [list(st) for st in ob.segs]
    _fail_encode_at(monkeypatch, fail_at)
    ob.append("reading", {"p": 1.0, "pad": "x" * 150})
    ob.append("reading", {"p": 2.0, "pad": "x" * 150})
    # the third held reading: one write of three records, which runs out of heap (the
    # readings stay held: outbox.append)
    ob.append("reading", {"p": 3.0, "pad": "x" * 150})
    assert [list(st) for st in ob.segs] == before          # nothing half-listed
    for st in ob.segs:
        assert (tmp_path / "ob" / ("%d.seg" % st[0])).exists()
    got = [json.loads(p)["seq"] for p in ob.peek_raw(100, 1 << 20)]  # no ENOENT
    assert got == [first, first + 1, first + 2, first + 3]  # the held ones still held
    ob.flush()                                               # the retry writes them
    ob2 = outbox_mod.Outbox(str(tmp_path / "ob"), seg_bytes=256, hold=3)
    assert [json.loads(p)["seq"] for p in ob2.peek_raw(100, 1 << 20)] == got
