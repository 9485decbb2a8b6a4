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

The link (paho_link.py for mosquitto, nats_link.py for a NATS cluster) hands received
messages to the asyncio loop; they are handled one at a time, in order, each in one short
transaction, and acknowledged to the broker only once handled (paho_link: manual PUBACK on
a persistent session, so messages that arrive while the head-end is down wait in the
broker). On NATS every head-end process runs a bridge and the cluster gives each message
to one of them (a queue group): a message lost with a process is sent again by its meter,
which keeps its readings until they are acknowledged."""

import asyncio
import json
import logging
from collections import Counter
from contextlib import suppress

from . import devices, exchange, fleet_presence, key_rotation, mqtt_presence, nats_link, paho_link

log = logging.getLogger("backchannel.mqtt")

UP, DOWN, PRESENCE = "bc/%s/up", "bc/%s/down", "bc/%s/presence"
# shared (NATS): a statement waiting for its connection's first up looks again this often
PRESENCE_RETRY_S, PRESENCE_TRIES = 0.5, 20


def enabled(settings):
    return bool(settings.mqtt_host or settings.mqtt_dir) or nats_link.enabled(settings)


def resolve(settings):
    """The bridge's broker settings, checked (ValueError: what is missing or unreadable)."""
    if nats_link.enabled(settings):
        if settings.mqtt_host or settings.mqtt_dir:
            raise ValueError("the MQTT bridge takes one broker: mosquitto (mqtt_dir, "
                             "mqtt_host) or a NATS cluster (nats_dir, nats_servers), not both")
        return nats_link.resolve(settings)
    return paho_link.resolve(settings)


def make_link(settings):
    if nats_link.enabled(settings):
        return nats_link.NatsLink(settings)
    return paho_link.PahoLink(settings)


class MqttBridge:
    """link: how the bridge reaches the broker (paho_link.PahoLink, one MQTT client and its
    persistent session; or nats_link.NatsLink, a queue-group member on a NATS cluster,
    `shared`: several head-end processes each run one and split the meters' messages)."""

    def __init__(self, hub, settings, link=None):
        self.hub = hub
        self.settings = settings
        self.link = link if link is not None else make_link(settings)
        self.loop = None
        self.offline = set()               # meters whose Last Will came after their last word
        self.presence_gate = mqtt_presence.PresenceGate(    # signed presence, per connection
            mqtt_presence.seen_in(hub.db), fresh=self.link.shared)
        self.counts = Counter()            # up, answered, pushed, presence, lwt, refused, ...
        self.refused = Counter()           # reason -> count
        self._queue = None
        self._task = None
        self._pending = set()              # devices with a push scheduled

    @property
    def connected(self):
        return self.link.connected

    # --- lifecycle (called on the event loop, from the app's lifespan) ---

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._consume())
        self.hub.wake_hooks.append(self._on_wake)
        await self.link.start(self)

    async def stop(self):
        with suppress(ValueError):
            self.hub.wake_hooks.remove(self._on_wake)
        await self.link.stop()
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def wait_ready(self, timeout=10.0):
        """Block (not on the event loop) until connected and subscribed."""
        return self.link.ready.wait(timeout)

    def status(self):
        return {"enabled": True, "broker": self.link.where,
                "connected": self.connected, "counts": dict(self.counts),
                "refused": dict(self.refused), "offline": sorted(self.offline)}

    # --- called by the link (from any thread) ---

    def received(self, topic, payload, retain, token):
        """A message on bc/<id>/up or bc/<id>/presence; token: what link.ack() takes once
        it is handled (None: nothing to acknowledge)."""
        self._call(self._queue.put_nowait, (topic, payload, retain, token, 0))

    def link_ready(self):
        """(Re)connected and subscribed: push what was queued meanwhile."""
        self._call(self._push_all)

    def _call(self, fn, *args):
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:       # the loop is closed: shutting down
            pass

    # --- the event loop ---

    async def _consume(self):
        while True:
            topic, payload, retain, token, tries = await self._queue.get()
            try:
                await self._dispatch(topic, payload, retain, tries)
            except Exception:
                log.exception("MQTT message on %s failed", topic)
            finally:
                if token is not None:
                    self.link.ack(token)

    async def _dispatch(self, topic, payload, retain, tries=0):
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != "bc":
            return
        device, kind = parts[1], parts[2]
        if kind == "up":
            await self._up(device, payload)
        elif kind == "presence":
            self._presence(device, payload, retain, tries)

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

    def _presence(self, device, payload, retain, tries=0):
        self.counts["presence"] += not tries
        row = devices.get(self.hub.db, device)
        if row is None:
            return self._refuse(device, "unknown device", "presence")
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        msg = mqtt_presence.verified(body, device, row["key"])
        if msg is None and (nxt := key_rotation.next_key(self.hub.db, device)):
            msg = mqtt_presence.verified(body, device, nxt)    # mid-rotation: the new key
        if msg is None:     # unsigned or forged: the broker login alone states nothing
            return self._refuse(device, "unsigned or forged presence", "presence")
        verdict = self.presence_gate.offer(device, row["conn"], msg)
        if verdict == "take":
            self._record_presence(device, msg, retain)
        elif verdict == "wait":
            # shared ups: this statement's connection may begin with an up that another
            # process handles; look at the device's connection again shortly
            if self.link.shared and tries < PRESENCE_TRIES:
                topic = PRESENCE % device
                self.loop.call_later(PRESENCE_RETRY_S, self._queue.put_nowait,
                                     (topic, payload, retain, None, tries + 1))
        elif not tries:     # a retry finding it taken meanwhile is no news
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
        self.link.publish(DOWN % device, sig.encode() + b" " + body)

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
