# Metering while XMPP stanzas are parsed, for host_tests/test_xmpp_paced.py: the App at its
# default settings on the paced sim board (boards/paced_board.py, as mp_scripts/paced_run.py)
# and beside it a task that does what the meter's XMPP session does with the server's bytes
# (xmpp_session.py: one network read of at most 1024 bytes at a time into
# xmpp_stanza.StanzaReader), over and over, with about the largest message the reader takes
# (MAX_STANZA characters less 1 KiB: a body of base64, as the head-end's biggest answer), then
# decodes the body as xmpp_comms does.
#
#   micropython paced_xmpp.py STATE_DIR SECONDS
#
# Prints one JSON line: the board's overruns, the readings taken, the stanzas parsed.

import asyncio
import binascii
import gc
import json
import sys

import config
import paced_host
import xmpp_stanza
from app import App

READ = 1024         # xmpp_session reads at most this much at a time


def _stream(body_len):
    head = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' from='im.test' id='s1' "
            "version='1.0'>").encode()
    open_ = ("<message from='fleet.im.test' to='m@im.test/meter'>"
             "<bc xmlns='urn:backchannel:exchange' sig='%s'>" % ("0" * 64)).encode()
    close = b"</bc></message>"
    body = binascii.b2a_base64(bytes(body_len * 3 // 4)).strip()
    return head, open_ + body + close


async def _stanzas(count):
    head, stanza = _stream(xmpp_stanza.MAX_STANZA - 1024)
    reader = xmpp_stanza.StanzaReader()
    reader.feed(head)
    while True:
        for i in range(0, len(stanza), READ):
            await asyncio.sleep_ms(0)           # the network read's await
            for el in reader.feed(stanza[i:i + READ]):
                bc = xmpp_stanza.child(el, "bc")
                if bc is not None and binascii.a2b_base64(bc[xmpp_stanza.TEXT]):
                    count[0] += 1


async def _run(app, count):
    asyncio.create_task(_stanzas(count))
    await app.run()


def main(argv):
    state, seconds = argv[0], int(argv[1])
    board = paced_host.make(seconds)
    app = App(board, config.validate({}), state)
    taken, count = [0], [0]

    def on_record(r):
        if r["type"] == "reading":
            taken[0] += 1

    app.on_record = on_record
    asyncio.run(_run(app, count))
    gc.collect()
    print(json.dumps({"overruns": board.overruns, "max_behind": board.max_behind,
                      "readings": taken[0], "stanzas": count[0],
                      "status_overruns": app.status_reading()["overruns"]}))


main(sys.argv[1:])
