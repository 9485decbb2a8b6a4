# The exchange loop over HTTP long-poll (docs/protocol.md).
#
# The meter always calls out: each request carries its outbox items and executed work ids,
# each response carries an ack, work and when to call next. Triggers: scheduled (the
# head-end's `next`), event-driven (kick() cuts a waiting long-poll short), and at once
# while the head-end says more is waiting or results are queued. Failures back off
# exponentially with jitter. Every network await has a timeout (httpc).

import asyncio
import os
import random
import sys
from binascii import hexlify

import envelope
from memory_guard import Batch
from mpshim import ticks_diff, ticks_ms

CUT_HELD_S = 5   # a long-poll closed by the network after holding this long was cut, not failed

# Slack on top of a wait's own timeouts before the watchdog calls comms stalled (connect,
# write and header reads each have httpc's 10 s).
ALIVE_MARGIN_S = 60

class ExchangeError(Exception):
    pass


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def transit_ms(resp, rtt_ms):
    """How long an answer may have spent on the way: the request's round trip less the time
    the head-end says it held the request (`held_ms`, a long-poll) before stamping `time`."""
    held = resp.get("held_ms")
    if isinstance(held, int) and not isinstance(held, bool) and 0 <= held <= rtt_ms:
        return rtt_ms - held
    return rtt_ms


def apply_response(link, resp, answer=True, rtt_ms=0):
    """Apply a verified, bound response (either transport): ack, server time (only from the
    answer to this meter's own request, never from a push, and only as well as its transit
    allows: rtt_ms is the request's round trip), next contact, work.
    Returns True when the meter should exchange again at once: results just queued, more
    work waiting, or a backlog still to send. Only an ack that moved counts, so a stuck ack
    never causes a tight loop."""
    ack = resp.get("ack")
    acked_before = link.outbox.acked
    # an ack is of one outbox epoch: after a wipe, the old epoch's ack must not delete ours
    if (isinstance(ack, int) and not isinstance(ack, bool)
            and resp.get("epoch") == link.outbox.epoch):
        link.outbox.ack(ack)
    if answer and _number(resp.get("time")):
        link.clock.server_time(resp["time"], exact_ms=resp.get("time_ms"),
                               transit_ms=transit_ms(resp, rtt_ms))
    nxt = resp.get("next")
    if _number(nxt) and 0 <= nxt <= 86400:
        link.poll_s = nxt
    work = resp.get("work")
    work = work if isinstance(work, list) else []
    for item in work:
        link.dispatcher.handle(item)
    moved = link.outbox.acked > acked_before
    chunk = resp.get("chunk")  # the answer to our `fetch` (docs/ota.md)
    updater = getattr(link, "updater", None)
    fetched = chunk is not None and updater is not None and updater.chunk(chunk)
    return (bool(work) or fetched or resp.get("more") is True
            or (moved and link.outbox.depth() > 0))


def add_fetch(link, body):
    """While a firmware download runs: ask for the next chunk, and for no long-poll."""
    updater = getattr(link, "updater", None)
    fetch = updater.fetch(getattr(link, "fetch_len", None)) if updater is not None else None
    if fetch is not None:
        body["fetch"] = fetch
        body["wait"] = 0


def request_body(link, wait, raw=False):
    """(items, done, body): the exchange request any transport sends (docs/protocol.md);
    raw: the items as the outbox's JSON records (bytes, outbox.peek_raw), for a codec's
    parts(), which splices them in rather than parsing and serialising each again."""
    peek = link.outbox.peek_raw if raw else link.outbox.peek
    items = peek(link.batch.items, link.batch.bytes)
    done = link.inbox.ids()
    body = {
        "v": 2,
        "device": link.device_id,
        "ts": int(link.clock.now()),
        "epoch": link.outbox.epoch,
        "nonce": new_nonce(),
        "wait": wait,
        "room": link.dispatcher.room(),
    }
    if done:  # empty lists are left out: an idle exchange stays small
        body["done"] = done
    if items:
        body["items"] = items
    add_fetch(link, body)
    return items, done, body


def sign_key(link):
    """The key a request is signed with: the new one once the head-end holds it (rekey.py)."""
    rk = getattr(link, "rekey", None)
    return link.key if rk is None else rk.sign_key(link.key)


def down_keys(link):
    """Every key a message from the head-end may be signed with (both, mid-rotation)."""
    rk = getattr(link, "rekey", None)
    return (link.key,) if rk is None else rk.keys(link.key)


def rekey_answered(link, resp, used):
    """A verified, bound message signed with `used`: the key rotation's steps 2 and 3."""
    rk = getattr(link, "rekey", None)
    if rk is not None and used is not None:
        rk.answered(resp, used, link.key)


