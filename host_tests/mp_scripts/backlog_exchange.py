# A backlog drained over HTTP in a fragmented heap (issue 11, the soaks), for
# host_tests/test_backlog_heap.py:  backlog_exchange.py STATE_DIR
# prints one JSON document. An outbox holding 64 readings of a real reading's size, the
# heap then cut into small holes (as hours of metering leave it), and comms exchanging
# with a transport that takes the body piece by piece, as a socket does, and acks what
# it was sent. Before the outbox's JSON was spliced into the request, the first exchange
# raised MemoryError here under the test's cap.

import asyncio
import gc
import json
import sys

import envelope
from clock import Clock
from comms import Comms
from inbox import Inbox
from outbox import Outbox

STATE = sys.argv[1]
KEY = b"k" * 32
N = 64


def reading(n):
    # the fields and magnitudes of a reading (firmware/reading.py): about 560 B of JSON
    body = {"t": 1796083200 + n, "ms": 0, "n": n}
    for name in ("v", "i", "p", "q", "s", "pf", "f", "thd_v", "thd_i", "v_min", "v_max",
                 "i_max", "p_avg", "q_avg", "imp_wh", "exp_wh", "imp_varh", "exp_varh",
                 "d_w", "d_max_w", "v_h3", "v_h5", "i_h3", "i_h5", "crest"):
        body[name] = 1234.5678 + n * 0.25
    return body


class PieceHttp:
    """Takes the request's pieces as a socket would (never joined), finds the highest seq
    sent, and answers with a signed, bound ack of it."""

    def __init__(self, device):
        self.device = device
        self.sizes = []
        self.comms = None

    async def connect(self):  # comms connects before building a request (httpc)
        pass

    async def request(self, method, path, body, headers, timeout=None):
        pieces = body if isinstance(body, list) else [body]
        top = size = 0
        for p in pieces:
            size += len(p)
            at = bytes(p).find(b'"seq":')
            while at >= 0:
                end = at + 6
                while end < len(p) and 48 <= p[end] <= 57:
                    end += 1
                top = max(top, int(p[at + 6:end]))
                at = bytes(p).find(b'"seq":', end)
        self.sizes.append(size)
        resp = {"v": 2, "dir": "down", "device": self.device, "re": self.comms.nonce, "ack": top,
                "epoch": EPOCH[0], "next": 0}
        data = json.dumps(resp).encode()
        await asyncio.sleep(0)
        return 200, {"x-bc-signature": envelope.sign(KEY, data)}, data

    def close(self):
        pass


class Dispatcher:
    def room(self):
        return 4

    def handle(self, item):
        pass


EPOCH = [None]


async def drain():
    ob = Outbox(STATE + "/outbox", hold=1, max_bytes=128 * 1024)
    EPOCH[0] = ob.epoch
    for n in range(N):
        ob.append("reading", reading(n))
    http = PieceHttp("m1")
    c = http.comms = Comms("m1", KEY, http, ob, Inbox(STATE + "/inbox"), Dispatcher(),
                           Clock())
    # a heap in holes: small blocks filling it, every other one then freed
    gc.collect()
    keep = []
    try:
        while True:
            keep.append(bytearray(200))
    except MemoryError:
        pass
    for i in range(len(keep)):
        if i % 2 or i >= len(keep) * 3 // 4:    # holes, and the last quarter free in one
            keep[i] = None
    gc.collect()
    errors = 0
    for _ in range(16):
        if not ob.depth():
            break
        try:
            await c.exchange()
        except MemoryError as exc:
            errors += 1
            sys.print_exception(exc, sys.stderr) if hasattr(sys, "print_exception") else None
            c.batch.shrink()
    return {"depth": ob.depth(), "memory_errors": errors, "exchanges": len(http.sizes),
            "first_bytes": http.sizes[0] if http.sizes else 0, "holes": len(keep) // 2}


print(json.dumps(asyncio.run(drain())))
