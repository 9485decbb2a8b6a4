# The exchange over email (docs/email.md "The meter's mail transport"): the meter submits its
# signed request as a mail (firmware/mail_mime.py) over SMTPS with AUTH to the head-end's
# address, and collects the head-end's mails from its own mailbox, by IMAP IDLE (the server
# tells it of a new mail within a second) or by POP3 polling every poll_every_s.
#
# One TLS connection at a time (a plain ESP32 cannot hold two): the IMAP IDLE connection is
# closed while a mail is submitted, and opened again after it.
#
# As over MQTT (mqtt_comms.py): one request in flight until its answer arrives (or the answer
# wait passes: a counted failure, then a back-off; AnswerWait follows the round trips seen,
# within ANSWER_MIN_S..answer_s, so a lost answer costs seconds, not answer_s); a mail is
# applied only when its signature matches and it is bound (v2) to our latest request (`re`)
# or pushed for this run's random `conn`; time only from an answer. Every mail taken from the
# box is deleted, good or bad, so none blocks the ones after it; a mail read twice (a drop
# before the delete) is bound to an old nonce or carries work the inbox has run already: one
# effect.
#
# When to send: at once after work arrived (its results), when the head-end says more is
# waiting, or on a time refusal; new readings and kicks at most every send_every_s (a mail
# per reading would flood a mailbox); and at least every poll_s (the head-end's `next`, else
# heartbeat_s) carrying `done`.

import asyncio
import json
import random
import sys

import envelope
import mail_mime
from comms import (
    ALIVE_MARGIN_S,
    apply_response,
    down_keys,
    new_nonce,
    rekey_answered,
    request_body,
    sign_key,
    signed_by,
    time_refusal,
)
from httpc import tls_reason
from mail_line import LineConn
from memory_guard import Batch
from mpshim import ticks_diff, ticks_ms

ANSWER_POLL_S = 3       # POP3: how often to look for the answer to a request in flight
ANSWER_MIN_S = 15       # the adaptive answer wait never goes below this
# A firmware download asks for this much per mail (updater.fetch): each chunk is a round
# trip of two mails, two TLS handshakes and a login (about 1.5 s), so twice FETCH_LEN, the
# head-end's cap (release_store.CHUNK_MAX). Its answer carries 8 KiB as base64 in the JSON,
# base64 again in the mail: about 15 KB, well inside MAX_PAYLOAD and MAX_MAIL, but parsing
# it holds about 44 KB of heap where a 4 KiB chunk's holds 23 KB (docs/email.md): a mail
# refused for a MemoryError halves the length, down to FETCH_MIN (updater.FETCH_LEN), so a
# tight heap slows a download rather than stalls it on the same chunk for ever.
FETCH_LEN = 8192
FETCH_MIN = 4096


class AnswerWait:
    """How long to wait for the answer to a request in flight: the cap (answer_s) until an
    answer has been timed, then SRTT + 4 RTTVAR of the round trips seen (RFC 6298's
    retransmission timeout, in whole ms), at least floor_s; doubled after each unanswered
    request (up to the cap), back to the estimate at the next answer."""

    def __init__(self, cap_s, floor_s=ANSWER_MIN_S):
        self.cap_ms = int(cap_s * 1000)
        self.floor_ms = min(int(floor_s * 1000), self.cap_ms)
        self.srtt_ms = None
        self.rttvar_ms = 0
        self.misses = 0

    def sample(self, rtt_ms):
        rtt_ms = max(0, min(int(rtt_ms), self.cap_ms))
        if self.srtt_ms is None:
            self.srtt_ms, self.rttvar_ms = rtt_ms, rtt_ms // 2
        else:
            self.rttvar_ms = (3 * self.rttvar_ms + abs(self.srtt_ms - rtt_ms)) // 4
            self.srtt_ms = (7 * self.srtt_ms + rtt_ms) // 8
        self.misses = 0

    def missed(self):
        self.misses = min(self.misses + 1, 8)

    def ms(self):
        if self.srtt_ms is None:
            return self.cap_ms
        return min(self.cap_ms, max(self.floor_ms, self.srtt_ms + 4 * self.rttvar_ms)
                   << self.misses)


def log(msg):
    try:
        sys.stderr.write("mail: %s\n" % msg)
    except Exception:
        pass


