"""The parts of the head-end that must run once per fleet, not once per process (issue 19):
the MQTT bridge (one persistent session, `mqtt_client_id`: two processes would take it from
each other in turn), the XMPP component connection (the server accepts one per component
name) and the mail reader (one IMAP mailbox). On SQLite the one process runs them from its
start, as before. On PostgreSQL, where several processes share the fleet, they run on the
process that holds the `gateways` lease (leader.py: an advisory lock with a fencing token,
lost with the session, so a process that dies or stops hands them over within the lease).

Their work needs no fencing of its own: every message they take in goes through the same
exchange as HTTP (signed, deduplicated by nonce and seq), so the few seconds in which an
old holder and a new one might both be connected cannot make anything take effect twice."""

import asyncio
import logging
from contextlib import suppress

from . import leader

log = logging.getLogger("backchannel.singleton")


class Gateways:
    """parts: objects with async start() and stop() (MqttBridge, XmppGateway,
    MailGateway)."""

    def __init__(self, hub, parts, lease_s, interval=1.0):
        self.hub = hub
        self.parts = [p for p in parts if p is not None]
        self.leadership = leader.for_store(hub.db, "gateways", lease_s)
        self.interval = interval
        self.running = False
        self.task = None

    async def start(self):
        if not self.parts:
            return
        if isinstance(self.leadership, leader.SoleLeader):
            await self._start_parts()            # one process: at start, as before
            return
        self.task = asyncio.create_task(self._watch())

    async def _watch(self):
        while True:
            try:
                leading = await asyncio.to_thread(self.leadership.lead)
                if leading and not self.running:
                    log.warning("gateways: this process runs them (token %s)",
                                self.leadership.token)
                    await self._start_parts()
                elif not leading and self.running:
                    log.warning("gateways: another process runs them now")
                    await self._stop_parts()
            except Exception:
                log.exception("gateways: start or stop failed")
            await asyncio.sleep(self.interval)

    async def _start_parts(self):
        self.running = True
        for part in self.parts:
            await part.start()

    async def _stop_parts(self):
        self.running = False
        for part in reversed(self.parts):
            with suppress(Exception):
                await part.stop()

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.running:
            await self._stop_parts()
        await asyncio.to_thread(self.leadership.close)
