# Fuzz harness for the firmware's parsers, shared by CPython and MicroPython.
#
# Imported by host_tests/test_fuzz_firmware.py (hypothesis, CPython) and run as a driver
# under the MicroPython unix port: `micropython fuzz_parsers.py <tmpdir>` reads one case a
# line from stdin, JSON [parser, input], and prints one JSON line per case:
# "ok", "err:<ExceptionClass>" (a documented, clear error) or "crash:<Class>: <message>".
#
# Parsers (input):
#   http      hex bytes: an HTTP response fed to httpc.HttpClient._exchange via a fake stream
#   work      [item, sign]: a work item for ops.Dispatcher.handle, signed first when sign
#             is true (so the op, role and args decoding is reached); handled twice, the
#             second time must be "duplicate" whenever the first one entered the inbox
#   response  a JSON value: a verified response body for comms.apply_response
#   config    a JSON value: config.validate(changes)
#   cfgfile   hex bytes: a config file for config.load
#   outbox    [seg hex, acked hex or null, seq hex or null]: an outbox directory recovered
#             by outbox.Outbox, then peek, append, ack and reopen
#   manifest  [text, sig]: an update's manifest and signature (mp_scripts/fuzz_manifest.py)
#   xml, soap, wbxml, xmlstream  hex bytes: a response body in that encoding, or XML fed to
#             the tokenizer in pieces (mp_scripts/fuzz_encodings.py)
#   mime, imap, pop3  hex bytes: a received mail, or what an IMAP or POP3 server sends
#             (mp_scripts/fuzz_mail.py)
#   stanza    hex bytes: an XMPP server's stream for the meter's stanza reader and its
#             XMPP transport (mp_scripts/fuzz_stanza.py)

import json
import sys

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio
from binascii import unhexlify

import comms
import config
import envelope
import fuzz_encodings
import fuzz_guarded
import fuzz_mail
import fuzz_manifest
import fuzz_stanza
import httpc
import ops
import store
from fake_app import DEVICE, KEY, FakeApp, FakeInbox, FakeOutbox
from outbox import Outbox, OutboxFull

STATUSES = ("done", "rejected", "unknown_op", "expired", "duplicate")

# Documented errors per parser: anything else is a crash.
ALLOWED = {
    "http": (httpc.HttpError, EOFError),
    "work": (),
    "response": (),
    "config": (config.ConfigError,),
    "cfgfile": (config.ConfigError, store.CorruptRecord),
    "outbox": (),
    "manifest": fuzz_manifest.ALLOWED,
    "xml": fuzz_encodings.ALLOWED,
    "soap": fuzz_encodings.ALLOWED,
    "wbxml": fuzz_encodings.ALLOWED,
    "xmlstream": fuzz_encodings.ALLOWED,
    "mime": fuzz_mail.ALLOWED,
    "imap": fuzz_mail.ALLOWED,
    "pop3": fuzz_mail.ALLOWED,
    "stanza": fuzz_stanza.ALLOWED,
    "guarded": fuzz_guarded.ALLOWED,
}


class Crash(Exception):
    pass


# --- http ---

class FakeReader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    async def readline(self):
        i = self.data.find(b"\n", self.pos)
        end = len(self.data) if i < 0 else i + 1
        line = self.data[self.pos:end]
        self.pos = end
        return line

    async def readexactly(self, n):
        if self.pos + n > len(self.data):
            self.pos = len(self.data)
            raise EOFError("short body")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


class FakeWriter:
    def __init__(self):
        self.sent = b""

    def write(self, data):
        self.sent += data

    async def drain(self):
        pass

    def close(self):
        pass


def run_http(data):
    client = httpc.HttpClient("http://meter.test:8080/hub", timeout=5)
    client.reader = FakeReader(data)
    client.writer = FakeWriter()
    status, headers, body = asyncio.run(
        client._exchange("POST", "/v1/exchange", b"{}", {"X-BC-Signature": "00"}, 5))
    if not isinstance(status, int) or not isinstance(headers, dict) or not isinstance(body, bytes):
        raise Crash("bad result %r" % ((status, headers, body),))
    if len(body) > httpc.MAX_BODY:
        raise Crash("body over MAX_BODY")


# --- work and responses ---

def _dispatcher():
    outbox = FakeOutbox()
    app = FakeApp(outbox)
    return ops.Dispatcher(app, KEY, outbox, FakeInbox()), outbox


