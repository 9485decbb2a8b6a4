"""The XMPP component connection runs once across `serve --workers 2` (issue 19, item 2;
headend/singleton.py): Prosody accepts one connection per component name, so only the worker
holding the `gateways` lease connects it. When that worker is killed with kill -9 the lease
moves (to the other worker or the restarted one), the new holder connects the component, and
an operator's chat is answered again. Real processes: PostgreSQL, Prosody, haproxy, the
supervisor and its workers, a real XMPP client (slixmpp)."""

import json
import os
import shutil
import signal

import gateways_lease
import pytest

from headend import im_server, lb_server, pg_server
from headend.cli import main
from lab import pki, processes
from lab.processes import free_ports
from lab.xmpp_client import Operator

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("prosody") is None,
                                 reason="prosody is not installed (CI installs it: "
                                        "apt-get install prosody)")]
STARTUP_S = 120
DOMAIN, COMPONENT = "im.test", "fleet.im.test"


def _cli(*argv):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 0, argv


def test_the_component_runs_on_one_worker_and_moves_when_it_dies(tmp_path):
    for reason in (pg_server.missing_reason(), lb_server.missing_reason()):
        if reason:
            pytest.skip(reason)
    pki.init(tmp_path / "pki", hosts=[DOMAIN, COMPONENT], ips=["127.0.0.1"])
    p = pki.paths(tmp_path / "pki")
    ports = dict(zip(("c2s_port", "tls_port", "component_port"), free_ports(3)))
    im = tmp_path / "im"
    _cli("xmpp-config", "--dir", im, "--domain", DOMAIN, "--component", COMPONENT,
         "--certfile", p["server_pem"], "--keyfile", p["server_key"],
         "--c2s-port", ports["c2s_port"], "--tls-port", ports["tls_port"],
         "--component-port", ports["component_port"], "--operator", "alice@im.test=alice")
    _cli("xmpp-account", "--dir", im, "alice@" + DOMAIN, "--password", "alice-pw")
    prosody = im_server.start(im, ports["component_port"])
    cluster = pg_server.temporary(fast=True).start()
    lb_dir = tmp_path / "lb"
    he = processes.Headend(tmp_path, db=cluster.url(), db_key=tmp_path / "hub.key",
                           config=json.loads((im / "headend-xmpp.json").read_text()),
                           extra=["--workers", "2", "--lb-dir", str(lb_dir)])
    alice = None
    try:
        he.add_device("m1")
        he.add_token("alice", "operator")
        he.start(STARTUP_S)
        pid, token = gateways_lease.holder(cluster.url(), lb_dir)
        alice = Operator("alice@" + DOMAIN, "alice-pw", ports["c2s_port"], p["ca_pem"])
        m1 = "m1@" + COMPONENT
        alice.say(m1, "help")
        alice.wait_message(m1, "commands: read", timeout=30)
        os.kill(pid, signal.SIGKILL)
        assert gateways_lease.holder(cluster.url(), lb_dir, after=token)[0] != pid
        # the new holder's component answers (Prosody took its connection: the old one died)
        processes.wait_until(lambda: _asked_and_answered(alice, m1), 60,
                             "the component to answer through the new lease holder")
        assert he.log().count("gateways: this process runs them") == 2, he.log()[-3000:]
    finally:
        if alice is not None:
            alice.close()
        he.kill(signal.SIGTERM)
        pg_server.remove(cluster)
        im_server.stop(prosody)


def _asked_and_answered(alice, m1):
    """One `help` and up to 5 s for its answer (a chat sent before the new component is
    connected gets an error from Prosody, not an answer): True once answered."""
    after = len(alice.messages)
    alice.say(m1, "help")
    try:
        alice.wait_message(m1, "commands: read", timeout=5, after=after)
        return True
    except AssertionError:
        return False
