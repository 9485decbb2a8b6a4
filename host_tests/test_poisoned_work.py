"""A signed work item the meter cannot process never escapes ops.Dispatcher.handle (issue
13, item 2): args nested deeper than the parser's stack or heap, or too large for it, get a
`rejected` result and the id enters the inbox, so the head-end stops redelivering it. Before,
the exception ended the exchange and the same item came back with every exchange. Runs the
firmware's own fuzz harness (mp_scripts/fuzz_parsers.py, "work" cases) on both interpreters."""

import json

import pytest

from lab import runner

pytestmark = pytest.mark.unit

HARNESS = runner.ROOT / "host_tests" / "mp_scripts" / "fuzz_parsers.py"


def _item(wid, args, op="read"):
    return [{"id": wid, "op": op, "role": "operator", "expires": 4102444800, "from": "op",
             "args": args}, True]


CASES = [
    _item("w-1", "[" * 5000 + "]" * 5000),                         # deeper than CPython's stack
    _item("w-2", '{"a":' * 20000 + "1" + "}" * 20000),             # MicroPython: MemoryError
    _item("w-3", json.dumps({"to": "m", "op": "read", "args": [[[[[[[[1]]]]]]]]}), op="send"),
    _item("w-4", '{"pad": "%s"}' % ("x" * 100000)),                # large, but it parses
]


def test_poisoned_items_get_a_result_and_the_meter_carries_on(interpreter, tmp_path):
    lines = "".join(json.dumps(["work", c]) + "\n" for c in CASES).encode()
    out = runner.records(runner.run(interpreter, HARNESS, str(tmp_path), stdin=lines,
                                    timeout=120))
    assert out == ["ok"] * len(CASES), out
