"""A signed work item the meter cannot process never escapes ops.Dispatcher.handle (issue
13, item 2): args nested deeper than the parser's stack or heap, or too large for it, get a
`rejected` result, which ends the work at the head-end (it is not delivered again). Before,
the exception ended the exchange and the same item came back with every exchange. Runs the
firmware's own fuzz harness (mp_scripts/fuzz_parsers.py, "work" cases) on both interpreters."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

HARNESS = runner.ROOT / "host_tests" / "mp_scripts" / "fuzz_parsers.py"


def _item(wid, args, op="read"):
    return [{"id": wid, "device": "meter-f", "seq": int(wid[2:]), "op": op, "role": "operator",
             "expires": 4102444800, "from": "op", "args": args}, True]


def _cases(depth, pad):
    return [
        _item("w-1", "[" * depth + "]" * depth),
        _item("w-2", '{"a":' * depth + "1" + "}" * depth),
        _item("w-3", json.dumps({"to": "m", "op": "read", "args": [[[[[[[[1]]]]]]]]}), op="send"),
        _item("w-4", '{"pad": "%s"}' % ("x" * pad)),               # large, but it parses
    ]


# deeper than CPython's stack (RecursionError) and the unix port's heap (MemoryError); the
# board interpreter's 512 KB heap holds less input, and fails sooner
SIZES = {"micropython": (20000, 100000), "cpython": (5000, 100000), "board": (3000, 20000)}


def test_poisoned_items_get_a_result_and_the_meter_carries_on(interpreter, tmp_path):
    cases = _cases(*SIZES[interpreter])
    lines = "".join(json.dumps(["work", c]) + "\n" for c in cases).encode()
    out = runner.records(runner.run(interpreter, HARNESS, str(tmp_path), stdin=lines,
                                    timeout=120))
    assert out == ["ok"] * len(cases), out