class MailComms:
    def __init__(self, device_id, key, host, user, password, to, outbox, inbox, dispatcher,
                 clock, ssl, smtp_port=465, pickup="imap", imap_port=993, pop3_port=995,
                 poll_every_s=60, send_every_s=60, heartbeat_s=300, answer_s=120, idle_s=25,
                 timeout_s=15, backoff_base=1.0, backoff_cap=60.0, batch_items=32,
                 batch_bytes=16384):
        self.device_id = device_id
        self.key = key
        self.host = host
        self.user = user
        self.password = password
        self.to = to
        self.outbox = outbox
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.clock = clock
        self.ssl = ssl
        self.smtp_port = smtp_port
        self.pickup = pickup
        self.collect_port = imap_port if pickup == "imap" else pop3_port
        self.poll_every_s = poll_every_s
        self.send_every_s = send_every_s
        self.heartbeat_s = heartbeat_s
        self.answer_s = answer_s        # the cap of the adaptive wait (AnswerWait)
        self.answer_wait = AnswerWait(answer_s)
        self.idle_s = idle_s
        self.timeout_s = timeout_s
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch = Batch(batch_items, batch_bytes)    # halved after a MemoryError
        self.wait_s = 0                 # interface parity with Comms (no long-poll)
        self.poll_s = 0                 # the head-end's `next`; 0: heartbeat_s
        self.failures = 0
        self.exchanges = 0
        self.last_ok = None
        self.last_error = None
        self.after_exchange = None
        self.heartbeat = None
        self.updater = None
        self.fetch_len = FETCH_LEN      # updater.fetch's length over this link
        self.time_refusals = 0
        self.kicked = False
        self.rekey = None               # a key rotation in flight (rekey.py): both keys
        self.want_up = True
        self.conn = new_nonce()         # pushes of this run are bound to it (RAM only)
        self.sent_nonce = None
        self.sent_next_seq = None
        self.sent_done = []
        self.awaiting = None            # ticks our request was submitted, until answered
        self.sent_at = None
        self.hold_at = None
        self.hold_ms = 0
        self.polled_at = None
        self.line = None                # the one open TLS connection (IMAP while idling)
        self.imap = None
        self.wake = asyncio.Event()
        self.counts = {"sent": 0, "received": 0, "refused": 0, "too_large": 0,
                       "bytes_out": 0, "bytes_in": 0}
        # The clients this meter uses, imported now, while the heap is not yet taken by a
        # TLS session: importing one later from source can fail for want of memory on a
        # board (the board interpreter did at 192 KiB; precompiled .mpy needs far less).
        import smtp_client  # noqa: F401
        if pickup == "imap":
            import imap_idle  # noqa: F401
        else:
            import pop3_client  # noqa: F401

    # --- the interface app.py uses ---
    def kick(self):
        self.kicked = True
        self.wake.set()

    def backoff_s(self):
        delay = min(self.backoff_cap, self.backoff_base * (1 << min(self.failures, 16)))
        return delay * (0.5 + random.random() / 2)

    def _alive(self, wait_s):
        if self.heartbeat is not None:
            self.heartbeat(wait_s + 4 * self.timeout_s + self.idle_s + ALIVE_MARGIN_S)

    async def run(self):
        while True:
            self._alive(0)
            try:
                if self.send_due(ticks_ms()):
                    self._close()       # pause the IDLE connection: one TLS at a time
                    await self.submit()
                await self.collect()
            except Exception as exc:    # network down, server refusal, protocol error
                self._close()
                self.failures += 1
                self.last_error = self.reason(exc)
                log(self.last_error)
                if isinstance(exc, MemoryError):
                    self.batch.shrink()
                delay = self.backoff_s()
                self._alive(delay)
                await self._sleep(delay)

    def reason(self, exc):
        tls = tls_reason(exc) if self.ssl is not None else None
        if tls:
            return "TLS with %s failed: %s" % (self.host, tls)
        if isinstance(exc, asyncio.TimeoutError):
            return "mail server %s timed out" % self.host
        return "%s: %s" % (type(exc).__name__, exc)

    def _close(self):
        if self.line is not None:
            self.counts["bytes_in"] += self.line.bytes_in
            self.counts["bytes_out"] += self.line.bytes_out
            self.line.close()
        self.line = self.imap = None

    async def _sleep(self, seconds):
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # --- sending ---
    def send_due(self, now):
        if self.awaiting is not None:
            waited = self.answer_wait.ms()
            if ticks_diff(now, self.awaiting) <= waited:
                return False
            self.awaiting = None        # unanswered: a failure, then a back-off
            self.answer_wait.missed()
            self.failures += 1
            self.last_error = "no answer from the head-end within %d s" % (waited // 1000)
            self.hold_at = now
            self.hold_ms = int(self.backoff_s() * 1000)
        if self.hold_at is not None and ticks_diff(now, self.hold_at) < self.hold_ms:
            return False
        if self.want_up or self.sent_at is None:
            return True
        since = ticks_diff(now, self.sent_at)
        if (self.kicked or self.outbox.next_seq != self.sent_next_seq) and \
                since >= self.send_every_s * 1000:
            return True
        return since >= (self.poll_s if self.poll_s > 0 else self.heartbeat_s) * 1000

    async def submit(self):
        """Submit the signed request as one mail over SMTPS (then QUIT)."""
        from smtp_client import submit  # imported already (__init__): no compile here

        _, done, body = request_body(self, 0)
        body["conn"] = self.conn
        raw = json.dumps(body).encode()
        payload = envelope.sign(sign_key(self), raw).encode() + b" " + raw
        mail = mail_mime.chunks(self.user, self.to, self.device_id, self.outbox.next_seq,
                                 body["nonce"], payload)
        self.line = LineConn(self.host, self.smtp_port, self.ssl, self.timeout_s)
        await self.line.open()
        await submit(self.line, self.user, self.password, self.user, self.to, mail)
        self._close()
        now = ticks_ms()
        self.sent_nonce = body["nonce"]
        self.sent_next_seq = self.outbox.next_seq
        self.sent_done = done
        self.kicked = self.want_up = False
        self.awaiting = self.sent_at = now
        self.hold_at = None
        self.polled_at = None           # look for the answer soon
        self.counts["sent"] += 1

    # --- collecting ---
    async def collect(self):
        """IMAP: drain, then IDLE until a send is due. POP3: poll when due, else wait."""
        if self.pickup == "imap":
            await self._imap()
        else:
            await self._pop3()

    async def _open(self):
        self.line = LineConn(self.host, self.collect_port, self.ssl, self.timeout_s)
        await self.line.open()

    async def _imap(self):
        from imap_idle import Imap

        if self.imap is None:
            await self._open()
            self.imap = Imap(self.line, mail_mime.MAX_MAIL)
            await self.imap.login(self.user, self.password)
            await self._drain()
        self.wake.clear()
        self._alive(self.idle_s)
        if await self.imap.idle(self.idle_s, lambda: self.send_due(ticks_ms())):
            await self._drain()

    async def _drain(self):
        handled, refused = await self.imap.drain(self.down)
        self._count(handled, refused)

    def _count(self, handled, refused):
        self.counts["received"] += handled
        if refused:
            self.counts["too_large"] += refused
            self.last_error = "%d mail(s) over %d bytes deleted unread" % (refused,
                                                                          mail_mime.MAX_MAIL)
            log(self.last_error)

    async def _pop3(self):
        import pop3_client

        now = ticks_ms()
        every = ANSWER_POLL_S if self.awaiting is not None else self.poll_every_s
        if self.polled_at is None or ticks_diff(now, self.polled_at) >= every * 1000:
            await self._open()
            got = await pop3_client.collect(self.line, self.user, self.password, self.down,
                                            mail_mime.MAX_MAIL)
            self._close()
            self.polled_at = ticks_ms()
            self._count(*got)
        if not self.send_due(ticks_ms()):
            self._alive(1)
            await self._sleep(1)

    # --- what arrives ---
    def _refuse(self, why):
        self.counts["refused"] += 1
        self.last_error = "mail refused: %s" % why
        log(self.last_error)

    def down(self, raw):
        """One mail from the box; never raises (the mail is deleted whatever happens)."""
        try:
            self._down(raw)
        except Exception as exc:    # a bug, or a MemoryError: logged, the mail still goes
            if isinstance(exc, MemoryError):
                self.fetch_len = max(FETCH_MIN, self.fetch_len // 2)
            self._refuse("%s: %s" % (type(exc).__name__, exc))

    def _down(self, raw):
        try:
            _, payload = mail_mime.parse(raw)
            sig, body = mail_mime.envelope_of(payload)
        except mail_mime.MimeError as exc:
            return self._refuse(str(exc))
        used = signed_by(sig, body, down_keys(self))
        if used is None:
            return self._refuse("signature does not match")
        try:
            resp = json.loads(body)
        except ValueError:
            resp = None
        if not isinstance(resp, dict):
            return self._refuse("not a JSON object")
        if "error" in resp:     # the signed time refusal of our request
            if self.awaiting is not None and time_refusal(self, resp, self.sent_nonce):
                self.awaiting = None
                self.want_up = True
            return None
        if not envelope.bound(resp, self.device_id, self.sent_nonce, self.conn):
            return self._refuse("answers no request of this run (late, or read twice)")
        rekey_answered(self, resp, used)
        answer = resp.get("re") is not None
        self.exchanges += 1
        self.last_ok = self.clock.now()
        self.failures = 0
        self.batch.exchanged()
        rtt_ms = 0
        if answer:
            self.time_refusals = 0
            if self.awaiting is not None:
                rtt_ms = ticks_diff(ticks_ms(), self.awaiting)
                self.answer_wait.sample(rtt_ms)
            self.awaiting = None
            self.sent_nonce = None      # one effect: the same answer read again is refused
            if self.sent_done:
                self.inbox.confirm(self.sent_done)
                self.sent_done = []
        if apply_response(self, resp, answer, rtt_ms):
            self.want_up = True
        if self.after_exchange is not None:
            self.after_exchange()
        return None
