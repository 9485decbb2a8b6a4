"""Presence polled by email (docs/email.md "Probes"): every settings.mail_probe_s seconds,
the mail gateway queues a `read` for each meter whose last exchange was by mail (unless a
probe of it is still open), as work of origin `probe:email`: pushed by mail like any work,
run by the meter, its result mailed back. The probe's round trip (queued to result) is kept
per meter and shown in /v1/mail; a probe that expires unanswered counts as missed (the
meter's presence goes unavailable by the usual missed-contact rule, not by this module).

Through the work queue, so a probe is durable, expires explicitly, and the meter's inbox
deduplicates it like any other work."""

import asyncio
import logging

from . import workq

log = logging.getLogger("backchannel.mail")

ORIGIN = "probe:email"
FINISHED = ("done", "rejected", "unknown_op", "expired", "cancelled")


class Prober:
    def __init__(self, hub, every_s):
        self.hub = hub
        self.every_s = every_s
        self.open = {}              # device -> work num of its open probe
        self.seen = {}              # device -> {"sent", "answered", "missed", "last_rtt_s"}

    def status(self):
        return {"every_s": self.every_s, "meters": {d: dict(v) for d, v in self.seen.items()}}

    async def run(self):
        while True:
            try:
                self.step(self.hub.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mail: probes failed")
            await asyncio.sleep(min(1.0, self.every_s / 4))

    def step(self, now):
        """Settle finished probes; send the ones due."""
        for device, num in list(self.open.items()):
            row = self.hub.db.one("SELECT status, created, finished_at FROM work WHERE num = ?",
                                  num)
            if row is None or row["status"] not in FINISHED:
                continue
            del self.open[device]
            seen = self.seen[device]
            if row["status"] == "done":
                seen["answered"] += 1
                seen["last_rtt_s"] = round(row["finished_at"] - row["created"], 3)
                seen["last_answer"] = row["finished_at"]
            else:
                seen["missed"] += 1
                log.warning("mail: probe of %s %s", device, row["status"])
        for row in self.hub.db.all("SELECT id FROM devices WHERE transport = 'email'"):
            device = row["id"]
            seen = self.seen.setdefault(device, {"sent": 0, "answered": 0, "missed": 0,
                                                 "last_rtt_s": None, "at": 0.0})
            if device in self.open or now - seen["at"] < self.every_s:
                continue
            with self.hub.tx():
                wid = workq.enqueue(self.hub, device, "read", {}, "operator", ORIGIN,
                                    workq.expiry(now, self.every_s))
            self.open[device] = workq.num_of(wid)
            seen["sent"] += 1
            seen["at"] = now


def started(gw):
    """A Prober for the gateway when settings.mail_probe_s is set, else None."""
    every = getattr(gw.s, "mail_probe_s", 0) or 0
    if every <= 0:
        return None
    p = Prober(gw.hub, every)
    log.info("mail: probing meters on email every %g s", every)
    return p

