"""Load generator for the head-end: N simulated meters in one asyncio CPython process.

Each meter signs its own requests (docs/protocol.md: HMAC-SHA256 of the raw body with the
device key, X-BC-Signature), keeps one HTTP/1.1 keep-alive connection (raw asyncio streams,
no HTTP library), long-polls continuously like the firmware (wait = time until its next
reading, at most 25 s: the firmware offers min(poll_wait_s, report_s)), posts a `reading`
item every --report seconds, executes work (every op answers `done` with a small body), lists
executed ids in `done`, sends the result items in the next exchange and drops outbox items
once acked. It checks the response signature and drops bad responses (counted).

Meters start at uniformly random moments over --ramp seconds (their reading phases are
spread the same way). Once a second it prints one JSON line of cumulative counters to
stdout: t, meters connected, exchanges answered (200), work executed, errors by kind. It
stops on SIGTERM/SIGINT or after --duration seconds, closing every socket.

    .venv/bin/python -m bench.loadgen --url http://127.0.0.1:8080 --keys keys.json
                                      [--report 10] [--wait 25] [--ramp 10] [--duration 600]
keys.json: {"<device id>": "<hex key>", ...}
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import random
import resource
import signal
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (one socket per meter)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Stats:
    def __init__(self):
        self.connected = 0
        self.exchanges = 0
        self.work = 0
        self.items = 0
        self.errors = Counter()


def _sign(key, data):
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class Meter:
    def __init__(self, gen, device, key_hex):
        self.gen = gen
        self.device = device
        self.key = bytes.fromhex(key_hex)
        self.seq = 0
        self.epoch = os.urandom(8).hex()   # this outbox's life (docs/protocol.md, v2)
        self.outbox = []          # unacked items, oldest first
        self.done = []            # executed work ids not yet reported
        self.reader = self.writer = None

    def _reading(self, now):
        self.seq += 1
        v = 230.0 + random.uniform(-2, 2)
        self.outbox.append({"seq": self.seq, "kind": "reading", "body": {
            "t": round(now, 1), "vrms": round(v, 2), "irms": 4.2, "p": 918.0, "q": 120.5,
            "s": 966.4, "pf": 0.95, "f": 50.0, "import_wh": round(self.seq * 2.5, 3)}})

    async def _connect(self):
        g = self.gen
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(g.host, g.port, limit=1 << 20), 30)
        g.stats.connected += 1

    def _close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.gen.stats.connected -= 1

    async def _post(self, body, sig, timeout):
        g = self.gen
        self.writer.write(b"POST /v1/exchange HTTP/1.1\r\nHost: %s\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                          b"X-BC-Signature: %s\r\n\r\n%s"
                          % (g.host_header, len(body), sig.encode(), body))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        data = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        if headers.get("connection", "").lower() == "close":
            self._close()
        return status, headers, data

    async def exchange_now(self):
        """One exchange at once, `wait` 0, carrying a new reading (the dashboard bench's
        paced load); returns seconds from the request written to the answer read. Connects
        first (untimed) if needed; raises on an answer other than 200."""
        if self.writer is None:
            await self._connect()
        now = time.time()
        self._reading(now)
        req = {"v": 2, "device": self.device, "epoch": self.epoch, "ts": int(now),
               "nonce": os.urandom(8).hex(), "wait": 0, "room": 4, "done": [],
               "items": self.outbox[:32]}
        body = json.dumps(req, separators=(",", ":")).encode()
        t0 = time.perf_counter()
        status, headers, data = await self._post(body, _sign(self.key, body), self.gen.timeout)
        took = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError("exchange answered %d" % status)
        ack = json.loads(data).get("ack", 0)
        self.outbox = [it for it in self.outbox if it["seq"] > ack]
        return took

    def close(self):
        self._close()

    async def run(self, start_delay):
        g = self.gen
        loop = asyncio.get_running_loop()
        await asyncio.sleep(start_delay)
        next_report = loop.time()
        while not g.stopping:
            try:
                if self.writer is None:
                    await self._connect()
                now = loop.time()
                if now >= next_report:
                    self._reading(time.time())
                    next_report = max(next_report + g.report, now)
                wait = max(0, min(g.wait, int(math.ceil(next_report - now))))
                req = {"v": 2, "device": self.device, "epoch": self.epoch,
                       "ts": int(time.time()), "nonce": os.urandom(8).hex(), "wait": wait,
                       "room": 4, "done": self.done[:], "items": self.outbox[:32]}
                body = json.dumps(req, separators=(",", ":")).encode()
                status, headers, data = await self._post(body, _sign(self.key, body),
                                                         wait + g.timeout)
                if status != 200:
                    g.stats.errors["http_%d" % status] += 1
                    await asyncio.sleep(1)
                    continue
                if not hmac.compare_digest(_sign(self.key, data),
                                           headers.get("x-bc-signature", "")):
                    g.stats.errors["bad_signature"] += 1
                    continue
                answer = json.loads(data)
                g.stats.exchanges += 1
                g.stats.items += len(req["items"])
                del self.done[:len(req["done"])]
                ack = answer.get("ack", 0)
                self.outbox = [it for it in self.outbox if it["seq"] > ack]
                for w in answer.get("work", ()):
                    self.done.append(w["id"])
                    self.seq += 1
                    self.outbox.append({"seq": self.seq, "kind": "result", "body": {
                        "work": w["id"], "status": "done",
                        "body": {"vrms": 230.1, "import_wh": 1234.5}}})
                    g.stats.work += 1
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError, IndexError) as e:
                g.stats.errors[type(e).__name__] += 1
                self._close()
                if not g.stopping:
                    await asyncio.sleep(1 + random.random())
        self._close()


class LoadGen:
    def __init__(self, url, keys, report, wait, ramp, timeout=30.0):
        u = urlsplit(url)
        if u.scheme != "http":
            raise SystemExit("loadgen: only http:// URLs")
        self.host, self.port = u.hostname, u.port or 80
        self.host_header = ("%s:%d" % (self.host, self.port)).encode()
        self.report, self.wait, self.ramp, self.timeout = report, wait, ramp, timeout
        self.stats = Stats()
        self.stopping = False
        self.meters = [Meter(self, d, k) for d, k in keys.items()]

    def snapshot(self, t0):
        s = self.stats
        return {"t": round(time.monotonic() - t0, 3), "meters": len(self.meters),
                "connected": s.connected, "exchanges": s.exchanges, "items": s.items,
                "work": s.work, "errors": dict(s.errors)}

    async def run(self, duration):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(m.run(random.uniform(0, self.ramp)))
                 for m in self.meters]
        end = t0 + duration
        while not stop.is_set() and time.monotonic() < end:
            print(json.dumps(self.snapshot(t0)), flush=True)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
        self.stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in self.meters:
            m._close()
        print(json.dumps(dict(self.snapshot(t0), final=True)), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--keys", required=True, help='JSON file {"device": "hex key"}')
    ap.add_argument("--report", type=float, default=10.0, help="seconds between readings")
    ap.add_argument("--wait", type=int, default=25, help="long-poll wait cap (0..25)")
    ap.add_argument("--ramp", type=float, default=10.0, help="start meters over this many s")
    ap.add_argument("--duration", type=float, default=600.0, help="stop after this many s")
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    random.seed(args.seed)
    with open(args.keys) as f:
        keys = json.load(f)
    nofile = raise_nofile()
    if nofile < len(keys) + 64:
        print("loadgen: RLIMIT_NOFILE %d is too low for %d meters" % (nofile, len(keys)),
              file=sys.stderr)
        return 1
    gen = LoadGen(args.url, keys, args.report, args.wait, args.ramp)
    asyncio.run(gen.run(args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
