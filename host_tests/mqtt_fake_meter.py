"""A CPython fake meter on the MQTT transport (docs/protocol.md "MQTT transport"), for the
head-end tests. Like headend_fake_meter (whose outbox, inbox and signature helpers it
shares), it uses no head-end code: it signs `<sig> <JSON>` on bc/<id>/up itself, checks the
signature of every `bc/<id>/down` and of every work item, derives its broker password from
its key, and sets the Last Will the protocol prescribes."""

import json
import queue
import secrets
import threading
import time

import paho.mqtt.client as mqtt
from headend_fake_meter import FakeMeter, bound, hmac_hex, work_sig

WILL = {"state": "unavailable", "note": "connection lost"}


def _typed(v):
    if isinstance(v, str):
        return b"s%d:%s" % (len(v.encode()), v.encode())
    return b"i%d" % v


def presence_payload(key_hex, device, conn, n, state, note=""):
    """Signed presence (docs/protocol.md "Signed presence"), computed as the meter does."""
    msg = b"|".join((b"bc-presence-2", _typed(device), _typed(conn), _typed(n),
                     _typed(state), _typed(note)))
    return json.dumps({"state": state, "note": note, "device": device, "conn": conn, "n": n,
                       "sig": hmac_hex(key_hex, msg)}).encode()


def up_payload(key_hex, envelope=None, raw=None):
    raw = raw if raw is not None else json.dumps(envelope).encode()
    return hmac_hex(key_hex, raw).encode() + b" " + raw


class MqttFakeMeter(FakeMeter):
    def __init__(self, host, port, device, key, cafile=None, first_seq=1, stated="available"):
        super().__init__(None, device, key, first_seq)
        self.host, self.port, self.cafile = host, port, cafile
        self.stated = stated              # published (retained) on bc/<id>/presence on connect
        self.downs = queue.Queue()        # verified responses, work args parsed
        self.earlier = []                 # responses that came before an exchange() began
        self.bad = []                     # downs whose signatures failed
        self.client = None
        self.connack = None
        self._subacks = {}                # packet id -> SUBACK reason code
        self._suback = threading.Condition()
        self._down_mid = None
        self._lock = threading.Lock()
        self.conn = secrets.token_hex(8)  # this connection's nonce (v2): pushes are bound to it
        self.sent = set()                 # nonces of the ups sent on this connection
        self.unbound = []                 # signed downs bound to no request or connection

    # --- connection ---
    @property
    def password(self):
        return hmac_hex(self.key, b"mqtt-password")

    def connect(self, password=None, timeout=5.0, expect_ok=True):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.device,
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.username_pw_set(self.device, password or self.password)
        self.conn = secrets.token_hex(8)
        self.presence_n = 0
        c.will_set("bc/%s/presence" % self.device, self.presence(**WILL, n=0), qos=1,
                   retain=True)
        if self.cafile:
            c.tls_set(ca_certs=self.cafile)
        connected = threading.Event()
        self._down_mid = None

        def on_connect(client, userdata, flags, rc, props):
            self.connack = rc
            connected.set()
            if rc.is_failure:
                client.disconnect()      # no retries with bad credentials
                return
            self._down_mid = client.subscribe("bc/%s/down" % self.device, qos=1)[1]
            if self.stated:
                self.state(self.stated)

        c.on_connect = on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        self.sent = set()
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        assert connected.wait(timeout), "no CONNACK"
        if expect_ok:
            assert not self.connack.is_failure, "connection refused: %s" % self.connack
            self._wait_suback(lambda: self._down_mid, timeout)
        return self.connack

    def presence(self, state, note="", n=None):
        """A signed presence message of this connection (n: the next statement's)."""
        if n is None:
            self.presence_n += 1
            n = self.presence_n
        return presence_payload(self.key, self.device, self.conn, n, state, note)

    def state(self, state, note=""):
        """State presence on bc/<id>/presence, signed and retained, as a meter does."""
        self.client.publish("bc/%s/presence" % self.device, self.presence(state, note),
                            qos=1, retain=True)

    def _on_subscribe(self, client, userdata, mid, reason_codes, props):
        with self._suback:
            self._subacks[mid] = reason_codes[0]
            self._suback.notify_all()

    def _wait_suback(self, mid, timeout):
        with self._suback:
            assert self._suback.wait_for(lambda: mid() in self._subacks, timeout), "no SUBACK"
            return self._subacks[mid()]

    def subscribe(self, topic, timeout=5.0):
        """Subscribe to another topic; returns the SUBACK reason code."""
        mid = self.client.subscribe(topic, qos=1)[1]
        return self._wait_suback(lambda: mid, timeout)

    def disconnect(self):
        """A clean disconnect: the broker drops the Last Will."""
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def kill(self):
        """Drop the connection without DISCONNECT (power cut, network loss): the broker
        publishes the Last Will."""
        if self.client is not None:
            sock = self.client.socket()
            self.client.loop_stop()
            if sock is not None:
                sock.close()
            self.client = None

    # --- wire ---
    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(5)
        return info

    def _on_message(self, client, userdata, msg):
        if msg.topic != "bc/%s/down" % self.device:
            self.downs.put(("foreign", msg.topic, msg.payload))
            return
        sig, sep, raw = msg.payload.partition(b" ")
        if not sep or sig.decode("latin-1") != hmac_hex(self.key, raw):
            self.bad.append(msg.payload)
            return
        body = json.loads(raw)
        if "error" in body:               # a signed refusal (the time refusal)
            self.downs.put(body)
            return
        if not bound(body, self.device, body.get("re") if body.get("re") in self.sent else None,
                     self.conn):
            self.unbound.append(body)
            return
        for w in body["work"]:
            if w["sig"] != work_sig(self.key, w):
                self.bad.append(msg.payload)
                return
            w["args"] = json.loads(w["args"])
        with self._lock:
            self.outbox = [i for i in self.outbox if i["seq"] > body["ack"]]
        body["_received"] = time.monotonic()
        self.downs.put(body)

    def next_down(self, timeout=5.0):
        """The next response (an answer or a push), verified."""
        body = self.downs.get(timeout=timeout)
        assert not isinstance(body, tuple), "message on a foreign topic: %r" % (body,)
        self.last = body
        return body

    def no_down(self, wait=0.5):
        """True if nothing arrives within `wait` seconds."""
        try:
            body = self.downs.get(timeout=wait)
        except queue.Empty:
            return True
        self.downs.put(body)
        return False

    def up(self, room=4, **kw):
        """Publish a signed request on bc/<id>/up (wait 0); returns the envelope."""
        with self._lock:
            env = self.envelope(wait=0, room=room, **kw)
            env.setdefault("conn", self.conn)
            self.sent.add(env["nonce"])
        self.publish("bc/%s/up" % self.device, up_payload(self.key, env))
        return env

    def exchange(self, wait=0, room=4, timeout=5.0, **kw):
        """One exchange over MQTT: publish up, return the next response."""
        while True:
            try:
                self.earlier.append(self.downs.get_nowait())
            except queue.Empty:
                break
        self.up(room=room, **kw)
        body = self.next_down(timeout)
        self.done = []
        return body
