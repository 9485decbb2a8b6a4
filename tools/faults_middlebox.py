#!/usr/bin/env python3
"""A hostile middlebox for tools/faults.py: a TCP relay that closes a connection (both sides)
once no byte has crossed it for IDLE seconds, as NAT boxes and proxies do.

    python tools/faults_middlebox.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT IDLE

Prints `ready PORT` once listening, then one JSON line per closed connection:
{"closed": "idle"|"eof", "age": seconds}.
"""
import json
import selectors
import socket
import sys
import time


def main(lhost, lport, thost, tport, idle):
    idle = float(idle)
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
            try:
                sel.unregister(x)
            except (KeyError, ValueError):
                pass
            x.close()
        print(json.dumps({"closed": why, "age": round(time.monotonic() - born, 1)}), flush=True)

    while True:
        for key, _ in sel.select(0.5):
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
            if not data:
                close(s, "eof")
                continue
            peer = pairs[s][0]
            try:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
            except OSError:
                close(s, "eof")
                continue
            now = time.monotonic()
            pairs[s][1] = pairs[peer][1] = now
        now = time.monotonic()
        for s in [s for s, (_, last, _) in pairs.items() if now - last > idle]:
            close(s, "idle")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
