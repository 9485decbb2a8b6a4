"""A minimal head-end for meter-side tests: the signed HTTP exchange of docs/protocol.md with
work, acks and the fetch/chunk of docs/ota.md, served from a releases directory. It stores
what the meter sends; nothing else (no database, no operator API)."""

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from headend_fake_meter import work_message


def _sign(key, data):
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class FakeExchange:
    def __init__(self, device_key_hex, releases):
        self.key = bytes.fromhex(device_key_hex)
        self.releases = releases
        self.lock = threading.Lock()
        self.items = []       # bodies the meter sent, with their kind, in seq order
        self.acked = 0
        self.queue = []
        self.results = {}     # work id -> result item body
        self.fetches = 0
        self.work_seq = 0     # the last work sequence assigned (v2)
        self.time_offset = 0  # added to the time it answers with
        handler = type("Handler", (_Handler,), {"exchange": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def work(self, op, args, role="operator"):
        item = {"id": uuid.uuid4().hex, "op": op, "role": role,
                "expires": int(time.time()) + 600, "from": "test", "args": json.dumps(args)}
        with self.lock:
            self.queue.append(item)
        return item["id"]

    def of_kind(self, kind):
        with self.lock:
            return [body for k, body in self.items if k == kind]

    def answer(self, raw, sig):
        if not hmac.compare_digest(sig, _sign(self.key, raw)):
            return 401, b"bad signature", ""
        req = json.loads(raw)
        with self.lock:
            for item in req.get("items", []):
                if item["seq"] > self.acked:
                    self.acked = item["seq"]
                    self.items.append((item["kind"], item["body"]))
                    if item["kind"] == "result":
                        self.results[item["body"]["work"]] = item["body"]
            work = self.queue if req.get("room", 0) > 0 else []
            self.queue = [w for w in self.queue if w not in work]
            for w in work:        # signed at delivery: the device and its work seq (v2)
                self.work_seq += 1
                w.update(device=req["device"], seq=self.work_seq)
                w["sig"] = _sign(self.key, work_message(w))
        resp = {"v": 2, "dir": "down", "device": req["device"], "re": req["nonce"],
                "epoch": req["epoch"],
                "ack": self.acked, "time": time.time() + self.time_offset, "next": 0.2,
                "work": work}
        if "fetch" in req:
            resp["chunk"] = self.chunk(req["fetch"])
        data = json.dumps(resp).encode()
        return 200, data, _sign(self.key, data)

    def chunk(self, fetch):
        self.fetches += 1
        path = self.releases / fetch["version"] / fetch["path"]
        if not path.is_file():
            return {"version": fetch["version"], "path": fetch["path"], "error": "no such file"}
        with open(path, "rb") as f:
            f.seek(fetch["offset"])
            data = f.read(min(fetch["len"], 8192))
        return {"version": fetch["version"], "path": fetch["path"], "offset": fetch["offset"],
                "size": path.stat().st_size, "data": base64.b64encode(data).decode()}


class _Handler(BaseHTTPRequestHandler):
    exchange = None

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, data, sig = self.exchange.answer(raw, self.headers.get("X-BC-Signature", ""))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if sig:
            self.send_header("X-BC-Signature", sig)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
