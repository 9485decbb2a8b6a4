"""Short versions of the fault campaigns in tools/faults.py (`make faults` runs the full
ones): meter power loss, corrupted flash, head-end crash, network partitions, each checked
against its ledger. Needs root (network namespaces), iproute2 and nftables; skips saying why
otherwise. BC_FAULTS_SEED picks the fault moments (default 20250105)."""

import os
import random
import sys
import tempfile
import shutil

import pytest

import fw

sys.path.insert(0, str(fw.ROOT / "tools"))
import faults  # noqa: E402

SKIP = faults.why_skip()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
SEED = os.environ.get("BC_FAULTS_SEED", "20250105")


@pytest.fixture(scope="module")
def rig():
    work = tempfile.mkdtemp(prefix="bc-faults-smoke-")
    try:
        with faults.Rig(work, log=lambda *a: None) as r:
            yield r
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("num", sorted(faults.CAMPAIGNS))
def test_campaign_smoke(rig, num, record_property):
    name, fn, _, short = faults.CAMPAIGNS[num]
    rng = random.Random("%s-%d" % (SEED, num))
    try:
        fig = fn(rig, rng, say=lambda *a: None, **short)
    finally:
        for m in rig.meters.values():
            m.kill()
        rig.lab.partition("a", on=False)
        if rig.headend.proc.poll() is not None:
            rig.headend.start()
    assert fig["lost"] == 0 and fig["duplicated"] == 0, fig
    assert fig["faults"] > 0, fig
    record_property("figures", repr(fig))
