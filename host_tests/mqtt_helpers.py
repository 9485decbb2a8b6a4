"""Processes for the MQTT tests: a real mosquitto with a password file and the protocol's ACL,
a fake head-end on paho-mqtt that answers `up` with signed `down`s and pushes work, and the
firmware (MicroPython unix port, simulated board) as a meter speaking MQTT."""

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from headend_fake_meter import work_message

from lab import runner
from lab.processes import free_ports, wait_until  # noqa: F401  (used here and by the tests)
from sim import METER_MAIN

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
HEADEND_USER = "headend"

# docs/protocol.md, MQTT transport, ACL (%u: the user name, which is the meter's id)
ACL = """\
pattern write bc/%u/up
pattern write bc/%u/presence
pattern write bc/%u/state
pattern write homeassistant/sensor/%u/#
pattern read bc/%u/down
pattern read homeassistant/status

user headend
topic readwrite bc/#
topic readwrite homeassistant/#
"""


def mqtt_password(key_hex):
    """What a meter logs in with: hex(HMAC-SHA256(key, "mqtt-password"))."""
    return hmac.new(bytes.fromhex(key_hex), b"mqtt-password", hashlib.sha256).hexdigest()


def sign(key_hex, data):
    return hmac.new(bytes.fromhex(key_hex), data, hashlib.sha256).hexdigest()


