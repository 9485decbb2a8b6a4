# Drives the meter's XMPP transport without a network (argv: state dir): the stream reader
# (firmware/xmpp_stanza.py) on good and hostile input, SCRAM from deploy-time keys
# (xmpp_session.Scram, RFC 5802's own example), the session's pings and queries, and XmppComms
# taking signed, forged and misdirected exchanges. Prints one JSON object of findings;
# host_tests/test_xmpp_link.py checks them on all three interpreters.

import json
import sys
from binascii import a2b_base64

import envelope
import xmpp_comms as X
from clock import Clock
from inbox import Inbox
from ops import Dispatcher
from outbox import Outbox
from xmpp_session import Scram, parse_keys
from xmpp_stanza import StanzaReader

KEY = b"k" * 16
HEAD = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
        "'http://etherx.jabber.org/streams' id='s1' from='im.test' version='1.0'>")
# RFC 5802 section 5: user "user", password "pencil" (keys as `xmpp-account --meter` makes)
RFC_KEYS = ("4096:QSXCR+Q6sek8bf92:e234c47bf6c36696dd6d852b99aaa2ba26555728:"
            "0fe09258b3ac852ba502cc62ba903eaacdbf7d31")


def err(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)
    return None


def stanzas(text, step=0):
    r = StanzaReader()
    data = text.encode()
    if not step:
        return r.feed(data)
    out = []
    for i in range(0, len(data), step):
        out += r.feed(data[i:i + step])
    return out


def reader_findings(out):
    doc = (HEAD + "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
           "<mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features> \n "
           "<message from='a@im.test/x' id='1'><body>h\u00e9llo &amp; \u20ac&#x41;</body>"
           "</message><iq type='get' id='p'/>")
    whole = stanzas(doc)
    out["whole"] = whole
    out["bytewise_same"] = stanzas(doc, 1) == whole and stanzas(doc, 7) == whole
    big = HEAD + "<message><body>" + "x" * 50000 + "</body></message>"
    out["oversized"] = err(stanzas, big, 1024)
    out["deep"] = err(stanzas, HEAD + "<message>" + "<a>" * 10)
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
              '"&lol;&lol;&lol;">]><stream:stream>')
    out["laughs"] = err(stanzas, laughs)
    out["entity"] = err(stanzas, HEAD + "<message><body>&lol2;</body></message>")
    out["text_between"] = err(stanzas, HEAD + "hello")
    out["wrong_root"] = err(stanzas, "<stream xmlns='jabber:client'>")
    out["wrong_ns"] = err(stanzas, "<stream:stream xmlns:stream='urn:x'>")
    out["stream_error"] = err(stanzas, HEAD + "<stream:error><conflict xmlns='urn:ietf:params:"
                              "xml:ns:xmpp-streams'/><text>Replaced</text></stream:error>")
    out["closed"] = err(stanzas, HEAD + "</stream:stream>")
    out["mismatch"] = err(stanzas, HEAD + "<message></iq>")
    r = StanzaReader()
    r.feed(HEAD.encode())
    out["not_utf8"] = err(r.feed, b"<message>\xff\xfe</message>")
    # what came before a fault in the same read is kept, with the error
    r = StanzaReader()
    try:
        r.feed(HEAD.encode() + b"<presence/><iq type='result' id='1'/><message>\xff")
    except Exception as exc:
        out["before_fault"] = [type(exc).__name__, [el[0] for el in exc.stanzas]]
    # keepalives between stanzas cost nothing: 100 KB of whitespace, then a stanza
    r = StanzaReader()
    r.feed(HEAD.encode())
    for _ in range(100):
        r.feed(b" " * 1024)
    out["after_keepalives"] = r.feed(b"<presence/>")
    # the limit is per stanza: many stanzas, each under it, pass
    r = StanzaReader(max_stanza=2048)
    r.feed(HEAD.encode())
    n = 0
    for _ in range(50):
        n += len(r.feed(b"<message><body>" + b"y" * 1500 + b"</body></message>"))
    out["many_stanzas"] = n
    # ... also when one read carries several of them (more than the limit in all): the
    # same stanzas as byte by byte (the stanza fuzzer found this one)
    one = b"<message><body>" + b"y" * 1500 + b"</body></message>"
    r = StanzaReader(max_stanza=2048)
    out["one_read"] = len(r.feed(HEAD.encode() + one * 3))


