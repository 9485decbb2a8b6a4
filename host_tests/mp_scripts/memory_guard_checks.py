# A full heap (firmware/memory_guard.py), for host_tests/test_memory_guard.py, under every
# interpreter:  memory_guard_checks.py STATE_DIR   prints one JSON document.
# MemoryError is raised where a board's allocator would raise it: in the outbox's write, in
# the transport's request.

import asyncio
import json
import sys

from clock import Clock
from comms import Comms
from inbox import Inbox
from memory_guard import Batch, retry_once
from outbox import Outbox

STATE = sys.argv[1]
OUT = {}


def batch_steps():
    b = Batch(32, 16384)
    sizes = []
    for _ in range(7):
        b.shrink()
        sizes.append([b.items, b.bytes])
    for _ in range(8 * 3):
        b.exchanged()
    sizes.append([b.items, b.bytes])
    for _ in range(8 * 10):
        b.exchanged()
    sizes.append([b.items, b.bytes])
    return sizes


OUT["batch"] = batch_steps()


def retries():
    calls = []

    def flaky(n):
        calls.append(n)
        if len(calls) == 1:
            raise MemoryError("first")
        return n * 2

    out = {"value": retry_once(flaky, 21), "calls": len(calls)}

    def always(n):
        raise MemoryError("never fits")

    try:
        retry_once(always, 1)
        out["second"] = None
    except MemoryError as exc:
        out["second"] = str(exc)
    return out


OUT["retry"] = retries()


def held_readings_survive_a_full_heap():
    ob = Outbox(STATE + "/outbox", hold=4)
    real = ob._write
    state = {"fail": True}

    def write(recs):
        if state["fail"]:
            raise MemoryError("no room to write")
        return real(recs)

    ob._write = write
    seqs = [ob.offer("reading", {"n": n}) for n in range(6)]   # the 4th append flushes: fails
    held_after_failure = [it["seq"] for it in ob.peek(100, 100000)]
    try:
        ob.flush()
        raised = False
    except MemoryError:
        raised = True
    state["fail"] = False
    ob.flush()
    again = Outbox(STATE + "/outbox", hold=4)    # a restart: what reached flash
    return {"seqs": seqs, "held": held_after_failure, "flush_raised": raised,
            "on_flash": [it["seq"] for it in again.peek(100, 100000)],
            "bodies": [it["body"]["n"] for it in again.peek(100, 100000)]}


OUT["outbox"] = held_readings_survive_a_full_heap()


class HeapFullHttp:
    """A transport whose request raises MemoryError while the batch holds more than `fits`
    items, then OSError (the network): the batch must shrink only for the first."""

    def __init__(self, fits):
        self.fits = fits
        self.sizes = []

    async def connect(self):  # comms connects before building a request (httpc)
        pass

    async def request(self, method, path, body, headers, timeout=None):
        if len(self.sizes) >= 8:    # enough seen: hang here, where the test cancels comms
            await asyncio.sleep(3600)
        if isinstance(body, list):  # comms sends its body in pieces
            body = b"".join(bytes(p) for p in body)
        n = len(json.loads(body)["items"])
        self.sizes.append(n)
        if n > self.fits:
            raise MemoryError("memory allocation failed, allocating %d bytes" % len(body))
        raise OSError(113)

    def close(self):
        pass


class Dispatcher:
    def room(self):
        return 4


async def comms_shrinks():
    ob = Outbox(STATE + "/comms_outbox", hold=1)
    for n in range(40):
        ob.append("reading", {"n": n, "pad": "x" * 40})
    http = HeapFullHttp(6)
    c = Comms("m1", b"k" * 32, http, ob, Inbox(STATE + "/inbox"), Dispatcher(), Clock(),
              backoff_base=0.001, backoff_cap=0.002)
    task = asyncio.create_task(c.run())
    for _ in range(1000):
        await asyncio.sleep(0.005)
        if len(http.sizes) >= 8:
            break
    await asyncio.sleep(0.05)   # comms now waits in request (a cancel racing MicroPython's
    # wait_for can be lost: asyncio/funcs.py)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return {"sizes": http.sizes[:8], "batch": [c.batch.items, c.batch.shrinks],
            "last_error": c.last_error, "depth": ob.depth()}


OUT["comms"] = asyncio.run(comms_shrinks())


class FiniteBoard:
    """12 s of a steady 50-Hz sine at 3200 Hz, then the end (read() returns 0)."""
    sample_rate = 3200
    channel_delay_s = 0.0
    v_gain = 0.25
    i_gain = 0.05
    v_mid = i_mid = 2048

    def __init__(self):
        import math
        self.left = 12 * 3200
        self.v = [int(2048 + 1200 * math.sin(2 * math.pi * k / 64)) for k in range(64)]
        self.k = 0

    def read(self, vbuf, ibuf):
        n = min(len(vbuf), self.left)
        for j in range(n):
            vbuf[j] = ibuf[j] = self.v[self.k]
            self.k = (self.k + 1) % 64
        self.left -= n
        return n


FAIL_AT = 40


def metering_goes_on():
    import config
    from app import App

    app = App(FiniteBoard(), config.validate({"report_s": 1}), STATE + "/app", realtime=False)
    real = app.reporter.take
    calls = [0]

    def take():
        calls[0] += 1
        if calls[0] == FAIL_AT:   # a block some seconds in: the heap is full
            raise MemoryError("memory allocation failed, allocating 1024 bytes")
        return real()

    app.reporter.take = take
    result = asyncio.run(app.run())
    items = app.outbox.peek(1000, 1 << 20)
    return {"result": result, "memory_errors": app.memory_errors,
            "readings": len([i for i in items if i["kind"] == "reading"]),
            "notices": [[i["body"]["what"], i["body"]["count"]] for i in items
                        if i["kind"] == "notice"]}


import os  # noqa: E402

os.mkdir(STATE + "/app")
OUT["metering"] = metering_goes_on()
print(json.dumps(OUT))
