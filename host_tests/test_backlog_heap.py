"""A backlog drained in a fragmented heap (issue 11, the 30-minute HTTP soaks): comms sends
the request in pieces, the outbox's JSON records spliced in as they are stored
(outbox.peek_raw, enc_json.parts), so no exchange needs a block the size of its batch.

On the board interpreter from .mpy, under a 144 KiB cap with the heap cut into small holes,
a backlog of 64 readings drains in two full batches with no MemoryError. Before the splice
(every item parsed into a dict, the request serialised, encoded and joined with its head:
four blocks of about 16 KB) the same run raised MemoryError and shrank its batch at every
cap up to 320 KiB (test_encode_parts.py: every encoding's pieces spell what its encode()
spells, and sign alike)."""

import json
import os
import subprocess

import pytest

from bench import heap_budget
from lab import runner

BACKLOG = runner.ROOT / "host_tests" / "mp_scripts" / "backlog_exchange.py"
CAP_KIB = 144       # the new code passes from 120 KiB; the old one failed up to 320 KiB


@pytest.fixture
def board_mpy(monkeypatch):
    if not runner.available("board"):
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + runner.board_missing_reason())
        pytest.skip(runner.board_missing_reason())
    monkeypatch.setenv("BC_FIRMWARE_MPY", "1")


pytestmark = pytest.mark.system


def test_backlog_drains_in_full_batches_in_a_fragmented_heap(board_mpy, tmp_path):
    cmd, env = heap_budget.board_cmd(CAP_KIB, BACKLOG, tmp_path)
    assert str(runner.mpy_tree()) in env["MICROPYPATH"]    # from .mpy, as deployed
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stdout.decode(errors="replace")[-2000:]
    out = json.loads(p.stdout.decode().splitlines()[-1])
    assert out["holes"] > 50                        # the heap was cut up
    assert out["memory_errors"] == 0, (out, p.stderr.decode(errors="replace")[-2000:])
    assert out["depth"] == 0 and out["exchanges"] == 2, out   # 32 items each: never shrunk
    assert out["first_bytes"] > 15000, out
