"""The head-end's mail gateway (docs/email.md): it reads its own mailbox with IMAP IDLE
(aioimaplib) and answers with SMTP submission (aiosmtplib), both over direct TLS verified
against settings.mail_cafile.

- Each mail in INBOX is handled once, then moved to the folder `processed` (kept for the
  record), whatever happened to it: a bad mail never blocks the ones after it. A mail whose
  Message-ID was seen before has no effect (replays; a crash between the effect and the
  move), nor has a mail too large, malformed, from an unknown sender, or without the right
  secret: each gets a logged reason and no answer (mail_commands.py).
- Answers, results of queued work and alarms go through an outbox on disk (mail_spool.py)
  retried every second, so neither a mail server that restarts nor a head-end that stops
  loses any of them; an IMAP connection that drops is opened again, and what arrived
  meanwhile is still in INBOX.
- Meters that exchange by mail (X-BC-Device) go through mail_meters.py: the exchange core,
  answered by mail, and work pushed by mail.
- An alarm channel for escalation.py: mail to the operator's address(es) with a subject
  `[backchannel] ALARM 12 interruption m1 feeder-7`; `ack 12` in a reply (with the token
  line) acknowledges it. Email has no presence, so it is not a presence source."""

import asyncio
import email.policy
import logging
import re
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aioimaplib
import aiosmtplib

from . import escalation, mail_commands, mail_meters, mail_probe, mail_spool

log = logging.getLogger("backchannel.mail")

FINISHED = ("done", "rejected", "unknown_op", "expired", "cancelled")
DONE_FOLDER = "processed"
IDLE_S = 60                     # IDLE is renewed this often (servers drop idle ones at 30 min)
RETRY_S = 1.0
SIZE = re.compile(rb"UID (\d+) RFC822\.SIZE (\d+)")


