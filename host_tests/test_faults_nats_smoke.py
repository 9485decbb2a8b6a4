"""The short version of fault campaign 8 (issue 19, item 3; `make faults` runs the full one):
kill -9 one node of a three-node NATS cluster, twice, while a real meter on MQTT reports and
an operator queues work through two head-end processes whose bridges share the ups; 0 lost,
0 duplicated, both processes answered ups (tools/faults/nats_campaigns.py). In the slow lane
(about 80 s); test_nats_cluster.py is the system lane's quick check of the failover."""

import os
import shutil
import tempfile

import pytest

from faults import cli as faults
from faults.nats_campaigns import run_nats, why_skip_nats

pytestmark = pytest.mark.slow
SEED = os.environ.get("BC_FAULTS_SEED", "20250105")


def test_a_nats_node_killed_under_load_loses_and_duplicates_nothing(record_property):
    reason = why_skip_nats()
    if reason:
        pytest.skip(reason)
    work = tempfile.mkdtemp(prefix="bc-faults-nats-")
    try:
        results = run_nats(SEED, None, True, work, faults.verdict, say=lambda *a: None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok, fig, _ = results[8]
    assert ok, "campaign 8: %s" % fig
    assert fig["lost"] == 0 and fig["duplicated"] == 0, fig
    assert all(fig["ups_answered_per_process"]), fig
    record_property("campaign_8", fig)
