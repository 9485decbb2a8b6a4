# The meter's XMPP stream reader (firmware/xmpp_stanza.py) under fuzzing, for
# mp_scripts/fuzz_parsers.py (parser "stanza", CPython and MicroPython): a server's stream,
# whole and fed in pieces of 1 to 5 bytes, must give the same stanzas or the same clear
# error; every message that comes out goes through XmppComms.on_message, which must refuse
# or apply it without raising.

import xmpp_comms
from clock import Clock
from inbox import Inbox
from ops import Dispatcher
from outbox import Outbox
from xmlmini import XmlError
from xmpp_stanza import StanzaReader, StreamEnded

ALLOWED = (XmlError, StreamEnded)
KEY = b"k" * 16
SCRAM = "4096:c2FsdA==:%s:%s" % ("11" * 20, "22" * 20)
_comms = {}


class Crash(Exception):
    pass


def _read(data, step):
    r = StanzaReader(max_stanza=4096)
    out = []
    try:
        if not step:
            out = r.feed(data)
        else:
            i, n = 0, 1
            while i < len(data):
                out += r.feed(data[i:i + n])
                i += n
                n = n % step + 1
    except ALLOWED as exc:
        return out + exc.stanzas, type(exc).__name__
    return out, None


def comms(tmp):
    c = _comms.get(tmp)
    if c is None:
        outbox = Outbox(tmp + "/fz-outbox")
        inbox = Inbox(tmp + "/fz-inbox")
        c = _comms[tmp] = xmpp_comms.XmppComms(
            "meter-x", KEY, "127.0.0.1", 5223, "im.test", "fleet.im.test", SCRAM, outbox,
            inbox, Dispatcher(None, KEY, outbox, inbox, device_id="meter-x"), Clock())
    return c


def run(data, tmp):
    whole, err = _read(data, 0)
    pieces, err2 = _read(data, 5)
    if whole != pieces or err != err2:
        raise Crash("pieces gave %r/%s, whole %r/%s" % (pieces[:2], err2, whole[:2], err))
    c = comms(tmp)
    for el in whole:
        if el[0] == "message":
            c.on_message(el)
    if err is not None:
        raise {"XmlError": XmlError, "StreamEnded": StreamEnded}[err]("stream refused")
