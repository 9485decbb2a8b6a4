"""Presence polled over XMPP (issue 15, claims 11 and 13 of `002`; docs/xmpp.md "Presence
probes"): an XEP-0199 ping through a meter's own session (MeterLink.ping).

- On a schedule: every settings.xmpp_probe_s seconds (0: never) the component pings each
  meter with a live session whose last probe is that old.
- On demand: an operator types `ping` in the chat with a meter's JID, or calls
  POST /v1/devices/ID/probe (the same group scope as the rest of the API).

An answer is a contact: the meter's last contact moves on, and a derived `unavailable`
goes back to its stated presence (source `contact`, fleet_presence.contact). No answer
within PING_TIMEOUT_S, or no session at all, records `unavailable` (source `lwt`, as the
server's own unavailable would) when the meter was not already so. Every change is in the
meter's presence history; the counts and the last round trip per meter are in /v1/xmpp
under `probes`."""

import asyncio
import logging

from . import fleet_presence

log = logging.getLogger("backchannel.xmpp")

PING_TIMEOUT_S = 10.0


class Prober:
    def __init__(self, link, every_s=0):
        self.link = link
        self.hub = link.hub
        self.every_s = every_s
        self.seen = {}              # device -> {"sent", "answered", "missed", "last_rtt_ms", "at"}
        self.running = {}           # device -> its probe in flight (one at a time)

    def status(self):
        return {"every_s": self.every_s,
                "meters": {d: {k: v for k, v in s.items() if k != "at"}
                           for d, s in self.seen.items()}}

    async def probe(self, device):
        """{"device", "answered", "rtt_ms", "presence"}: one probe, recorded."""
        task = self.running.get(device)
        if task is None:
            task = self.running[device] = asyncio.ensure_future(self._probe(device))
            task.add_done_callback(lambda _t: self.running.pop(device, None))
        return await asyncio.shield(task)

    async def _probe(self, device):
        loop = asyncio.get_running_loop()
        seen = self.seen.setdefault(device, {"sent": 0, "answered": 0, "missed": 0,
                                             "last_rtt_ms": None, "at": 0.0})
        seen["sent"] += 1
        seen["at"] = loop.time()
        had_session = device in self.link.sessions
        rtt = await self.link.ping(device, timeout=PING_TIMEOUT_S)
        now = self.hub.now()
        with self.hub.tx():
            if rtt is not None:
                seen["answered"] += 1
                seen["last_rtt_ms"] = round(rtt, 1)
                fleet_presence.contact(self.hub, device, now)
            else:
                seen["missed"] += 1
                if not had_session:     # ping() recorded it when a session went silent
                    row = self.hub.db.one("SELECT presence FROM devices WHERE id = ?", device)
                    if row is not None and row["presence"] != "unavailable":
                        fleet_presence.announced(self.hub, device, fleet_presence.WILL, now)
            row = self.hub.db.one("SELECT presence FROM devices WHERE id = ?", device)
        return {"device": device, "answered": rtt is not None,
                "rtt_ms": None if rtt is None else round(rtt, 1),
                "presence": row["presence"] if row else None}

    async def run(self):
        """The schedule: the live sessions whose last probe is every_s old, concurrently."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                now = loop.time()
                due = [d for d in list(self.link.sessions)
                       if d not in self.running
                       and now - self.seen.get(d, {}).get("at", 0.0) >= self.every_s]
                for device in due:
                    asyncio.ensure_future(self.probe(device))
            except Exception:
                log.exception("XMPP probes failed")
            await asyncio.sleep(min(1.0, self.every_s / 4))
