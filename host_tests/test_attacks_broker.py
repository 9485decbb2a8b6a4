"""Attacks on the MQTT broker's identity (issue 12, head-end side; docs/security.md
"Threats"), against the real mosquitto the project configures and starts (broker.write,
broker.start), with paho clients as the attacker's and the victim's:

- meter-b, logged in with its own credentials, connects with meter-a's client id: it used
  to take over meter-a's session, cutting meter-a off and, with a clean session, throwing
  away the work queued for it (use_username_as_clientid prevents both);
- a registering token adds the device `meter-a:hunter2`, the admin runs broker-config as
  usual, and the attacker logs in as meter-a with password `hunter2`."""

import json
import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from headend_harness import Headend

from headend import broker, devices
from lab.processes import free_port

pytestmark = pytest.mark.system

try:
    broker.find("mosquitto")
    broker.find("mosquitto_passwd")
    NO_BROKER = None
except broker.BrokerError as e:
    NO_BROKER = str(e)


class Site:
    """A head-end database with meters, the broker files written from it, mosquitto."""

    def __init__(self, tmp_path, meters=("meter-a", "meter-b")):
        if NO_BROKER:
            pytest.skip(NO_BROKER)
        self.he = Headend(tmp_path)
        self.keys = {m: devices.create(self.he.hub.db, m) for m in meters}
        self.dir = tmp_path / "broker"
        self.port = free_port()
        self.write()
        self.proc = broker.start(self.dir)
        self.clients = []

    def write(self):
        return broker.write(self.he.hub.db, self.dir, port=self.port)

    def password(self, device):
        return broker.meter_password(self.keys[device])

    def connect(self, user, password, client_id, clean_session=False, subscribe=None):
        """A paho client: (client, CONNACK reason code, received messages queue,
        disconnected event). subscribe: a topic to subscribe to at QoS 1 once connected."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=clean_session, protocol=mqtt.MQTTv311)
        c.username_pw_set(user, password)
        got, connack, subscribed = queue.Queue(), [], threading.Event()
        connected, gone = threading.Event(), threading.Event()

        def on_connect(client, userdata, flags, rc, props):
            connack.append(rc)
            connected.set()
            if rc.is_failure:
                client.disconnect()
            elif subscribe:
                client.subscribe(subscribe, qos=1)
            else:
                subscribed.set()

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = lambda client, userdata, msg: got.put(msg.payload)
        c.on_disconnect = lambda *a: gone.set()
        c.reconnect_delay_set(30, 60)       # a cut-off victim must not come back by itself
        c.connect("127.0.0.1", self.port, keepalive=30)
        c.loop_start()
        self.clients.append(c)
        assert connected.wait(10), "no CONNACK for %s" % user
        if not connack[0].is_failure:
            assert subscribed.wait(10), "no SUBACK for %s" % user
        return c, connack[0], got, gone

    def bridge(self):
        creds = broker.bridge_credentials(self.dir)
        return self.connect(creds["user"], creds["password"], "backchannel-headend",
                            clean_session=True)[0]

    def close(self):
        for c in self.clients:
            c.loop_stop()
            c.disconnect()
        broker.stop(self.proc)


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def down(site, device, work_id):
    info = site.bridge().publish("bc/%s/down" % device, json.dumps({"work": work_id}), qos=1)
    info.wait_for_publish(10)


def test_another_meters_client_id_does_not_cut_it_off(site):
    a, rc, got, a_gone = site.connect("meter-a", site.password("meter-a"), "meter-a",
                                      subscribe="bc/meter-a/down")
    assert not rc.is_failure
    # the attacker: meter-b's own login, meter-a's client id
    b, rc, b_got, _ = site.connect("meter-b", site.password("meter-b"), "meter-a",
                                   clean_session=True)
    assert not rc.is_failure
    assert not a_gone.wait(1.5), "meter-b's login with client id meter-a cut meter-a off"
    down(site, "meter-a", "w-1")
    assert json.loads(got.get(timeout=10)) == {"work": "w-1"}
    assert b_got.empty()


def test_another_meters_client_id_does_not_wipe_its_queued_work(site):
    a, rc, got, _ = site.connect("meter-a", site.password("meter-a"), "meter-a",
                                 subscribe="bc/meter-a/down")
    a.disconnect()                  # offline: its persistent session holds its work
    a.loop_stop()
    down(site, "meter-a", "w-queued")
    # the attacker connects with a clean session under meter-a's client id, then leaves
    b, rc, _, _ = site.connect("meter-b", site.password("meter-b"), "meter-a",
                               clean_session=True)
    assert not rc.is_failure
    b.disconnect()
    b.loop_stop()
    time.sleep(0.3)
    a, rc, got, _ = site.connect("meter-a", site.password("meter-a"), "meter-a")
    assert not rc.is_failure
    assert json.loads(got.get(timeout=10)) == {"work": "w-queued"}, "queued work was lost"


def test_colon_device_id_cannot_add_a_second_password(site):
    with TestClient(site.he.app) as c:
        for token in (site.he.admin_token, site.he.util_token, site.he.op_token):
            r = c.post("/v1/devices", headers={"Authorization": "Bearer %s" % token},
                       json={"id": "meter-a:hunter2"})
            assert r.status_code in (403, 422), r.text
    site.write()                    # the admin's routine broker-config after registering
    lines = (site.dir / broker.PASSWD).read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines].count("meter-a") == 1
    _, rc, _, _ = site.connect("meter-a", "hunter2", "attacker")
    assert rc.is_failure, "logged in as meter-a with the smuggled password"
    _, rc, _, _ = site.connect("meter-a", site.password("meter-a"), "meter-a")
    assert not rc.is_failure


def test_broker_listens_on_its_loopback_listener_alone(site):
    """No other listener: a listener option written before the first `listener` line makes
    mosquitto open its default listener, port 1883 on every address."""
    conf = (site.dir / broker.CONF).read_text()
    assert "\nlistener %d 127.0.0.1\n" % site.port in conf
    opened = [ln for ln in (site.dir / "mosquitto.log").read_text().splitlines()
              if "listen socket on port" in ln]
    assert opened and all(ln.endswith("port %d." % site.port) for ln in opened), opened
