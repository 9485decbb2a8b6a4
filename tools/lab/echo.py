#!/usr/bin/env python3
"""A TCP or UDP echo server and a probe that sends a token and waits for its echo: the
network lab (netlab.py) runs them inside its namespaces, as programs of their own (standard
library only):

    python3 echo.py serve tcp|udp HOST PORT LIFETIME_S   prints "ready <port>", echoes
    python3 echo.py probe tcp|udp HOST PORT TIMEOUT_S    prints a JSON verdict; exit 0 if echoed
"""

import json
import os
import socket
import sys
import threading
import time


def echo(conn, deadline):
    conn.settimeout(1.0)
    with conn:
        while time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            conn.sendall(data)


def serve(proto, host, port, lifetime):
    deadline, tcp = time.monotonic() + float(lifetime), proto == "tcp"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    if tcp:
        s.listen(16)
    s.settimeout(0.2)
    print("ready", s.getsockname()[1], flush=True)
    for _ in range(100000):
        if time.monotonic() >= deadline:
            break
        try:
            if tcp:
                threading.Thread(target=echo, args=(s.accept()[0], deadline), daemon=True).start()
            else:
                data, peer = s.recvfrom(65536)
                s.sendto(data, peer)
        except TimeoutError:
            pass


def probe(proto, host, port, timeout):
    res, t0 = {"connected": False, "echoed": False, "error": None}, time.monotonic()
    try:
        if proto == "tcp":
            s = socket.create_connection((host, int(port)), timeout=float(timeout))
            res["connected"] = True
        else:  # udp has no handshake: "connected" means the echo came back
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(float(timeout))
            s.connect((host, int(port)))
        with s:
            token, got = b"bc-probe-" + os.urandom(4).hex().encode(), b""
            s.send(token)
            for _ in range(100):
                chunk = s.recv(65536)
                got += chunk
                if not chunk or len(got) >= len(token):
                    break
            res["echoed"] = got == token
            res["connected"] = res["connected"] or res["echoed"]
    except OSError as e:
        res["error"] = f"{type(e).__name__}: {e}"
    res["seconds"] = round(time.monotonic() - t0, 3)
    print(json.dumps(res), flush=True)
    return 0 if res["echoed"] else 1


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] not in ("serve", "probe"):
        sys.exit(__doc__)
    sys.exit((serve if sys.argv[1] == "serve" else probe)(*sys.argv[2:]) or 0)