class MailGateway:
    name = "email"

    def __init__(self, hub, settings):
        self.hub = hub
        self.s = settings
        self.operators = {a.lower(): e for a, e in (settings.mail_operators or {}).items()}
        self.ctx = ssl.create_default_context(cafile=settings.mail_cafile)
        self.spool = mail_spool.Spool(mail_spool.directory(settings))   # not yet accepted
        self.pending = mail_spool.Pending(      # work num -> (address, subject, message id)
            self.spool.path + "/pending.json")
        self.meters = mail_meters.MeterMail(self)
        self.prober = mail_probe.started(self)      # None unless settings.mail_probe_s
        self.tasks = []
        self.loop = None
        self.send_now = asyncio.Event()     # a mail was spooled: send it now, not next tick
        self.connected = asyncio.Event()
        self.counts = {"handled": 0, "rejected": 0, "sent": 0, "send_failures": 0}

    # --- lifecycle (webapp.py's lifespan) ---
    async def start(self):
        escalation.channels(self.hub).append(self)
        self.loop = asyncio.get_running_loop()
        self.meters.start(self.loop)
        self.tasks = [asyncio.create_task(self._read_loop()),
                      asyncio.create_task(self._send_loop())]
        if self.prober is not None:
            self.tasks.append(asyncio.create_task(self.prober.run()))

    async def stop(self):
        self.meters.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def status(self):
        return dict(self.counts, enabled=True, address=self.s.mail_address,
                    connected=self.connected.is_set(), outbox=len(self.spool),
                    operators=len(self.operators), meters=dict(self.meters.counts),
                    probes=self.prober.status() if self.prober is not None else None)

    # --- reading: IMAP IDLE ---
    async def _read_loop(self):
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("mail: IMAP %s:%d: %s: %s; again in %g s", self.s.mail_host,
                            self.s.mail_imap_port, type(e).__name__, e, RETRY_S)
            self.connected.clear()
            await asyncio.sleep(RETRY_S)

    async def _session(self):
        lost = asyncio.Event()

        def on_lost(_exc):          # also wakes an IDLE wait, which would sleep on
            lost.set()
            imap.protocol.idle_queue.put_nowait(aioimaplib.STOP_WAIT_SERVER_PUSH)
        imap = aioimaplib.IMAP4(self.s.mail_host, self.s.mail_imap_port, timeout=15,
                                ssl_context=self.ctx, conn_lost_cb=on_lost)
        try:
            await imap.wait_hello_from_server()
            _ok(await imap.login(self.s.mail_address, self.s.mail_password), "login")
            await imap.create(DONE_FOLDER)          # "already exists" after the first time
            _ok(await imap.select("INBOX"), "select")
            self.connected.set()
            log.info("mail: reading %s over IMAP IDLE", self.s.mail_address)
            while not lost.is_set():
                await self._drain(imap, lost)
                idle = await imap.idle_start(timeout=IDLE_S)
                try:
                    await imap.wait_server_push(timeout=IDLE_S)
                except TimeoutError:
                    pass
                imap.idle_done()
                await asyncio.wait_for(idle, 10)
        finally:
            try:
                await asyncio.wait_for(imap.logout(), 2)
            except Exception:
                pass

    async def _drain(self, imap, lost):
        """Handle every mail in INBOX, oldest first, and move each to DONE_FOLDER."""
        resp = await imap.uid("fetch", "1:*", "(UID RFC822.SIZE)")
        found = [(int(u), int(n)) for line in resp.lines if isinstance(line, bytes)
                 for u, n in SIZE.findall(line)]
        for uid, size in sorted(found):
            if size > mail_commands.MAX_MAIL:
                self._reject(None, "too large: %d bytes (at most %d)"
                             % (size, mail_commands.MAX_MAIL))
            else:
                resp = await imap.uid("fetch", str(uid), "(BODY.PEEK[])")
                raw = next((bytes(x) for x in resp.lines if isinstance(x, bytearray)), None)
                try:
                    await self.handle_any(raw or b"")
                except Exception:   # moved aside all the same: it must not block the rest
                    log.exception("mail uid %d: handling failed", uid)
            _ok(await _answer(imap.uid("move", str(uid), DONE_FOLDER), lost, imap.timeout),
                "move")

    # --- one mail ---
    async def handle_any(self, raw):
        """A meter's exchange (mail_meters.py) or an operator's commands."""
        if not mail_meters.is_meter_mail(raw):
            return self.handle(raw)
        try:
            await self.meters.handle(raw)
            self.counts["handled"] += 1
        except mail_meters.Refused as e:
            self.counts["rejected"] += 1
            log.warning("mail from a meter: no effect: %s", e)

    def handle(self, raw):
        """Everything a received mail may cause; nothing at all for a bad one."""
        mail = None
        try:
            mail = mail_commands.parse(raw)
            who = mail_commands.authenticate(self.hub, self.operators, mail)
            with self.hub.tx() as db:
                if db.one("SELECT 1 FROM mail_seen WHERE message_id = ?", mail.message_id):
                    raise mail_commands.Rejected("replay of %s" % mail.message_id)
                db.run("INSERT INTO mail_seen(message_id, sender, at) VALUES (?, ?, ?)",
                       mail.message_id, mail.sender, time.time())
        except mail_commands.Rejected as e:
            self._reject(mail, str(e))
            return
        replies, rows = mail_commands.handle(self.hub, who, mail.text)
        self.counts["handled"] += 1
        log.info("mail: %d command(s) from %s (%s)", len(replies), mail.sender, who.name)
        self.send(mail.sender, _re(mail.subject), "\n\n".join(replies), mail.message_id)
        for row in rows:
            self.pending[row["num"]] = (mail.sender, _re(mail.subject), mail.message_id)

    def _reject(self, mail, reason):
        self.counts["rejected"] += 1
        log.warning("mail %s: no effect, no answer: %s",
                    mail.message_id if mail is not None else "(unparsed)", reason)

    # --- sending: an outbox retried every second ---
    def send(self, to, subject, body, in_reply_to=None):
        msg = EmailMessage()
        msg["From"] = self.s.mail_address
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.s.mail_address.split("@")[1])
        msg["Auto-Submitted"] = "auto-replied" if in_reply_to else "auto-generated"
        if in_reply_to:
            msg["In-Reply-To"] = msg["References"] = in_reply_to
        msg.set_content(body + "\n")
        self.send_raw(to, msg.as_bytes(policy=email.policy.SMTP))

    def send_raw(self, to, raw):
        """Keep a mail (bytes) for `to` on disk until the SMTP server accepts it."""
        self.spool.put(to, raw)
        self._wake_sender()

    def _wake_sender(self):
        """Send at once rather than at the send loop's next tick (RETRY_S): a meter's round
        trip waits on its answer, and a firmware download is a hundred round trips. Safe from
        any thread."""
        loop = self.loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            self.send_now.set()
            return
        try:
            loop.call_soon_threadsafe(self.send_now.set)
        except RuntimeError:        # the loop is closed: shutting down
            pass

    async def _send_loop(self):
        while True:
            self.send_now.clear()   # set from here on: flushed in this round or the next
            try:
                self._collect_results()
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mail: send loop failed")
            try:
                await asyncio.wait_for(self.send_now.wait(), RETRY_S)
            except TimeoutError:
                pass

    async def _flush(self):
        for name in self.spool.names():
            kept = self.spool.read(name)
            if kept is None:
                continue
            to, raw = kept
            try:
                await aiosmtplib.send(raw, sender=self.s.mail_address, recipients=[to],
                                      hostname=self.s.mail_host,
                                      port=self.s.mail_smtp_port, use_tls=True,
                                      tls_context=self.ctx, username=self.s.mail_address,
                                      password=self.s.mail_password, timeout=15)
            except aiosmtplib.SMTPRecipientsRefused as e:
                self.spool.set_aside(name, "recipient %s refused: %s" % (to, e))
                continue
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                self.counts["send_failures"] += 1
                log.warning("mail: sending %s to %s failed (%s); kept for retry", name, to, e)
                return
            self.spool.done(name)
            self.counts["sent"] += 1

    def _collect_results(self):
        for num, (to, subject, ref) in self.pending.snapshot():
            row = self.hub.db.one("SELECT * FROM work WHERE num = ?", num)
            if row is None or row["status"] in FINISHED:
                del self.pending[num]
                if row is not None:
                    self.send(to, subject, mail_commands.result_mail(row), ref)

    # --- escalation.py: a channel ---
    def addresses_of(self, operator):
        return sorted(a for a, e in self.operators.items()
                      if isinstance(e, dict) and e.get("token") == operator)

    def notify(self, hub, operator, alarm):
        addresses = self.addresses_of(operator)
        subject, body = alarm_mail(alarm)
        for address in addresses:
            self.send(address, subject, body)
        return bool(addresses)