def accept_down(link, resp, used=None):
    """A signed message the head-end sent down a push transport (MQTT, XMPP), bound to this
    connection: the answer to the latest request, or a push. Counts it, confirms what that
    request reported done, and applies it; another request goes up at once when it asks.
    used: the key it was signed with (a key rotation in flight, rekey.py)."""
    rekey_answered(link, resp, used)
    answer = resp.get("re") is not None
    link.exchanges += 1
    link.last_ok = link.clock.now()
    link.failures = 0
    link.batch.exchanged()
    rtt_ms = 0
    if answer:
        link.time_refusals = 0
    if answer and link.awaiting is not None:  # it stored what we sent
        rtt_ms = ticks_diff(ticks_ms(), link.awaiting)
        link.awaiting = None
        if link.sent_done:
            link.inbox.confirm(link.sent_done)
            link.sent_done = []
    if apply_response(link, resp, answer, rtt_ms):
        link.want_up = True
    if link.after_exchange is not None:
        link.after_exchange()


def answer_overdue(link, now):
    """No answer to the request in flight within answer_s: a failure, then a back-off.
    True when it was overdue."""
    if link.awaiting is not None and ticks_diff(now, link.awaiting) > link.answer_s * 1000:
        link.awaiting = None
        link.failures += 1
        link.last_error = "no answer from the head-end within %g s" % link.answer_s
        link.hold_at = now
        link.hold_ms = int(link.backoff_s() * 1000)
        return True
    return False


def time_refusal(link, resp, nonce):
    """The head-end's signed refusal of our request's `ts` (docs/protocol.md "Time refusal"):
    adopt its time when it answers this very request; True if adopted. Not twice in a row:
    a path slower than the replay window backs off between tries instead of looping."""
    if (not isinstance(resp, dict) or not envelope.bound(resp, link.device_id, nonce)
            or not _number(resp.get("time"))):
        return False
    if link.time_refusals:      # refused again right after adopting: back off this once
        link.time_refusals = 0
        return False
    link.time_refusals += 1
    link.clock.server_time(resp["time"], 0, exact_ms=resp.get("time_ms"))
    return True


def signed_by(sig, data, keys):
    """The key among `keys` whose signature over `data` is `sig`, or None."""
    for key in keys:
        if envelope.same(sig, envelope.sign(key, data)):
            return key
    return None


def codec(name):
    """The encoding module for `name` (config ENCODINGS): imported only when chosen, so a
    meter holds only its own encoding's code (docs/performance.md)."""
    if name not in ("json", "xml", "soap", "wbxml"):
        raise ValueError("unknown encoding %r" % (name,))
    return __import__("enc_" + name)


def new_nonce():
    # From os.urandom, not `random`: a board may seed `random` for a repeatable signal
    # (boards/sim_board.py does), and nonces repeated after a restart are refused as replays (409).
    try:
        return hexlify(os.urandom(8)).decode()
    except (AttributeError, NotImplementedError, OSError):  # a port without urandom
        return "%08x%08x" % (random.getrandbits(32), random.getrandbits(32))


