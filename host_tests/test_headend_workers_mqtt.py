"""The MQTT bridge runs once across `serve --workers 2` (issue 19, item 2; headend/singleton.py):
the worker holding the `gateways` lease runs it, and when that worker is killed with kill -9
the lease, and the bridge, move (to the other worker or to the restarted one), and a real
MQTT meter's work is done before and after. Real processes: PostgreSQL, mosquitto, haproxy,
the supervisor and its workers, a MicroPython meter."""

import os
import signal

import gateways_lease
import pytest

from headend import lb_server, pg_server
from lab import processes

pytestmark = pytest.mark.system
STARTUP_S = 120


def test_the_bridge_runs_on_one_worker_and_moves_when_it_dies(tmp_path, monkeypatch):
    from headend import broker as broker_mod
    for reason in (pg_server.missing_reason(), lb_server.missing_reason()):
        if reason:
            pytest.skip(reason)
    try:
        broker_mod.find("mosquitto")
    except broker_mod.BrokerError as e:
        pytest.skip(str(e))
    key = tmp_path / "hub.key"
    monkeypatch.setenv("BACKCHANNEL_DB_KEY", str(key))     # broker-config reads the registry
    cluster = pg_server.temporary(fast=True).start()
    lb_dir = tmp_path / "lb"
    he = processes.Headend(tmp_path, db=cluster.url(), db_key=key,
                           extra=["--workers", "2", "--lb-dir", str(lb_dir)])
    broker = meter = None
    try:
        device_key = he.add_device("meter-m")
        api = he.api(he.add_token("alice", "operator"))
        broker = processes.Broker(tmp_path, cluster.url())
        broker.start()
        he.extra += broker.serve_args()
        he.start(STARTUP_S)
        pid, token = gateways_lease.holder(cluster.url(), lb_dir)
        meter = processes.Meter(tmp_path, "meter-m", device_key, "",
                                **broker.meter_settings()).start()
        assert processes.run_work(api, "meter-m", "read", timeout=90)["status"] == "done"
        os.kill(pid, signal.SIGKILL)
        assert gateways_lease.holder(cluster.url(), lb_dir, after=token)[0] != pid
        assert processes.run_work(api, "meter-m", "read", timeout=120)["status"] == "done"
        # one bridge at a time: the gateways log says so once per lease taken
        assert he.log().count("gateways: this process runs them") == 2, he.log()[-3000:]
    finally:
        if meter is not None:
            meter.kill()
        he.kill(signal.SIGTERM)
        if broker is not None:
            broker.stop()
        pg_server.remove(cluster)
