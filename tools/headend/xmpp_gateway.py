"""The head-end as an XMPP component (XEP-0114, slixmpp; docs/xmpp.md): every meter is a JID
the component owns (meter-1@fleet.example), so its presence has one source, the head-end.

- Presence: each meter's effective presence goes to the operators who may see it, mapped as
  available -> plain, available_restricted -> away, active -> dnd, available_off -> xa,
  unavailable -> unavailable, the note as the status text. Sent on change (checked every
  second), and on a probe or a new subscription.
- Operators: settings.xmpp_operators maps a bare JID to a token name; that token's role
  and group scope apply to everything the JID does. A JID that is not mapped gets a refusal
  and nothing else. Each mapped operator is asked to subscribe to the meters of the groups
  they may see (a presence subscription from each meter's JID): on start, and for a meter
  that becomes visible later (registered, or added to a group) within a second. An operator
  who adds a meter's JID by hand is asked back, so the component hears their presence.
- Chat: xmpp_chat.py; finished work is answered in the chat.
- Alarms: a channel (a chat message from alarms@component) and a presence source (an
  operator whose client shows available, not away/xa/dnd) for escalation.py.
- Meters on XMPP (settings.xmpp_domain): their exchange and presence, xmpp_meters.py; their
  presence probed by XEP-0199 ping on a schedule (settings.xmpp_probe_s) and on demand (an
  operator's `ping` in the chat, POST /v1/devices/ID/probe), xmpp_probe.py."""

import asyncio
import logging

from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.jid import JID, InvalidJID

from . import devices, escalation, operator_actions, xmpp_chat, xmpp_meters, xmpp_probe

log = logging.getLogger("backchannel.xmpp")

SHOW = {"available": None, "available_restricted": "away", "active": "dnd",
        "available_off": "xa"}
FINISHED = ("done", "rejected", "unknown_op", "expired", "cancelled")
MAX_BODY = 1000                 # a chat command longer than this is refused unread
SYNC_S = 1.0


