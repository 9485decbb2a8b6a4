"""The head-end's MQTT bridge (docs/protocol.md "MQTT transport"): a client of the broker,
running in the head-end's process next to the HTTP endpoint, on the same hub.

- `bc/<id>/up`: `<sig> <request JSON>` goes through exchange.handle(), exactly the checks
  and storage of POST /v1/exchange (the topic's id must also be the body's `device`); the
  signed response goes back on `bc/<id>/down` (QoS 1). Refused messages store nothing; they
  are counted (`counts`, `refused`) and logged, and get no answer.
- `bc/<id>/presence`: the meter's stated presence and its Last Will go to the presence
  history (sources `meter` and `lwt`).
- Push: when work is queued for a meter whose last exchange was over MQTT (and whose Last
  Will has not been seen since), the response carrying it is published at once, up to the
  room the meter has left from its last request (exchange.push()).

paho-mqtt runs its network loop in its own thread; received messages are handed to the
asyncio loop with call_soon_threadsafe and handled one at a time, in order, each in one
short transaction, and acknowledged to the broker (manual PUBACK) only once handled: the
bridge's session is persistent, so messages that arrive while the head-end is down wait in
the broker."""

import asyncio
import json
import logging
import socket
import threading
from collections import Counter
from contextlib import suppress
from pathlib import Path

import paho.mqtt.client as mqtt

from . import broker, devices, exchange, fleet_presence, mqtt_presence

log = logging.getLogger("backchannel.mqtt")

UP, DOWN, PRESENCE = "bc/%s/up", "bc/%s/down", "bc/%s/presence"
SUBSCRIPTIONS = [("bc/+/up", 1), ("bc/+/presence", 1)]


def enabled(settings):
    return bool(settings.mqtt_host or settings.mqtt_dir)


def resolve(settings):
    """Where and how the bridge connects: {"host", "port", "user", "password", "tls",
    "cafile"}. mqtt_dir (a `broker-config` directory) gives defaults; the other mqtt_*
    settings override them. ValueError if something is missing or unreadable."""
    cfg = {"host": None, "port": None, "user": broker.BRIDGE_USER, "password": None}
    if settings.mqtt_dir:
        cfg.update(broker.bridge_credentials(settings.mqtt_dir))
    for name in ("host", "port", "user", "password"):
        value = getattr(settings, "mqtt_" + name)
        if value is not None:
            cfg[name] = value
    if settings.mqtt_password_file:
        try:
            cfg["password"] = Path(settings.mqtt_password_file).read_text().strip()
        except OSError as e:
            raise ValueError("%s: %s" % (settings.mqtt_password_file, e.strerror or e)) from None
    if not cfg["host"]:
        raise ValueError("MQTT bridge: no broker host (mqtt_host or mqtt_dir)")
    if not cfg["password"]:
        raise ValueError("MQTT bridge: no password (mqtt_password, mqtt_password_file or "
                         "mqtt_dir)")
    cfg["cafile"] = settings.mqtt_cafile
    if cfg["cafile"] and not Path(cfg["cafile"]).is_file():
        raise ValueError("%s: no such CA file" % cfg["cafile"])
    cfg["tls"] = bool(settings.mqtt_tls or cfg["cafile"])
    if cfg["port"] is None:
        cfg["port"] = 8883 if cfg["tls"] else 1883
    return cfg