def run_work(case):
    item, sign = case
    d, outbox = _dispatcher()
    if sign and isinstance(item, dict):
        try:
            item["sig"] = envelope.sign(KEY, envelope.work_message(item))
        except (KeyError, TypeError, ValueError):
            pass
    first = d.handle(item)
    if first not in STATUSES:
        raise Crash("status %r" % (first,))
    results = len(outbox.items)
    entered = isinstance(item, dict) and d.inbox.ids and d.inbox.ids[-1] == item.get("id")
    again = d.handle(item)
    if entered:
        if again != "duplicate":
            raise Crash("work replayed to the meter ran twice: %r then %r" % (first, again))
        if len(outbox.items) != results:
            raise Crash("a replayed work item queued a second result")
    for kind, body in outbox.items:
        if kind == "result" and body.get("status") not in STATUSES:
            raise Crash("result status %r" % (body.get("status"),))


class FakeLink:
    def __init__(self):
        self.dispatcher, self.outbox = _dispatcher()
        self.clock = self.dispatcher.app.clock
        self.poll_s = 0
        self.device_id = DEVICE
        self.time_refusals = 0


def run_response(resp):
    if not isinstance(resp, dict):      # comms.exchange refuses these with ExchangeError
        return
    if envelope.bound(resp, DEVICE, "ab" * 8, "cd" * 8) not in (True, False):
        raise Crash("envelope.bound did not answer True or False")
    link = FakeLink()
    if comms.time_refusal(link, resp, "ab" * 8) not in (True, False):
        raise Crash("comms.time_refusal did not answer True or False")
    again = comms.apply_response(link, resp, True, 2500)   # a slow answer: held_ms counts
    if again not in (True, False):
        raise Crash("apply_response returned %r" % (again,))
    if not (isinstance(link.poll_s, (int, float)) and 0 <= link.poll_s <= 86400):
        raise Crash("poll_s %r" % (link.poll_s,))


# --- config ---

def run_config(changes):
    cfg = config.validate(changes)
    if sorted(cfg) != sorted(config.DEFAULTS):
        raise Crash("validate returned other keys")
    for name in cfg:
        if config.check(name, cfg[name]) != cfg[name]:
            raise Crash("validate returned an invalid %s" % name)


def run_cfgfile(data, tmp):
    path = tmp + "/config.json"
    with open(path, "wb") as f:
        f.write(data)
    cfg = config.load(path)
    config.validate(cfg)


# --- outbox ---

def _clear(d):
    import os
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        os.remove(d + "/" + name)


def run_outbox(case, tmp):
    import os
    seg, acked, seq = case
    d = tmp + "/ob"
    try:
        os.mkdir(d)
    except OSError:
        pass
    _clear(d)
    with open(d + "/1.seg", "wb") as f:
        f.write(unhexlify(seg))
    for name, data in (("acked", acked), ("seq", seq)):
        if data is not None:
            with open(d + "/" + name, "wb") as f:
                f.write(unhexlify(data))
    ob = Outbox(d, max_bytes=4096, seg_bytes=512, max_record=1024)
    prev = ob.acked
    for item in ob.peek(1000, 1 << 20):
        if not item["seq"] > prev:
            raise Crash("peek order: %r after %r" % (item["seq"], prev))
        prev = item["seq"]
    try:
        s = ob.append("event", {"x": 1})
    except OutboxFull:
        s = None
    if s is not None and s <= prev:
        raise Crash("seq %r reused (at or below %r)" % (s, prev))
    ob.ack(ob.next_seq - 1)
    if ob.depth():
        raise Crash("depth %d after acking everything" % ob.depth())
    ob2 = Outbox(d, max_bytes=4096, seg_bytes=512, max_record=1024)
    if ob2.next_seq < ob.next_seq:
        raise Crash("seq went back after reopening")
    _clear(d)


def run_case(parser, value, tmp="/tmp"):
    """'ok', 'err:<Class>' for a documented error, or raise Crash / anything else."""
    try:
        if parser == "http":
            run_http(unhexlify(value))
        elif parser == "work":
            run_work(value)
        elif parser == "response":
            run_response(value)
        elif parser == "config":
            run_config(value)
        elif parser == "cfgfile":
            run_cfgfile(unhexlify(value), tmp)
        elif parser == "outbox":
            run_outbox(value, tmp)
        elif parser == "manifest":
            fuzz_manifest.run_manifest(value)
        elif parser == "stanza":
            fuzz_stanza.run(unhexlify(value), tmp)
        elif parser == "guarded":
            fuzz_guarded.run(value, tmp)
        elif parser in fuzz_encodings.PARSERS:
            fuzz_encodings.run(parser, unhexlify(value))
        elif parser in fuzz_mail.PARSERS:
            fuzz_mail.run(parser, unhexlify(value))
        else:
            raise ValueError("unknown parser %r" % (parser,))
    except ALLOWED.get(parser, ()) as exc:
        return "err:" + type(exc).__name__
    return "ok"


def main():
    tmp = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        parser, value = json.loads(line)
        try:
            out = run_case(parser, value, tmp)
        except Exception as exc:
            out = "crash:%s: %s" % (type(exc).__name__, str(exc)[:200])
        print(json.dumps(out))


if __name__ == "__main__":
    main()