class Comms:
    def __init__(self, device_id, key, http, outbox, inbox, dispatcher, clock, wait_s=25,
                 backoff_base=1.0, backoff_cap=60.0, batch_items=32, batch_bytes=16384,
                 encoding="json"):
        self.device_id = device_id
        self.codec = codec(encoding)
        self.key = key
        self.http = http
        self.outbox = outbox
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.clock = clock
        self.wait_s = wait_s
        self.poll_s = 0
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.batch = Batch(batch_items, batch_bytes)    # halved after a MemoryError
        self.wake = asyncio.Event()
        self.kicked = False
        self.waiting = False
        self.task = None
        self.failures = 0
        self.exchanges = 0
        self.last_ok = None
        self.last_error = None
        self.after_exchange = None  # callback, e.g. to reboot once a result is out
        self.wait_cap = wait_s    # lowered when the path cuts long-polls (_cut_by_the_path)
        self.cut_polls = 0
        self.poll_wait = 0
        self.poll_started = 0
        self.heartbeat = None  # callback(s): "alive; next sign within s" (health.Heartbeat)
        self.updater = None  # firmware download: a `fetch` on each request while one runs
        self.time_refusals = 0  # signed time refusals adopted since the last answer
        self.rekey = None       # a key rotation in flight (rekey.py)

    def kick(self):
        """Exchange now: cut a waiting long-poll short (nothing is lost; see protocol.md)."""
        self.kicked = True
        self.wake.set()
        if self.waiting and self.task is not None:
            self.task.cancel()

    def backoff_s(self):
        # capped at 60 s: a meter reporting every second would otherwise fill its outbox
        # (and start dropping old readings) during one long back-off
        delay = min(self.backoff_cap, self.backoff_base * (1 << min(self.failures, 16)))
        return delay * (0.5 + random.random() / 2)

    async def run(self):
        while True:
            self.kicked = False
            self._alive(self.wait_s + 15 + ALIVE_MARGIN_S)  # the exchange's own timeouts
            try:
                self.task = asyncio.create_task(self.exchange())
                again = await self.task
                self.failures = 0
                self.batch.exchanged()
            except asyncio.CancelledError:
                if not self.kicked:
                    raise  # the app is stopping
                self.http.close()
                continue
            except Exception as exc:  # network down, head-end error: back off and retry
                if self._cut_by_the_path(exc):
                    self.http.close()
                    continue
                self.failures += 1
                error = "%s: %s" % (type(exc).__name__, exc)
                if error != self.last_error:    # on the console once, not every retry
                    sys.stderr.write("comms: exchange failed: %s\n" % error)
                self.last_error = error
                self.http.close()
                if isinstance(exc, MemoryError):
                    self.batch.shrink()
                await self._sleep(self.backoff_s())
                continue
            finally:
                self.task = None
            if self.after_exchange is not None:
                self.after_exchange()
            if not (again or self.kicked):
                await self._sleep(self.poll_s)

    def _cut_by_the_path(self, exc):
        """A NAT box or proxy that drops connections idle for less than our long-poll closes
        each one mid-hold. Not a failure to back off from: hold a little less than it allowed
        from now on, and call again at once (at most once per CUT_HELD_S)."""
        if isinstance(exc, asyncio.TimeoutError) or not isinstance(exc, (EOFError, OSError)):
            return False
        held = ticks_diff(ticks_ms(), self.poll_started) / 1000
        if self.poll_wait < CUT_HELD_S or held < CUT_HELD_S:
            return False
        self.wait_cap = max(CUT_HELD_S - 1, int(held) - 2)
        self.cut_polls += 1
        return True

    def _alive(self, seconds):
        if self.heartbeat is not None:
            self.heartbeat(seconds)

    async def _sleep(self, seconds):
        self.wake.clear()
        if seconds <= 0 or self.kicked:
            return
        self._alive(seconds + ALIVE_MARGIN_S)
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def build(self, wait):
        """(items, done, body): the body as a list of bytes-like pieces (codec.parts), each
        written to the connection in turn, so no one block holds the whole request."""
        items, done, body = request_body(self, wait, raw=True)
        self.poll_wait = body["wait"]
        self.nonce = body["nonce"]
        return items, done, self.codec.parts(body)

    async def exchange(self):
        """One request/response. Returns True when the meter should call again at once."""
        await self.http.connect()   # before the batch is built: TLS buffers first
        backlog = self.outbox.depth() > self.batch.items
        _, done, raw = self.build(0 if backlog else min(self.wait_s, self.wait_cap))
        self.poll_started = ticks_ms()
        headers = {"Content-Type": self.codec.CONTENT_TYPE,
                   "X-BC-Signature": envelope.sign(sign_key(self), raw)}
        self.waiting = True
        try:
            status, hdrs, data = await self.http.request(
                "POST", "/v1/exchange", raw, headers, timeout=self.wait_s + 15)
        finally:
            self.waiting = False
        rtt_ms = ticks_diff(ticks_ms(), self.poll_started)
        used = signed_by(hdrs.get("x-bc-signature", ""), data, down_keys(self))
        signed = used is not None
        if status == 409 and signed and time_refusal(self, self._decode(data), self.nonce):
            return True     # our clock was off: the head-end's time is adopted; again at once
        if status != 200:
            raise ExchangeError("head-end answered %d: %s" % (status, data[:200]))
        if not signed:
            raise ExchangeError("response signature does not match; ignored")
        try:
            resp = self.codec.decode(data)
        except ValueError as exc:   # XmlError too: a counted failure, then a retry
            raise ExchangeError("malformed response: %s" % exc)
        if not envelope.bound(resp, self.device_id, self.nonce):
            raise ExchangeError("response does not answer this request; ignored")
        self.time_refusals = 0
        self.exchanges += 1
        self.last_ok = self.clock.now()
        if done:
            self.inbox.confirm(done)
        rekey_answered(self, resp, used)
        return apply_response(self, resp, rtt_ms=rtt_ms)

    def _decode(self, data):
        try:
            return self.codec.decode(data)
        except ValueError:
            return None
