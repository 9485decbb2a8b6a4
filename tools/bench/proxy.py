"""A byte-counting HTTP proxy for the back-channel bench (bench/backchannel.py)."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# --------------------------------------------------------------------------- the proxy
# A transparent byte-counting TCP proxy:  python -m bench.proxy HOST PORT
# It listens on 127.0.0.1 (port printed as "ready PORT"), forwards every connection to
# HOST:PORT byte for byte and, for each request/response pair, prints one JSON line with the
# sizes of the HTTP header block and body in each direction (what the meter's socket sends
# and receives; TCP/IP headers, handshakes and TLS are not counted: plain HTTP here).

class _Splitter:
    """Splits one direction of an HTTP/1.1 stream into messages (Content-Length framing)."""

    def __init__(self, on_message):
        self.buf = b""
        self.on_message = on_message

    def feed(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end + 4]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buf) < len(head) + length:
                return
            body = self.buf[len(head):len(head) + length]
            self.buf = self.buf[len(head) + length:]
            self.on_message(head, body)


def _proxy(host, port):
    lock = threading.Lock()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    print("ready", srv.getsockname()[1], flush=True)

    def emit(conn, req, resp):
        (qh, qb), (rh, rb) = req, resp
        line = {"conn": conn, "t": time.time(), "req_head": len(qh), "req_body": len(qb),
                "resp_head": len(rh), "resp_body": len(rb),
                "status": int(rh.split(None, 2)[1]),
                "request": (qh + qb[:4096]).decode(errors="replace"),
                "response": (rh + rb[:4096]).decode(errors="replace")}
        with lock:
            print(json.dumps(line), flush=True)

    def pump(src, dst, splitter):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                splitter.feed(data)
        except OSError:
            pass
        for s in (dst,):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def handle(conn_no, client):
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        requests = []
        up = _Splitter(lambda h, b: requests.append((h, b)))
        down = _Splitter(lambda h, b: emit(conn_no, requests.pop(0) if requests else
                                           (b"", b""), (h, b)))
        t = threading.Thread(target=pump, args=(upstream, client, down), daemon=True)
        t.start()
        pump(client, upstream, up)
        t.join()
        client.close()
        upstream.close()

    conn_no = 0
    while True:
        client, _ = srv.accept()
        conn_no += 1
        threading.Thread(target=handle, args=(conn_no, client), daemon=True).start()


def spawn_proxy(lab, work, host, port):
    log = Path(work) / "proxy.jsonl"
    out = open(log, "wb")
    cmd = [sys.executable, "-m", "bench.proxy", host, str(port)]
    if lab is not None:
        p = lab.run("a", cmd, stdout=out, stderr=subprocess.STDOUT)
    else:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    end = time.monotonic() + 10
    while time.monotonic() < end:
        text = log.read_text(errors="replace")
        if text.startswith("ready "):
            return p, log, int(text.split()[1])
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("byte-counting proxy did not start: %s" % log.read_text())


def idle_exchanges(log):
    """The proxy's records of idle exchanges: no items, no done, no work, status 200."""
    found = []
    for line in log.read_text(errors="replace").splitlines()[1:]:
        try:
            rec = json.loads(line)
            req = json.loads(rec["request"].split("\r\n\r\n", 1)[1])
            resp = json.loads(rec["response"].split("\r\n\r\n", 1)[1])
        except (ValueError, IndexError, KeyError):
            continue
        if (rec["status"] == 200 and not req.get("items") and not req.get("done")
                and not resp.get("work")):
            rec["total"] = rec["req_head"] + rec["req_body"] + rec["resp_head"] + rec["resp_body"]
            found.append(rec)
    return found


def breakdown(text):
    """(name, bytes) of each header line (with CRLF) and the body of one HTTP message."""
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    parts = [(lines[0].split(" ")[0] if not lines[0].startswith("HTTP/") else "status line",
              len(lines[0]) + 2)]
    parts += [(ln.split(":", 1)[0], len(ln) + 2) for ln in lines[1:]]
    parts += [("blank line", 2), ("body", len(body.encode()))]
    return parts


if __name__ == "__main__":
    try:
        sys.exit(_proxy(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        sys.exit(130)
