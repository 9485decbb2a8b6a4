"""The MQTT bridge's link to a NATS cluster (issue 19, item 3; docs/scaling.md "A NATS
cluster"): meters speak MQTT to any node's MQTT gateway; the head-end speaks NATS
(nats-py) to any node.

Every head-end process runs one, in the queue group `backchannel-headend` on `bc.*.up` and
`bc.*.presence` (the MQTT topics bc/<id>/up and bc/<id>/presence as NATS subjects): the
cluster gives each message to one member, so several processes share the meters' traffic
and none is handled twice. Answers and pushes go out on `bc.<id>.down`, which the meter's
MQTT subscription receives wherever it is connected.

These are core NATS messages: at most once between the cluster and the head-end. A message
in flight when a process or a node dies is lost, and its meter sends it again: the meter
keeps its readings until an answer acknowledges them, and an unanswered up is repeated
(answer_s); the exchange deduplicates by nonce and seq, so a repeat counts once. A lost push
is redelivered in the meter's next answer (work delivered without a result is sent again).
The client reconnects by itself to any node of the list."""

import asyncio
import logging
import os
import threading
from pathlib import Path

from . import broker, nats_config

log = logging.getLogger("backchannel.mqtt")
QUEUE = "backchannel-headend"
SUBJECTS = ("bc.*.up", "bc.*.presence")


def enabled(settings):
    return bool(settings.nats_dir or settings.nats_servers)


def resolve(settings):
    """{"servers", "user", "password"}: nats_dir gives defaults, nats_servers,
    nats_user and nats_password_file override them. ValueError: missing or unreadable."""
    cfg = {"servers": None, "user": broker.BRIDGE_USER, "password": None}
    if settings.nats_dir:
        cfg.update({k: v for k, v in nats_config.info(settings.nats_dir).items()
                    if k in cfg})
    if settings.nats_servers:
        cfg["servers"] = [u.strip() for u in settings.nats_servers.split(",") if u.strip()]
    if settings.nats_user:
        cfg["user"] = settings.nats_user
    if settings.nats_password_file:
        try:
            cfg["password"] = Path(settings.nats_password_file).read_text().strip()
        except OSError as e:
            raise ValueError("%s: %s" % (settings.nats_password_file, e.strerror or e)) from None
    if not cfg["servers"]:
        raise ValueError("NATS bridge: no servers (nats_servers or nats_dir)")
    for url in cfg["servers"]:
        if not url.startswith(("nats://", "tls://")):
            raise ValueError("NATS bridge: %r is not a nats:// or tls:// URL" % url)
    if not cfg["password"]:
        raise ValueError("NATS bridge: no password (nats_password_file or nats_dir)")
    return cfg


def subject_of(topic):
    return topic.replace("/", ".")


def topic_of(subject):
    return subject.replace(".", "/")


class NatsLink:
    shared = True           # every head-end process runs one: the queue group shares

    def __init__(self, settings):
        self.settings = settings
        self.cfg = resolve(settings)
        self.where = ",".join(self.cfg["servers"])
        self.nc = None
        self.bridge = None
        self.ready = threading.Event()     # connected and subscribed
        self._task = None
        self._sends = set()

    @property
    def connected(self):
        return self.nc is not None and self.nc.is_connected

    async def start(self, bridge):
        self.bridge = bridge
        self._task = asyncio.create_task(self._connect())

    async def _connect(self):
        import nats  # nats-py only for a head-end on a NATS cluster

        delay = 0.5
        while True:
            try:
                self.nc = await nats.connect(
                    self.cfg["servers"], user=self.cfg["user"], password=self.cfg["password"],
                    name="backchannel-headend-%d" % os.getpid(), connect_timeout=2,
                    allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    error_cb=self._error)
                break
            except Exception as e:     # noqa: BLE001 - no node answered yet: try again
                log.warning("NATS bridge: cannot connect to %s: %s (again in %.1f s)",
                            self.where, e or type(e).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for subject in SUBJECTS:
            await self.nc.subscribe(subject, queue=QUEUE, cb=self._on_message)
        await self.nc.flush(timeout=5)
        log.info("NATS bridge connected to %s (queue group %s)", self.nc.connected_url.netloc,
                 QUEUE)
        self.ready.set()
        self.bridge.link_ready()

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):     # noqa: BLE001 - stopping
                pass
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 5)
            except Exception:       # noqa: BLE001 - stopping anyway
                pass
        self.ready.clear()

    def publish(self, topic, payload):
        if not self.connected:
            return      # as paho without a connection: the meter asks again
        task = asyncio.get_running_loop().create_task(self._send(subject_of(topic), payload))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, subject, payload):
        try:
            await self.nc.publish(subject, payload)
        except Exception as e:      # noqa: BLE001 - the meter asks again
            log.error("NATS publish on %s failed: %s", subject, e or type(e).__name__)

    def ack(self, token):
        """Core NATS messages need no acknowledgement."""

    async def _on_message(self, msg):
        self.bridge.received(topic_of(msg.subject), msg.data, False, None)

    async def _disconnected(self):
        log.warning("NATS bridge lost its node (reconnecting to %s)", self.where)

    async def _reconnected(self):
        log.info("NATS bridge reconnected to %s", self.nc.connected_url.netloc)
        self.bridge.link_ready()

    async def _error(self, e):
        log.warning("NATS bridge: %s", e or type(e).__name__)