class Broker:
    """mosquitto on 127.0.0.1: a plain listener and, with certs (certfile, keyfile), a TLS
    one; users {name: password}; the ACL above."""

    def __init__(self, workdir, users, certs=None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users)
        self.port, self.tls_port = free_ports(2)
        self.tls_port = self.tls_port if certs else None
        self.certs = certs
        self.proc = None

    def start(self):
        passwd = self.dir / "passwd"
        passwd.write_text("".join("%s:%s\n" % kv for kv in self.users.items()))
        subprocess.run([MOSQUITTO_PASSWD, "-U", str(passwd)], check=True, timeout=30,
                       capture_output=True)
        (self.dir / "acl").write_text(ACL)
        conf = ["per_listener_settings false", "allow_anonymous false",
                "password_file %s" % passwd, "acl_file %s" % (self.dir / "acl"),
                "persistence false", "set_tcp_nodelay true", "log_dest stderr", "log_type error",
                "log_type warning", "log_type notice", "log_type information",
                "listener %d 127.0.0.1" % self.port]
        if self.certs:
            conf += ["listener %d 127.0.0.1" % self.tls_port,
                     "certfile %s" % self.certs[0], "keyfile %s" % self.certs[1]]
        if os.geteuid() == 0:
            conf.append("user root")  # else it drops to `mosquitto`, who cannot read tmp
        (self.dir / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        log = open(self.dir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._listening, 10, "mosquitto to listen")
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("mosquitto exited:\n" + self.log())
        for port in filter(None, (self.port, self.tls_port)):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return True

    def log(self):
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


def client(port, user, password, client_id=None, clean_session=True):
    """A connected paho client with its network loop running in its own thread."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                    clean_session=clean_session)
    c.username_pw_set(user, password)
    connected = threading.Event()
    c.on_connect = lambda cl, ud, flags, rc, props: connected.set() if rc == 0 else None
    c.connect("127.0.0.1", port, keepalive=30)
    # paho leaves Nagle on: its PUBACK then a publish, back to back, wait for the broker's
    # delayed ACK (~40 ms), which would blur what the round-trip test measures
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.loop_start()
    if not connected.wait(10):
        c.loop_stop()
        raise AssertionError("paho client %s did not connect" % user)
    return c


class FakeHeadend:
    """Answers every signed `up` with a signed `down` (ack = the highest seq it stored, no
    work) and pushes work on `down` when told to. Records what meters sent."""

    def __init__(self, port, password, keys, next_s=30):
        self.keys = dict(keys)      # device: hex key
        self.next_s = next_s
        self.answering = True
        self.lock = threading.Lock()
        self.ups = {}               # device: [(monotonic, body)]
        self.items = {}             # device: {seq: item}
        self.messages = []          # (monotonic, topic, payload, retain)
        self.answered = {}          # device: count of answers
        self.bad = []
        self.latest = {}            # device: its latest up (v2: answers are bound to it)
        self.work_seq = {}          # device: the last work seq signed for it
        self.c = client(port, HEADEND_USER, password, client_id="fake-headend")
        self.c.on_message = self._on_message
        for topic in ("bc/#", "homeassistant/#"):
            self.c.subscribe(topic, 1)
        time.sleep(0.2)             # subscriptions in place before meters start

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        with self.lock:
            self.messages.append((now, msg.topic, msg.payload, msg.retain))
        parts = msg.topic.split("/")
        if len(parts) == 3 and parts[0] == "bc" and parts[2] == "up":
            self._up(parts[1], msg.payload, now)

    def _up(self, device, payload, now):
        sig, _, raw = payload.partition(b" ")
        key = self.keys.get(device)
        if key is None or not hmac.compare_digest(sig.decode(), sign(key, raw)):
            self.bad.append(payload)
            return
        body = json.loads(raw)
        with self.lock:
            self.ups.setdefault(device, []).append((now, body))
            self.latest[device] = body
            stored = self.items.setdefault(device, {})
            for item in body.get("items", []):
                stored[item["seq"]] = item
        if self.answering:
            self.down(device, answer=True)

    def ack(self, device):
        stored = self.items.get(device, {})
        return max(stored) if stored else 0

    def down(self, device, work=(), qos=1, answer=False):
        """An answer to the device's latest up, or (answer False) a push bound to the
        connection of its latest up (docs/protocol.md, Bound responses)."""
        up = self.latest.get(device, {})
        resp = {"v": 2, "dir": "down", "device": device, "conn": up.get("conn"),
                "epoch": up.get("epoch"), "ack": self.ack(device), "work": list(work),
                "more": False, "next": self.next_s, "time": time.time()}
        if answer:
            resp["re"] = up.get("nonce")
        raw = json.dumps(resp).encode()
        info = self.c.publish("bc/%s/down" % device,
                              sign(self.keys[device], raw).encode() + b" " + raw, qos=qos)
        with self.lock:
            self.answered[device] = self.answered.get(device, 0) + 1
        return info

    def work(self, device, op, args=None, wid=None, role="operator", expires=None):
        """A signed work item (docs/protocol.md, Response body)."""
        wid = wid or "w-%d" % (time.monotonic_ns() % 10 ** 12)
        text = json.dumps(args or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with self.lock:
            seq = self.work_seq[device] = self.work_seq.get(device, 0) + 1
        item = {"id": wid, "device": device, "seq": seq, "op": op, "args": text, "role": role,
                "from": "operator:test", "expires": int(expires or time.time() + 300)}
        item["sig"] = sign(self.keys[device], work_message(item))
        return item

    def push(self, device, op, args=None, **kw):
        item = self.work(device, op, args, **kw)
        self.down(device, [item]).wait_for_publish(10)
        return item

    # --- what the meters sent ---
    def results(self, device, wid):
        with self.lock:
            return [i["body"] for i in self.items.get(device, {}).values()
                    if i["kind"] == "result" and i["body"].get("work") == wid]

    def wait_result(self, device, wid, timeout=15):
        return wait_until(lambda: self.results(device, wid), timeout,
                          "the result of %s from %s" % (wid, device))[0]

    def done_ids(self, device):
        with self.lock:
            return {d for _, body in self.ups.get(device, []) for d in body.get("done", [])}

    def up_count(self, device):
        with self.lock:
            return len(self.ups.get(device, []))

    def received(self, topic):
        with self.lock:
            return [(t, p, r) for t, top, p, r in self.messages if top == topic]


class MqttMeter:
    """The firmware app with the simulated board on the MicroPython unix port, talking MQTT;
    stdout (--print: every reading and event as a JSON line) is read with arrival times."""

    def __init__(self, workdir, device_id, key, port, interpreter="micropython", **settings):
        self.interpreter = interpreter
        self.dir = Path(workdir) / device_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = device_id
        self.state = self.dir / "state"
        self.config = self.dir / "config.json"
        cfg = {"device_id": device_id, "device_key": key, "transport": "mqtt",
               "mqtt_host": "127.0.0.1", "mqtt_port": port, "report_s": 1,
               "mqtt_keepalive": 10, "mqtt_tls": False}
        cfg.update(settings)
        self.config.write_text(json.dumps(cfg))
        self.proc = None
        self.lines = []             # (monotonic, record)
        self.lock = threading.Lock()

    def start(self):
        cmd, env = runner.command(self.interpreter, METER_MAIN, str(self.config),
                              str(self.state), "--print")
        err = open(self.dir / "meter.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc):
        for line in proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.lines.append((time.monotonic(), rec))

    def readings(self, since=0.0):
        with self.lock:
            return [(t, r) for t, r in self.lines if r.get("type") == "reading" and t >= since]

    def log(self):
        path = self.dir / "meter.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
