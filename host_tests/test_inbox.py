"""Inbox: dedupe of work ids across restarts and recovery from a damaged file, on both
interpreters through the driver, and against a plain model (hypothesis, CPython)."""

import tempfile

import pytest
import store  # firmware/, on the tests' path (pyproject.toml)
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from inbox import Inbox
from outbox_helpers import ops

pytestmark = pytest.mark.unit


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


@settings(max_examples=examples(100), deadline=None)
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