class XmppGateway:
    def __init__(self, hub, settings):
        self.hub = hub
        self.settings = settings
        self.domain = settings.xmpp_component
        self.operators = {JID(j).bare: name for j, name in (settings.xmpp_operators or {}).items()}
        self.xmpp = None
        self.sent = {}              # (operator bare JID, meter) -> (show, status) last sent
        self.asked = set()          # (operator bare JID, meter): a subscription request sent
        self.present = {}           # operator bare JID -> show of its latest presence
        self.pending = {}           # work num -> (operator full JID, meter JID)
        self.task = None
        self.connected = asyncio.Event()
        self.refused = 0
        self.stopping = False
        self.meters = xmpp_meters.MeterLink(self) if settings.xmpp_domain else None
        self.prober = None if self.meters is None else \
            xmpp_probe.Prober(self.meters, settings.xmpp_probe_s or 0)
        self.probe_task = None

    # --- lifecycle (webapp.py's lifespan) ---
    async def start(self, timeout=10.0):
        s = self.settings
        x = self.xmpp = ComponentXMPP(s.xmpp_component, s.xmpp_secret, s.xmpp_host,
                                      s.xmpp_port)
        x.auto_authorize = None       # subscriptions are decided here, per operator scope
        x.auto_subscribe = False
        x.register_plugin("xep_0030")
        x.register_plugin("xep_0199")
        x.add_event_handler("session_start", self._on_start)
        x.add_event_handler("disconnected", self._on_disconnected)
        x.add_event_handler("message", self._on_message)
        x.add_event_handler("presence_subscribe", self._on_subscribe)
        x.add_event_handler("presence_probe", self._on_probe)
        x.add_event_handler("presence_available", self._on_presence)
        x.add_event_handler("presence_unavailable", self._on_presence)
        escalation.channels(self.hub).append(self)
        escalation.sources(self.hub).append(self.available)
        if self.meters is not None:
            self.meters.start()
            if self.prober.every_s > 0:
                self.probe_task = asyncio.create_task(self.prober.run())
        x.connect(s.xmpp_host, s.xmpp_port)
        self.task = asyncio.create_task(self._sync_loop())
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
        except TimeoutError:    # the head-end runs on; slixmpp keeps reconnecting
            log.warning("XMPP component %s: no connection to %s:%d yet; retrying",
                        self.domain, s.xmpp_host, s.xmpp_port)

    def _on_disconnected(self, _event):
        """slixmpp does not reconnect a lost stream itself (only a first connect is
        retried): connect again, and send every presence afresh once connected."""
        self.connected.clear()
        self.sent.clear()
        if self.stopping:
            return
        log.warning("XMPP component %s lost the server; reconnecting", self.domain)
        s = self.settings
        asyncio.get_running_loop().call_later(1.0, self.xmpp.connect, s.xmpp_host, s.xmpp_port)

    async def stop(self):
        self.stopping = True
        if self.meters is not None:
            self.meters.stop()
        for task in (self.task, self.probe_task):
            if task is not None:
                task.cancel()
        if self.xmpp is not None:
            self.xmpp.disconnect()

    def status(self):
        return {"enabled": True, "component": self.domain, "connected": self.connected.is_set(),
                "operators": len(self.operators), "refused": self.refused,
                "meters": self.meters.status() if self.meters is not None else None,
                "probes": self.prober.status() if self.prober is not None else None}

    # --- meters' JIDs and operators ---
    def meter_jid(self, device):
        return "%s@%s" % (device, self.domain)

    def _meter_of(self, jid):
        return jid.user if jid.domain == self.domain and jid.user else None

    def _principal(self, jid):
        name = self.operators.get(jid.bare)
        return operator_actions.principal_named(self.hub.db, name) if name else None

    def _visible(self, who):
        cond, args = who.scope_sql("id")
        return [r["id"] for r in self.hub.db.all(
            "SELECT id FROM devices WHERE %s ORDER BY id" % cond, *args)]

    # --- handlers ---
    def _on_start(self, _event):
        self.connected.set()
        self.asked.clear()          # asked again on every connection, as on start
        for bare in self.operators:
            who = self._principal(JID(bare))
            for device in self._visible(who) if who else ():
                self._ask(bare, device)
        log.info("XMPP component %s connected", self.domain)

    def _on_subscribe(self, pres):
        who, meter = self._principal(pres["from"]), self._meter_of(pres["to"])
        ok = who is not None and meter is not None and who.sees(self.hub.db, meter)
        self.xmpp.send_presence(pto=pres["from"].bare, pfrom=pres["to"].bare,
                                ptype="subscribed" if ok else "unsubscribed")
        if ok:
            self._send_presence(pres["from"].bare, meter, force=True)
            self._ask(pres["from"].bare, meter, again=True)     # their presence, for escalation

    def _on_probe(self, pres):
        who, meter = self._principal(pres["from"]), self._meter_of(pres["to"])
        if who is not None and meter is not None and who.sees(self.hub.db, meter):
            self._send_presence(pres["from"].bare, meter, force=True)

    def _on_presence(self, pres):
        bare = pres["from"].bare
        device = self.meters.device_of(pres["from"]) if self.meters is not None else None
        if device is not None and bare not in self.operators:
            self.meters.on_presence(pres, device)
        elif bare in self.operators:
            self.present[bare] = None if pres["type"] == "unavailable" else (pres["show"] or "")

    def _on_message(self, msg):
        if xmpp_meters.MeterLink.payload(msg) is not None:
            return          # a meter's exchange (with a body too): xmpp_meters.py has it
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        sender = msg["from"]
        who = self._principal(sender)
        if who is None:     # unmapped (or its token revoked): a refusal and nothing else
            self.refused += 1
            msg.reply("refused: %s is not an operator of this head-end" % sender.bare).send()
            return
        if len(msg["body"]) > MAX_BODY:
            msg.reply("refused: a command is at most %d characters" % MAX_BODY).send()
            return
        meter = self._meter_of(msg["to"]) or ""
        if msg["body"].strip().lower() == "ping" and self.prober is not None:
            if devices.get(self.hub.db, meter) is None or not who.sees(self.hub.db, meter):
                msg.reply("refused: unknown meter %s" % meter).send()
            else:
                asyncio.ensure_future(self._chat_ping(msg, meter))
            return
        reply, row = xmpp_chat.handle(self.hub, who, meter, msg["body"])
        msg.reply(reply).send()
        if row is not None:
            self.pending[row["num"]] = (str(sender), msg["to"].bare)

    async def _chat_ping(self, msg, meter):
        r = await self.prober.probe(meter)
        msg.reply("%s: %s; presence %s" % (
            meter, "answered in %.0f ms" % r["rtt_ms"] if r["answered"] else "no answer",
            r["presence"])).send()

    # --- every second: presence changes, finished work ---
    async def _sync_loop(self):
        while True:
            try:
                self._sync()
            except Exception:
                log.exception("XMPP sync failed")
            await asyncio.sleep(SYNC_S)

    def _sync(self):
        if not self.connected.is_set():
            return
        for bare in self.operators:
            who = self._principal(JID(bare))
            for device in self._visible(who) if who else ():
                self._ask(bare, device)
                self._send_presence(bare, device)
        for num, (to, meter_jid) in list(self.pending.items()):
            row = self.hub.db.one("SELECT * FROM work WHERE num = ?", num)
            if row is None or row["status"] in FINISHED:
                del self.pending[num]
                if row is not None:
                    self.xmpp.send_message(mto=to, mfrom=meter_jid, mtype="chat",
                                           mbody=xmpp_chat.result_text(row))

    def _ask(self, operator, device, again=False):
        """A subscription request from the meter's JID to the operator, once (or again)."""
        if again or (operator, device) not in self.asked:
            self.asked.add((operator, device))
            self.xmpp.send_presence(pto=operator, pfrom=self.meter_jid(device),
                                    ptype="subscribe", pnick=device)

    def _send_presence(self, operator, device, force=False):
        d = self.hub.db.one("SELECT presence, presence_note FROM devices WHERE id = ?", device)
        if d is None:
            return
        state = d["presence"]
        now = (SHOW.get(state, "unavailable"), d["presence_note"] or "")
        if not force and self.sent.get((operator, device)) == now:
            return
        self.sent[(operator, device)] = now
        show, status = now
        if show == "unavailable":
            self.xmpp.send_presence(pto=operator, pfrom=self.meter_jid(device),
                                    ptype="unavailable", pstatus=status or None)
        else:
            self.xmpp.send_presence(pto=operator, pfrom=self.meter_jid(device), pshow=show,
                                    pstatus=status or None)

    # --- escalation.py: a channel and a presence source ---
    name = "xmpp"

    def _jids_of(self, operator):
        return [j for j, name in self.operators.items() if name == operator]

    def notify(self, hub, operator, alarm):
        jids = self._jids_of(operator)
        text = ("ALARM %d: %s on %s (group %s), %s. Reply 'ack %d' to take it."
                % (alarm["id"], alarm["kind"], alarm["device"], alarm["grp"], alarm["state"],
                   alarm["id"]))
        for jid in jids:
            self.xmpp.send_message(mto=jid, mfrom="alarms@%s" % self.domain, mtype="chat",
                                   mbody=text)
        return bool(jids) and self.connected.is_set()

    def available(self, hub, operator, now):
        for jid in self._jids_of(operator):
            if self.present.get(jid) in ("", "chat"):
                return "xmpp presence"
        return None


def parse_jid(text):
    """A bare JID or None (settings validation)."""
    try:
        return JID(text).bare or None
    except InvalidJID:
        return None
