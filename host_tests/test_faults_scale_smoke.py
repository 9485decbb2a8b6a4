"""Short versions of fault campaigns 6 and 7 (issue 19, item 4; `make faults` runs the full
ones): kill -9 one of two head-end processes behind HAProxy, and restart PostgreSQL, while a
real meter reports and an operator queues work; 0 lost, 0 duplicated
(tools/faults/scale_campaigns.py). Skips without PostgreSQL or HAProxy."""

import os
import shutil
import tempfile

import pytest

from faults import cli as faults
from faults.scale_campaigns import run_scale, why_skip_scale

SKIP = why_skip_scale()
pytestmark = [pytest.mark.system, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]
SEED = os.environ.get("BC_FAULTS_SEED", "20250105")


def test_worker_kill_and_postgres_restart_lose_and_duplicate_nothing(record_property):
    work = tempfile.mkdtemp(prefix="bc-faults-scale-")
    try:
        results = run_scale(SEED, None, True, work, faults.verdict, say=lambda *a: None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert sorted(results) == [6, 7]
    for num, (ok, fig, _) in results.items():
        assert ok, "campaign %d: %s" % (num, fig)
        assert fig["lost"] == 0 and fig["duplicated"] == 0, fig
        record_property("campaign_%d" % num, fig)
