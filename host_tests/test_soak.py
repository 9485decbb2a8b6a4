"""30-minute soaks per transport under the board heap cap (tools/bench/soak.py): the meter
stays up with no MemoryError, answers every work item, keeps sending readings, and
reconnects after its head-end (or broker) restarts, and its free heap after a collection (the
`read` op's heap.min_free) never falls below the margin. The slow lane: `make soak`, or one
transport with `make soak-http`, `soak-https`, `soak-mqtt`; BC_SOAK_S shortens a run."""

import os
import tempfile
from pathlib import Path

import pytest

from bench import heap_budget, soak
from lab import runner

pytestmark = pytest.mark.slow

SECONDS = int(os.environ.get("BC_SOAK_S", "1800"))


@pytest.fixture(scope="module")
def site():
    if not runner.available("board"):
        pytest.skip(runner.board_missing_reason())
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    s = heap_budget.Site(work, SECONDS, servers=False).start()     # no Prosody, no mail
    yield s
    s.stop()


@pytest.mark.parametrize("transport", ["http", "https", "mqtt"])
def test_soak_under_the_heap_cap(site, transport):
    r = soak.soak(site, "steady-" + transport, SECONDS)
    print(r)
    assert r["alive"] and r["memory_errors"] == 0, r
    assert r["restarted"], r
    assert r["work_done"] >= r["work_sent"] - 1, r  # the one sent across the restart may lapse
    assert r["readings"] >= SECONDS * 0.8, r
    assert r["min_free"] is not None and r["min_free"] >= soak.MARGIN_KIB * 1024, r
    assert r["passed"], r