class MqttBridge:
    def __init__(self, hub, settings):
        self.hub = hub
        self.settings = settings
        self.client = None
        self.loop = None
        self.connected = False
        self.ready = threading.Event()     # connected and subscribed
        self.offline = set()               # meters whose Last Will came after their last word
        self.presence_gate = mqtt_presence.PresenceGate(    # signed presence, per connection
            mqtt_presence.seen_in(hub.db))
        self.counts = Counter()            # up, answered, pushed, presence, lwt, refused, ...
        self.refused = Counter()           # reason -> count
        self._queue = None
        self._task = None
        self._pending = set()              # devices with a push scheduled

    # --- lifecycle (called on the event loop, from the app's lifespan) ---

    async def start(self):
        cfg = resolve(self.settings)
        self.loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._consume())
        self.hub.wake_hooks.append(self._on_wake)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.settings.mqtt_client_id,
                        clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        c.username_pw_set(cfg["user"], cfg["password"])
        if cfg["tls"]:
            c.tls_set(ca_certs=cfg["cafile"])
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c
        self.where = "%s:%d" % (cfg["host"], cfg["port"])
        c.connect_async(cfg["host"], cfg["port"], self.settings.mqtt_keepalive)
        c.loop_start()
        log.info("MQTT bridge connecting to %s as %s%s", self.where, cfg["user"],
                 " (TLS)" if cfg["tls"] else "")

    async def stop(self):
        with suppress(ValueError):
            self.hub.wake_hooks.remove(self._on_wake)
        if self.client is not None:
            self.client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self.connected = False
        self.ready.clear()

    def wait_ready(self, timeout=10.0):
        """Block (not on the event loop) until connected and subscribed."""
        return self.ready.wait(timeout)

    def status(self):
        return {"enabled": True, "broker": getattr(self, "where", None),
                "connected": self.connected, "counts": dict(self.counts),
                "refused": dict(self.refused), "offline": sorted(self.offline)}

    # --- paho's thread ---

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("MQTT broker %s refused the bridge: %s", self.where, reason_code)
            return
        self.connected = True
        sock = client.socket()
        if sock is not None:  # paho leaves Nagle on: pushes would wait for delayed ACKs
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
        log.info("MQTT bridge connected to %s", self.where)
        client.subscribe(SUBSCRIPTIONS)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("MQTT broker refused the bridge's subscriptions: %s", ", ".join(failed))
            return
        self.ready.set()
        self._call(self._push_all)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        self.ready.clear()
        if reason_code != 0:
            log.warning("MQTT bridge lost %s: %s (reconnecting)", self.where, reason_code)

    def _on_message(self, client, userdata, msg):
        self._call(self._queue.put_nowait, (msg.topic, msg.payload, msg.retain, msg.mid,
                                            msg.qos))

    def _call(self, fn, *args):
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:       # the loop is closed: shutting down
            pass

    # --- the event loop ---

    async def _consume(self):
        while True:
            topic, payload, retain, mid, qos = await self._queue.get()
            try:
                await self._dispatch(topic, payload, retain)
            except Exception:
                log.exception("MQTT message on %s failed", topic)
            finally:
                if qos:
                    self.client.ack(mid, qos)

    async def _dispatch(self, topic, payload, retain):
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != "bc":
            return
        device, kind = parts[1], parts[2]
        if kind == "up":
            await self._up(device, payload)
        elif kind == "presence":
            self._presence(device, payload, retain)

    def _refuse(self, device, reason, what="up"):
        self.counts["refused"] += 1
        self.refused[reason] += 1
        log.warning("MQTT %s of %s refused: %s", what, device, reason)

    async def _up(self, device, payload):
        self.counts["up"] += 1
        sig, sep, raw = payload.partition(b" ")
        if not sep or len(sig) != 64:
            return self._refuse(device, "payload is not '<sig> <JSON>'")
        try:
            req, key, answer = await exchange.handle(self.hub, raw, sig.decode("latin-1"),
                                                     "mqtt", topic_device=device)
        except exchange.Refused as e:
            if e.answer is not None:        # the signed time refusal: the meter retries
                self._publish(device, e.key, e.answer)
            return self._refuse(device, e.reason)
        self.offline.discard(device)
        self._publish(device, key, answer)
        self.counts["answered"] += 1
        waiting = self.presence_gate.up(device, req.conn)
        if waiting is not None:         # a statement made before this connection's first up
            self._record_presence(device, waiting, True)

    def _presence(self, device, payload, retain):
        self.counts["presence"] += 1
        row = devices.get(self.hub.db, device)
        if row is None:
            return self._refuse(device, "unknown device", "presence")
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        msg = mqtt_presence.verified(body, device, row["key"])
        if msg is None:     # unsigned or forged: the broker login alone states nothing
            return self._refuse(device, "unsigned or forged presence", "presence")
        verdict = self.presence_gate.offer(device, row["conn"], msg)
        if verdict == "take":
            self._record_presence(device, msg, retain)
        elif verdict != "wait":
            self.counts["presence_dropped"] += 1
            log.info("MQTT presence of %s dropped: %s", device, verdict)

    def _record_presence(self, device, msg, retain):
        _, n, state, note = msg
        body = {"state": state, "note": note}
        with self.hub.tx() as db:       # what was taken, durable with it (a restart replays)
            db.run(mqtt_presence.SAVE_SEEN, device, msg[0], n)
            said = fleet_presence.announced(self.hub, device, body, self.hub.now())
        if said is None:
            return self._refuse(device, "malformed presence", "presence")
        if n == mqtt_presence.WILL_N:
            if said in ("lwt", "same"):
                self.offline.add(device)
                self.counts["lwt"] += said == "lwt"
        elif not retain:
            self.offline.discard(device)

    def _publish(self, device, key, answer):
        body, sig = exchange.signed(key, answer)
        info = self.client.publish(DOWN % device, sig.encode() + b" " + body, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            log.error("MQTT publish to %s failed: %s", device, mqtt.error_string(info.rc))

    # --- push ---

    def _on_wake(self, device):
        """A hub wake hook: work may be deliverable to `device` (any thread)."""
        self._call(self._schedule, device)

    def _schedule(self, device):
        if device not in self._pending:
            self._pending.add(device)
            self.loop.call_soon(self._push, device)

    def _push(self, device):
        self._pending.discard(device)
        if not self.connected or device in self.offline:
            return
        row = devices.get(self.hub.db, device)
        if row is None or row["transport"] != "mqtt":
            return
        answer = exchange.push(self.hub, device)
        if answer is not None:
            self._publish(device, row["key"], answer)
            self.counts["pushed"] += 1

    def _push_all(self):
        """(Re)connected: push what was queued for MQTT meters meanwhile."""
        rows = self.hub.db.all("SELECT DISTINCT w.device FROM work w JOIN devices d ON "
                               "d.id = w.device WHERE w.status = 'queued' AND "
                               "d.transport = 'mqtt'")
        for row in rows:
            self._schedule(row["device"])
