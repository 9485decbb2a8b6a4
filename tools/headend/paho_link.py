"""The MQTT bridge's link to mosquitto (or any MQTT 3.1.1 broker): one paho-mqtt client
with a persistent session (`mqtt_client_id`), subscribed to every meter's up and presence.
paho runs its network loop in its own thread; each message is handed to the bridge
(MqttBridge.received) and acknowledged (manual PUBACK) only once the bridge has handled it,
so messages that arrive while the head-end is down wait in the broker. One per fleet:
two would take the session from each other (singleton.py)."""

import asyncio
import logging
import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from . import broker

log = logging.getLogger("backchannel.mqtt")
SUBSCRIPTIONS = [("bc/+/up", 1), ("bc/+/presence", 1)]


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


class PahoLink:
    shared = False          # one bridge per fleet (the gateways lease)

    def __init__(self, settings):
        self.settings = settings
        self.client = None
        self.bridge = None
        self.connected = False
        self.ready = threading.Event()     # connected and subscribed
        self.where = None

    async def start(self, bridge):
        cfg = resolve(self.settings)
        self.bridge = bridge
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
        if self.client is not None:
            self.client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
        self.connected = False
        self.ready.clear()

    def publish(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            log.error("MQTT publish on %s failed: %s", topic, mqtt.error_string(info.rc))

    def ack(self, token):
        mid, qos = token
        if qos:
            self.client.ack(mid, qos)

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
        self.bridge.link_ready()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected = False
        self.ready.clear()
        if reason_code != 0:
            log.warning("MQTT bridge lost %s: %s (reconnecting)", self.where, reason_code)

    def _on_message(self, client, userdata, msg):
        self.bridge.received(msg.topic, msg.payload, msg.retain, (msg.mid, msg.qos))
