"""30-minute soaks per transport under the board heap cap (tools/bench/soak.py: the Pico 2 W's
cited free GC heap less the margin): the meter stays up with no MemoryError, answers every
work item, keeps sending readings, and rides out its head-end's (over MQTT the broker's)
restart, and its free heap after a collection (the `read` op's heap.min_free) never falls
below the margin. XMPP and email meters talk to their own server (Prosody; postfix + dovecot),
which is not restarted: there the head-end restarts and the meter's session goes on. The slow
lane: `make soak`, or one transport with `make soak-http`, `soak-https`, `soak-mqtt`,
`soak-xmpp`, `soak-email`; BC_SOAK_S shortens a run."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bench import heap_budget, soak
from lab import mailsite, runner

pytestmark = pytest.mark.slow

SECONDS = int(os.environ.get("BC_SOAK_S", "1800"))
SERVERS = {"xmpp": "prosody", "email": "mail"}     # transports with a server of their own


@pytest.fixture(scope="module")
def sites():
    """Sites made on first use: without Prosody and mail (HTTP, HTTPS, MQTT), or with them."""
    if not runner.available("board"):
        pytest.skip(runner.board_missing_reason())
    made = {}

    def get(servers):
        if servers not in made:
            work = Path(tempfile.mkdtemp(prefix="soak-"))
            made[servers] = heap_budget.Site(work, SECONDS, servers=servers).start()
        return made[servers]

    yield get
    for s in made.values():
        s.stop()


@pytest.mark.parametrize("transport", ["http", "https", "mqtt", "xmpp", "email"])
def test_soak_under_the_heap_cap(sites, transport):
    if transport == "xmpp" and not shutil.which("prosody"):
        pytest.skip("the XMPP soak needs prosody (apt-get install prosody)")
    if transport == "email" and mailsite.missing() is not None:
        pytest.skip("the email soak: %s" % mailsite.missing())
    r = soak.soak(sites(transport in SERVERS), "steady-" + transport, SECONDS)
    print(r)
    assert r["heap_kib"] == soak.CAP_KIB == soak.BOARD_HEAP_KIB - soak.MARGIN_KIB, r
    assert r["alive"] and r["memory_errors"] == 0, r
    assert r["restarted"], r
    assert r["work_done"] >= r["work_sent"] - 1, r  # the one sent across the restart may lapse
    assert r["readings"] >= SECONDS * 0.8, r
    assert r["min_free"] is not None and r["min_free"] >= soak.MARGIN_KIB * 1024, r
    assert r["passed"], r
