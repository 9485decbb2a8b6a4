#!/usr/bin/env python3
"""A hostile middlebox for tools/faults/cli.py: a TCP relay that closes a connection (both sides)
once no byte has crossed it for IDLE seconds, as NAT boxes and proxies do; optionally it
holds every chunk DELAY_MS +- JITTER_MS (uniform, seeded) before passing it on, in order
per direction: the latency tc netem would add, for kernels without sch_netem.

    .venv/bin/python -m lab.middlebox LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT IDLE
                                     [DELAY_MS JITTER_MS SEED]

Prints `ready PORT` once listening, then one JSON line per closed connection:
{"closed": "idle"|"eof", "age": seconds}.
"""
import json
import random
import selectors
import socket
import sys
import time
from collections import deque


def main(lhost, lport, thost, tport, idle, delay_ms="0", jitter_ms="0", seed="0"):
    idle = float(idle)
    delay, jitter = float(delay_ms) / 1000, float(jitter_ms) / 1000
    rng = random.Random(int(seed))
    held = {}       # sock -> deque of (due, data) to send to it, due times non-decreasing
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((lhost, int(lport)))
    ls.listen(64)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    pairs = {}      # sock -> [peer, last activity, born]
    print("ready", ls.getsockname()[1], flush=True)

    def close(s, why):
        if s not in pairs:
            return
        peer, _, born = pairs.pop(s)
        pairs.pop(peer, None)
        for x in (s, peer):
            held.pop(x, None)
            try:
                sel.unregister(x)
            except (KeyError, ValueError):  # not registered (any more)
                pass
            x.close()
        print(json.dumps({"closed": why, "age": round(time.monotonic() - born, 1)}), flush=True)

    def send(s, data):
        try:
            s.setblocking(True)
            s.sendall(data)
            s.setblocking(False)
            return True
        except OSError:
            close(s, "eof")
            return False

    def flush(now):
        for s in list(held):
            q = held.get(s)
            while q and q[0][0] <= now:
                data = q.popleft()[1]
                if data is None:            # the other side's EOF, held like its data
                    close(s, "eof")
                    break
                if not send(s, data):
                    break
                q = held.get(s)

    while True:
        now = time.monotonic()
        flush(now)
        due = [q[0][0] for q in held.values() if q]
        wait = max(0.0, min([0.5] + [d - now for d in due]))
        for key, _ in sel.select(wait):
            s = key.fileobj
            if s is ls:
                try:
                    c, _ = ls.accept()
                except OSError:
                    continue
                try:
                    u = socket.create_connection((thost, int(tport)), timeout=5)
                except OSError:
                    c.close()
                    continue
                now = time.monotonic()
                for a, b in ((c, u), (u, c)):
                    a.setblocking(False)
                    pairs[a] = [b, now, now]
                    sel.register(a, selectors.EVENT_READ, None)
                continue
            if s not in pairs:
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            peer = pairs[s][0]
            now = time.monotonic()
            if not data and (delay or jitter) and held.get(peer):
                sel.unregister(s)            # stop reading; close once the data before it went
                held[peer].append((held[peer][-1][0], None))
                continue
            if not data:
                close(s, "eof")
                continue
            if delay or jitter:
                q = held.setdefault(peer, deque())
                at = now + max(0.0, delay + rng.uniform(-jitter, jitter))
                q.append((max(at, q[-1][0]) if q else at, data))
            elif not send(peer, data):
                continue
            pairs[s][1] = pairs[peer][1] = now
        now = time.monotonic()
        for s in [s for s, (_, last, _) in pairs.items() if now - last > idle]:
            close(s, "idle")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
