"""Inbox: dedupe of work by the head-end's work seq across restarts (highest run plus a
window, O(1) memory), `done` bookkeeping, and recovery from a damaged file, on both
interpreters through the driver, and against a plain model (hypothesis, CPython)."""

import tempfile

import pytest
import store  # firmware/, on the tests' path (pyproject.toml)
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from inbox import WINDOW, Inbox
from outbox_helpers import ops

pytestmark = pytest.mark.unit


def test_inbox_dedupe_across_restart(interpreter, tmp_path):
    p = str(tmp_path / "inbox")
    r = ops(interpreter, ["inbox", p], ["add", "w-1", 1], ["add", "w-3", 3], ["check", 3],
            ["check", 2], ["check", 1], ["check", 4])
    assert r[0] == {"damaged": False, "ids": [], "hi": 0}
    assert r[2] == ["w-1", "w-3"]
    assert r[3:] == ["duplicate", "new", "duplicate", "new"]
    r = ops(interpreter, ["inbox", p], ["confirm", ["w-1"]], ["check", 1], ["check", 2],
            ["add", "w-2", 2], ["check", 2], ["add", "w-99", 3 + WINDOW + 1],
            ["check", 3 + WINDOW], ["check", 3], ["check", 2])
    assert r[0] == {"damaged": False, "ids": ["w-1", "w-3"], "hi": 3}
    assert r[1] == ["w-3"] and r[2] == "duplicate" and r[3] == "new"
    assert r[5] == "duplicate"
    assert r[7] == "new" and r[8] == "stale" and r[9] == "stale"   # fell out of the window


@pytest.mark.parametrize("content", [b"BC1\x05\x00\x00\x00hel", b"\xff" * 40,
                                     store.encode(b"[1, 2]"), store.encode(b"{\"ids\": 5}"),
                                     store.encode(b"{\"hi\": -1, \"mask\": 0, \"pending\": []}"),
                                     store.encode(b"not json")])
def test_corrupt_inbox_starts_empty(interpreter, tmp_path, content):
    p = tmp_path / "inbox"
    p.write_bytes(content)
    r = ops(interpreter, ["inbox", str(p)], ["check", 1], ["add", "w-1", 1])
    assert r[0] == {"damaged": True, "ids": [], "hi": 0} and r[1] == "new"
    assert r[2] == ["w-1"]
    r = ops(interpreter, ["inbox", str(p)], ["check", 1])
    assert r[0] == {"damaged": False, "ids": ["w-1"], "hi": 1} and r[1] == "duplicate"


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "confirm", "restart"]),
                          st.lists(st.integers(1, 3 * WINDOW), max_size=3))))
def test_inbox_against_model(plan):
    with tempfile.TemporaryDirectory() as d:
        path = d + "/inbox"
        ib = Inbox(path)
        ran, pending = set(), []
        for op, args in plan:
            wids = ["w-%d" % a for a in args]
            if op == "add":
                for a, w in zip(args, wids):
                    if ib.check(a) == "new":
                        ib.add(w, a)
                        ran.add(a)
                        pending = [p for p in pending if p != w] + [w]
            elif op == "confirm":
                ib.confirm(wids)
                pending = [p for p in pending if p not in wids]
            else:
                ib = Inbox(path)
                assert not ib.damaged
            assert ib.ids() == pending[-64:]
            hi = max(ran, default=0)
            for a in range(1, 3 * WINDOW + 1):
                want = ("new" if a > hi else "duplicate" if a == hi
                        else "stale" if hi - 1 - a >= WINDOW   # ran or not: refused
                        else "duplicate" if a in ran else "new")
                assert ib.check(a) == want, (a, hi)
