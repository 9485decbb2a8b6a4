"""Short versions of the fault campaigns in tools/faults/cli.py (`make faults` runs the full
ones): meter power loss, corrupted flash, head-end crash, network partitions, each checked
against its ledger; the head-end crash and partitions also with the meter on MQTT. Needs
root (network namespaces), iproute2 and nftables (and mosquitto for MQTT); skips saying why
otherwise. BC_FAULTS_SEED picks the fault moments (default 20250105)."""

import os
import random
import shutil
import tempfile

import pytest

from faults import cli as faults

SKIP = faults.why_skip()
pytestmark = [pytest.mark.root, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]
SEED = os.environ.get("BC_FAULTS_SEED", "20250105")


def _rig(transport):
    work = tempfile.mkdtemp(prefix="bc-faults-smoke-")
    try:
        with faults.Rig(work, log=lambda *a: None, transport=transport) as r:
            yield r
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def rig():
    yield from _rig("http")


@pytest.fixture(scope="module")
def mqtt_rig():
    reason = faults.why_skip("mqtt")
    if reason:
        pytest.skip(reason)
    yield from _rig("mqtt")


@pytest.mark.parametrize("num", sorted(faults.CAMPAIGNS))
def test_campaign_smoke(rig, num, record_property):
    run_smoke(rig, num, record_property)


@pytest.mark.parametrize("num", [3, 4])
def test_campaign_smoke_over_mqtt(mqtt_rig, num, record_property):
    run_smoke(mqtt_rig, num, record_property)


def run_smoke(rig, num, record_property):
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
    faults.verdict(rig, fig)         # the transport, and registers never decrease
    assert fig["register_values_checked"] > 0, fig
    record_property("figures", repr(fig))
