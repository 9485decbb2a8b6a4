"""`backchannel nats-config` (issue 19, item 3; headend/nats_config.py): the three nodes'
configs, the users with the protocol's ACL as NATS permissions, and what it refuses. Where
Debian's nats-server is installed it checks every file it writes (`nats-server -t`)."""

import json
import re
import stat
import subprocess

import pytest

from headend import broker, devices, nats_cluster, nats_config
from headend.db import Database

pytestmark = pytest.mark.unit


@pytest.fixture
def db(tmp_path):
    db = Database(str(tmp_path / "hub.db"))
    for name in ("meter-a", "meter-b", "meter.x"):
        devices.create(db, name)
    return db


def test_three_nodes_with_routes_replicas_and_a_user_per_meter(db, tmp_path):
    d = tmp_path / "nats"
    out = nats_config.write(db, d, ports={"client": 14000, "mqtt": [1883, 1884, 1885]})
    assert out["nodes"] == ["node1", "node2", "node3"] and out["meters"] == 2
    assert out["skipped"] == ["meter.x"]        # NATS refuses '.' in an MQTT topic level
    confs = [(d / ("node%d.conf" % i)).read_text() for i in (1, 2, 3)]
    assert [re.search(r'listen: "127.0.0.1:(\d+)"\nhttp', c).group(1) for c in confs] == \
        ["14000", "14001", "14002"]             # nodes on one host: consecutive ports
    assert 'listen: "127.0.0.1:1884"\n  stream_replicas: 3' in confs[1]
    routes = re.search(r"routes: \[(.*)\]", confs[0]).group(1)
    assert routes == "nats-route://127.0.0.1:6223, nats-route://127.0.0.1:6224"
    users = (d / "users.conf").read_text()
    key_a = devices.key_of(db, db.one("SELECT id, key FROM devices WHERE id = 'meter-a'"))
    line = next(x for x in users.splitlines() if '"meter-a"' in x)
    assert '"%s"' % broker.meter_password(key_a) in line       # mosquitto's password
    assert 'allowed_connection_types: ["MQTT"]' in line
    perms = json.JSONDecoder().raw_decode(line.split("permissions: ", 1)[1])[0]
    assert perms["publish"]["allow"] == ["bc.meter-a.up", "bc.meter-a.presence",
                                         "bc.meter-a.state", "homeassistant.sensor.meter-a.>"]
    assert perms["subscribe"]["allow"] == ["bc.meter-a.down", "homeassistant.status",
                                           "$MQTT.sub.>"]
    assert "meter.x" not in users
    for name in ("users.conf", "nats.json"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    info = nats_config.info(d)
    assert info["servers"] == ["nats://127.0.0.1:%d" % p for p in (14000, 14001, 14002)]
    assert info["user"] == broker.BRIDGE_USER
    # written again (a meter added): the bridge keeps its password
    nats_config.write(db, d, ports={"client": 14000, "mqtt": [1883, 1884, 1885]})
    assert nats_config.info(d)["password"] == info["password"]


def test_fewer_than_three_nodes_and_plain_mqtt_beyond_loopback_are_refused(db, tmp_path):
    with pytest.raises(ValueError, match="3 nodes or more"):
        nats_config.write(db, tmp_path / "n", hosts=["127.0.0.1", "127.0.0.2"])
    with pytest.raises(ValueError, match="plain MQTT"):
        nats_config.write(db, tmp_path / "n", hosts=["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    out = nats_config.write(db, tmp_path / "n", hosts=["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                            insecure_plain=True)
    assert out["servers"] == ["nats://10.0.0.%d:4222" % i for i in (1, 2, 3)]  # one per host
    with pytest.raises(ValueError, match="2 mqtt ports for 3 nodes"):
        nats_config.write(db, tmp_path / "n", ports={"mqtt": [1883, 1884]})


@pytest.mark.skipif(nats_cluster.binary() is None, reason="nats-server is not installed")
def test_nats_server_accepts_every_file_it_writes(db, tmp_path):
    d = tmp_path / "nats"
    nats_config.write(db, d)
    for i in (1, 2, 3):
        p = subprocess.run([nats_cluster.binary(), "-t", "-c", str(d / ("node%d.conf" % i))],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr + p.stdout


@pytest.mark.parametrize("args,message", [
    (["--mqtt-port", "18a3"], "--mqtt-port takes a port or one per node"),
    (["--client-port", "0"], "--client-port: ports are 1 to 65535"),
    (["--node", "127.0.0.1"], "a JetStream cluster needs 3 nodes or more"),
])
def test_nats_config_refuses_in_one_line(db, tmp_path, capsys, args, message):
    from headend.cli import main
    with pytest.raises(SystemExit) as e:
        main(["nats-config", "--db", str(tmp_path / "hub.db"), "--dir", str(tmp_path / "n"),
              *args])
    err = capsys.readouterr().err
    assert e.value.code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_a_key_rotation_rewrites_one_meters_password_and_keeps_the_rest(db, tmp_path):
    """rewrite_users (key_rotation.promote on a NATS cluster): the new key's password for
    that meter only, the other meters' and the bridge's as they were; no node running here,
    so nothing to reload (a node started later reads the file)."""
    d = tmp_path / "nats"
    nats_config.write(db, d)
    before = (d / "users.conf").read_text()
    bridge = nats_config.info(d)["password"]
    key_a = devices.key_of(db, db.one("SELECT id, key FROM devices WHERE id = 'meter-a'"))
    new = "ab" * 32
    with nats_config.users_lock(d):
        assert nats_config.rewrite_users(db, d, {"meter-a": new}) == []
    after = (d / "users.conf").read_text()
    assert broker.meter_password(key_a) in before and broker.meter_password(key_a) not in after
    assert broker.meter_password(new) in after and '"%s"' % bridge in after
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(changed) == 1 and '"meter-a"' in changed[0][1]
    assert stat.S_IMODE((d / "users.conf").stat().st_mode) == 0o600
    (d / "nats.json").unlink()
    with pytest.raises(ValueError, match="nats-config"):
        nats_config.rewrite_users(db, d, {"meter-a": new})


def test_nats_servers_config_load_time_reads_as_unix_time():
    assert nats_config.load_time("2026-12-07T04:04:03.942389854Z") == pytest.approx(
        1796616243.942389854)
    assert nats_config.load_time("2026-12-07T05:04:03+01:00") == 1796616243.0
    assert nats_config.load_time("") is None and nats_config.load_time("yesterday") is None