def alarm_mail(alarm):
    """(subject, body): a greppable subject, the event's numbers in plain text."""
    subject = "[backchannel] ALARM %d %s %s %s" % (alarm["id"], alarm["kind"], alarm["device"],
                                                  alarm["grp"])
    lines = ["alarm:    %d" % alarm["id"], "kind:     %s" % alarm["kind"],
             "meter:    %s" % alarm["device"], "group:    %s" % alarm["grp"],
             "state:    %s" % alarm["state"],
             "raised:   %s" % time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(alarm["raised"]))]
    body = alarm.get("body") if isinstance(alarm.get("body"), dict) else {}
    lines += ["%-9s %s" % (k + ":", body[k]) for k in sorted(body)]
    lines += ["", "Reply with the line `ack %d` and your `token: SECRET` line to take it."
              % alarm["id"]]
    return subject, "\n".join(lines)


def _re(subject):
    return subject if subject.lower().startswith("re:") else "Re: " + (subject or "commands")


async def _answer(command, lost, timeout):
    """An IMAP command's answer: a TimeoutError after `timeout`, a ConnectionResetError as
    soon as the connection is lost. aioimaplib sends UID MOVE without a timeout and leaves it
    waiting for ever on a connection that died (seen: a mail server stopped mid-move, and the
    head-end read no mail again until restarted)."""
    task = asyncio.ensure_future(command)
    gone = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    if lost.is_set():
        raise ConnectionResetError("the IMAP connection was lost")
    raise TimeoutError("no answer in %g s" % timeout)


def _ok(resp, what):
    if resp.result != "OK":
        raise ConnectionError("IMAP %s: %s" % (what, resp.result))
