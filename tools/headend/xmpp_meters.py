"""Meters on XMPP (docs/xmpp.md, "The meter's transport"), the gateway's other half: each
meter logs in to the server with its own account, ID@xmpp_domain, and exchanges with the
component.

- A `<message>` carrying `<bc xmlns="urn:backchannel:exchange" sig="HEX">BASE64</bc>` from
  a meter's account goes through exchange.handle(), exactly the checks and storage of POST
  /v1/exchange; the account's name must be the body's `device` (the server authenticated
  the account, so a `from` that is not the signer's is refused). The signed answer goes back
  to the meter's full JID the same way. Refused messages store nothing; they are counted
  (`counts`, `refused`) and logged, and get no answer.
- A meter account's presence, directed to the component, is its stated presence (source
  `meter`): plain available, away, dnd, xa mapped back; unavailable (the server sends it
  when the meter's connection drops) is recorded as MQTT's Last Will is (source `lwt`).
- Push: work queued for a meter whose connection is known goes to it at once, as over MQTT
  (exchange.push()), up to the room it has left.
- Probe: ping() asks a meter's session for an XEP-0199 answer (its presence poll)."""

import asyncio
import base64
import binascii
import logging
import time
from collections import Counter
from contextlib import suppress
from xml.etree import ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from . import devices, exchange, fleet_presence

log = logging.getLogger("backchannel.xmpp")

NS = "urn:backchannel:exchange"
STATE = {"": "available", "chat": "available", "away": "available_restricted",
         "dnd": "active", "xa": "available_off"}
MAX_B64 = 512 * 1024            # a request is at most exchange's size limit, as base64


class MeterLink:
    def __init__(self, gateway):
        self.gw = gateway
        self.hub = gateway.hub
        self.domain = gateway.settings.xmpp_domain
        self.sessions = {}              # device -> the full JID of its live connection
        self.counts = Counter()         # up, answered, pushed, presence, lwt, refused
        self.refused = Counter()        # reason -> count
        self.loop = None
        self._pending = set()
        self._tasks = set()             # exchanges in progress

    def start(self):
        self.loop = asyncio.get_running_loop()
        self.hub.wake_hooks.append(self._on_wake)
        x = self.gw.xmpp      # slixmpp's own "message" event is only for messages with a body
        x.register_handler(Callback("backchannel exchange", MatchXPath(
            "{%s}message/{%s}bc" % (x.default_ns, NS)), self._on_stanza))

    def _on_stanza(self, msg):
        if msg["type"] == "error":
            return
        task = asyncio.create_task(self.on_message(msg, self.payload(msg)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self):
        with suppress(ValueError):
            self.hub.wake_hooks.remove(self._on_wake)

    def status(self):
        return {"domain": self.domain, "online": sorted(self.sessions),
                "counts": dict(self.counts), "refused": dict(self.refused)}

    def device_of(self, jid):
        """The meter a JID's account is, or None (not on the meters' domain)."""
        if not self.domain or jid.domain != self.domain or not jid.user:
            return None
        return jid.user

    def _refuse(self, device, reason, what="message"):
        self.counts["refused"] += 1
        self.refused[reason] += 1
        log.warning("XMPP %s from %s refused: %s", what, device, reason)

    # --- messages ---
    @staticmethod
    def payload(msg):
        return msg.xml.find("{%s}bc" % NS)

    async def on_message(self, msg, bc):
        self.counts["up"] += 1
        sender = msg["from"]
        device = self.device_of(sender)
        if device is None:
            return self._refuse(sender.bare, "not a meter's account (%s)" % self.domain)
        text, sig = (bc.text or "").strip(), bc.get("sig", "")
        if len(text) > MAX_B64 or len(sig) != 64:
            return self._refuse(device, "payload is not <bc sig=...>BASE64</bc>")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return self._refuse(device, "payload is not base64")
        try:
            req, key, answer = await exchange.handle(self.hub, raw, sig, "xmpp",
                                                     topic_device=device)
        except exchange.Refused as e:
            if e.answer is not None:        # the signed time refusal: the meter retries
                self._send(str(sender), e.key, e.answer)
            return self._refuse(device, e.reason)
        self.sessions[device] = str(sender)
        self._send(str(sender), key, answer)
        self.counts["answered"] += 1

    def _send(self, to, key, answer):
        body, sig = exchange.signed(key, answer)
        m = self.gw.xmpp.make_message(mto=to, mfrom=self.gw.domain)
        el = ET.Element("{%s}bc" % NS, sig=sig)
        el.text = base64.b64encode(body).decode()
        m.xml.append(el)
        m.send()

    # --- presence ---
    def on_presence(self, pres, device):
        self.counts["presence"] += 1
        if devices.get(self.hub.db, device) is None:
            return self._refuse(device, "unknown device", "presence")
        if pres["type"] == "unavailable":
            if self.sessions.get(device) not in (None, str(pres["from"])):
                return          # an older connection's end, after a newer one's login
            self.sessions.pop(device, None)
            body = fleet_presence.WILL
        else:
            state = STATE.get(pres["show"] or "")
            if state is None:
                return self._refuse(device, "unknown show %r" % pres["show"], "presence")
            body = {"state": state, "note": pres["status"] or ""}
        with self.hub.tx():
            said = fleet_presence.announced(self.hub, device, body, self.hub.now())
        self.counts["lwt"] += said == "lwt"

    # --- push ---
    def _on_wake(self, device):
        """A hub wake hook (any thread): work may be deliverable to `device`."""
        if self.loop is not None:
            with suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._schedule, device)

    def _schedule(self, device):
        if device not in self._pending and device in self.sessions:
            self._pending.add(device)
            self.loop.call_soon(self._push, device)

    def _push(self, device):
        self._pending.discard(device)
        to = self.sessions.get(device)
        if to is None or not self.gw.connected.is_set():
            return
        row = devices.get(self.hub.db, device)
        if row is None or row["transport"] != "xmpp":
            return
        answer = exchange.push(self.hub, device)
        if answer is not None:
            self._send(to, row["key"], answer)
            self.counts["pushed"] += 1

    # --- probe ---
    async def ping(self, device, timeout=10.0):
        """Round trip in ms of an XEP-0199 ping through the meter's session, or None when
        it has none or does not answer (its presence is then recorded unavailable)."""
        to = self.sessions.get(device)
        if to is None:
            return None
        started = time.perf_counter()
        try:
            await self.gw.xmpp.plugin["xep_0199"].send_ping(to, timeout=timeout,
                                                            ifrom=self.gw.domain)
        except Exception as e:      # noqa: BLE001 - a timeout or an error answer: gone
            log.info("XMPP ping of %s failed: %s", device, e)
            self.sessions.pop(device, None)
            with self.hub.tx():
                fleet_presence.announced(self.hub, device, fleet_presence.WILL,
                                         self.hub.now())
            return None
        return (time.perf_counter() - started) * 1000