def scram_findings(out):
    keys = parse_keys(RFC_KEYS)
    s = Scram("user", keys, "fyko+d2lbbFgONRv9qkxdawL")
    out["scram_first"] = s.first()
    out["scram_final"] = s.final("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                                 "s=QSXCR+Q6sek8bf92,i=4096")
    out["scram_verify"] = err(s.verify, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    out["scram_forged_server"] = err(s.verify, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    s = Scram("user", keys, "abc")
    out["scram_reset_account"] = err(s.final, "r=abcdef,s=c2FsdA==,i=4096")
    out["scram_not_our_nonce"] = err(s.final, "r=xyz,s=QSXCR+Q6sek8bf92,i=4096")
    out["scram_bad_keys"] = err(parse_keys, "4096:salt:00:11")


def comms_findings(out, state):
    outbox = Outbox(state + "/outbox")
    inbox = Inbox(state + "/inbox")
    clock = Clock()
    c = X.XmppComms("meter-x", KEY, "127.0.0.1", 5223, "im.test", "fleet.im.test", RFC_KEYS,
                    outbox, inbox, Dispatcher(None, KEY, outbox, inbox, device_id="meter-x"),
                    clock)
    s = c.session
    outbox.append("reading", {"v": 1})
    c.step(0)       # presence and the first request, queued in the session
    # the up's body is queued as bytes of its own (never copied into the stanza's text)
    out["up_body_bytes"] = [isinstance(piece, bytes) for piece in s.out].count(True) == 1
    sent = "".join(p if isinstance(p, str) else p.decode() for p in s.out)
    s.out = []
    got = stanzas(HEAD + sent)
    out["sent"] = [[el[0], el[1]] for el in got]
    bc = got[1][2][0]
    raw = a2b_base64(bc[3])
    out["up_signed"] = envelope.same(bc[1]["sig"], envelope.sign(KEY, raw))
    out["up_device"] = json.loads(raw)["device"]

    def down(frm, body, sig=None, kind=None):
        raw = json.dumps(body).encode()
        el = ["message", {"from": frm}, [["bc", {"xmlns": X.NS, "sig": sig or envelope.sign(
            KEY, raw)}, [], X.b2a_base64(raw).decode()]], ""]
        if kind:
            el[1]["type"] = kind
        c.on_message(el)
        return [c.exchanges, c.refused, c.last_error]

    answer = {"v": 2, "dir": "down", "device": "meter-x", "re": c.sent_nonce,
              "epoch": outbox.epoch, "ack": 1, "next": 42, "time": clock.now()}
    out["from_mallory"] = down("mallory@im.test/x", answer)
    out["forged"] = down("fleet.im.test", answer, sig="0" * 64)
    out["error_bounce"] = down("fleet.im.test", answer, kind="error")
    out["unbound"] = down("fleet.im.test", dict(answer, re="someone-else"))
    out["depth_before"] = outbox.depth()
    out["answer"] = down("fleet.im.test", answer)
    out["depth_after"] = outbox.depth()
    out["poll_s"] = c.poll_s
    # presence as XMPP presence
    out["presence"] = [X.presence_stanza("f", st, note) for st, note in (
        ("available", ""), ("available_restricted", "a <b>"), ("active", ""),
        ("available_off", ""), ("unavailable", "bye"))]
    # the session: a ping from the head-end is answered, another query refused, our own
    # ping sent on time and its silence a dead link
    s.out = []
    s.inbox = [["iq", {"type": "get", "id": "q1", "from": "fleet.im.test"},
                [["ping", {"xmlns": "urn:xmpp:ping"}, [], ""]], ""],
               ["iq", {"type": "set", "id": "q2", "from": "x@im.test"}, [], ""]]
    s.ping_at = 0
    out["taken"] = s.take(1000)
    out["iq_answers"] = s.out[:2]
    out["ping_after_25s"] = s.take(25000) == [] and len(s.out) == 3 and "urn:xmpp:ping" in s.out[2]
    out["dead_link"] = err(s.take, 25000 + 10001)


def main(state):
    out = {}
    reader_findings(out)
    scram_findings(out)
    comms_findings(out, state)
    print(json.dumps(out))


main(sys.argv[1])
