"""Outbox under power loss: a cut (an exception) before each segment removal, in-process
under CPython; kill -9 of a MicroPython process appending in a loop."""

import json
import os
import random
import subprocess
import time
from types import SimpleNamespace

import pytest
from outbox import Outbox  # firmware/, on the tests' path (pyproject.toml)
from outbox_helpers import BIG, MP_SCRIPTS, increasing, seqs_of

from lab import runner

pytestmark = pytest.mark.system


class PowerCut(Exception):
    pass


def test_power_cut_before_any_segment_removal(tmp_path, monkeypatch):
    """Cut the power (raise) just before each segment file removal an append or ack makes,
    then restart: no duplicates, nothing but readings lost, the counters match the files."""
    import outbox
    import outbox_segments
    armed = [False]

    def remove(path):
        if armed[0] and path.endswith(".seg"):
            raise PowerCut(path)
        os.remove(path)

    cut_os = SimpleNamespace(remove=remove, rename=os.rename, listdir=os.listdir,
                             mkdir=os.mkdir, stat=os.stat)
    for module in (outbox, outbox_segments):    # the queue and its segment files
        monkeypatch.setattr(module, "os", cut_os)
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


# ---- kill -9 of a MicroPython process appending in a loop --------------------------------

@pytest.mark.parametrize("max_bytes", [BIG, 600], ids=["no_overflow", "overflow"])
def test_kill9_never_reuses_seq(tmp_path, max_bytes):
    d = str(tmp_path / "ob")
    cmd, env = runner.command("micropython", MP_SCRIPTS / "outbox_loop.py", d, str(max_bytes))
    rng = random.Random(20240611 + max_bytes % 7)
    issued = {}                     # seq -> kind, for every seq append returned (or found)
    kills = 0
    for rnd in range(31):
        last_run = rnd == 30
        p = subprocess.Popen(cmd + (["check"] if last_run else []), env=env,
                             stdout=subprocess.PIPE)
        first = b""
        if not last_run:
            # killed a random time after its start-up (the recovered state, its first line),
            # so a loaded machine's slower start-up leaves the appending time as it is
            first = p.stdout.readline()
            time.sleep(rng.uniform(0.005, 0.09))
            p.kill()
            kills += 1
        out = (first + p.communicate(timeout=30)[0]).decode()
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
