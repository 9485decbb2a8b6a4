# Runs a JSON list of outbox/inbox operations read from stdin, one "boot" per process.
# Prints one JSON line per operation. Used by host_tests/test_outbox.py and test_inbox.py on both
# MicroPython and CPython.
import json
import sys

from inbox import Inbox
from outbox import Outbox, OutboxFull

ob = None
ib = None


def stats():
    return {"next": ob.next_seq, "acked": ob.acked, "depth": ob.depth(),
            "bytes": ob.bytes_used(), "dropped_corrupt": ob.dropped_corrupt,
            "dropped_overflow": ob.dropped_overflow, "damaged": ob.damaged,
            "appends": ob.appends}


def run(op):
    global ob, ib
    name = op[0]
    if name == "open":
        ob = Outbox(op[1], **op[2])
        return stats()
    if name == "append":
        try:
            return ob.append(op[1], op[2])
        except OutboxFull:
            return "full"
    if name == "append_n":
        seqs = []
        for i in range(op[2]):
            seqs.append(ob.append(op[1], {"i": i}))
        return seqs
    if name == "append_mix":        # n items, every k-th an event, the rest readings
        full = 0
        for i in range(op[1]):
            try:
                ob.append("event" if i % op[2] == 0 else "reading", {"i": i})
            except OutboxFull:
                full += 1
        return full
    if name == "peek":
        return ob.peek(op[1], op[2])
    if name == "ack":
        ob.ack(op[1])
        return stats()
    if name == "stats":
        return stats()
    if name == "flush":
        ob.flush()
        return ob.appends
    if name == "inbox":
        ib = Inbox(op[1])
        return {"damaged": ib.damaged, "ids": ib.ids(), "hi": ib.hi}
    if name == "check":
        return ib.check(op[1])
    if name == "add":
        ib.add(op[1], op[2])
        return ib.ids()
    if name == "confirm":
        ib.confirm(op[1])
        return ib.ids()
    raise ValueError("unknown op %r" % (name,))


for op in json.loads(sys.stdin.read()):
    print(json.dumps(run(op)))
