"""Shared by the outbox and inbox tests (test_outbox*.py, test_inbox.py): the firmware's
outbox and inbox modules driven through mp_scripts/outbox_ops.py (one process per "boot"),
and reading segment files record by record."""

import json
import struct
from pathlib import Path

from lab import runner

MP_SCRIPTS = Path(__file__).resolve().parent / "mp_scripts"
BIG = 10 ** 9


def ops(interpreter, *operations):
    out = runner.run(interpreter, MP_SCRIPTS / "outbox_ops.py",
                     stdin=json.dumps(operations).encode())
    return runner.records(out)


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
