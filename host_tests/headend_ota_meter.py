"""A scripted fake meter for the head-end's firmware-update tests: it checks the `update`
work with the `cryptography` package (no head-end code), downloads every file of the
release through real exchanges with `fetch`, checks the sha256 of each against the signed
manifest and reports `update` items as docs/ota.md says."""

import base64
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from headend_fake_meter import FakeMeter


def version_key(v):
    return tuple(int(x) for x in v.split("."))


def verify_sig(pub_hex, message, sig_hex):
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(pub_hex))
    raw = bytes.fromhex(sig_hex)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        pub.verify(der, message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


class OtaMeter(FakeMeter):
    def __init__(self, http, device, key, update_key, running="1.0.0", chunk_len=4096):
        super().__init__(http, device, key)
        self.update_key = update_key
        self.running = running
        self.chunk_len = chunk_len
        self.offer = None           # the accepted manifest, until installed
        self.want = None            # the `fetch` of the next request
        self.files = {}             # path -> downloaded bytes
        self.reported = []          # (state, percent) in the order reported
        self.update_work = []       # ids of `update` work received

    def envelope(self, **kw):
        body = super().envelope(**kw)
        if self.want is not None:
            body["fetch"] = dict(self.want)
        return body

    def report(self, state, percent=None, reason=None):
        body = {"version": self.offer["version"], "state": state}
        if percent is not None:
            body["percent"] = percent
        if reason is not None:
            body["reason"] = reason
        self.reported.append((state, percent))
        self.add("update", body)

    def handle(self, w):
        if w["op"] != "update":
            return "done", {}
        self.update_work.append(w["id"])
        args = w["args"]
        if not verify_sig(self.update_key, args["manifest"].encode(), args["sig"]):
            return "rejected", "bad signature"
        manifest = json.loads(args["manifest"])
        if version_key(manifest["version"]) <= version_key(self.running):
            return "rejected", "version downgrade: running %s, offered %s" % (
                self.running, manifest["version"])
        self.offer = manifest
        self.report("downloading", 0)
        return "done", {"version": manifest["version"], "state": "downloading"}

    def step(self, wait=0):
        """One exchange; runs the work it brings (once each); returns the response."""
        body = self.exchange(wait=wait)
        for w in body["work"]:
            if w["id"] not in self.inbox:
                self.inbox.add(w["id"])
                status, out = self.handle(w)
                if status == "rejected":
                    self.result(w["id"], status, reason=out)
                else:
                    self.result(w["id"], status, out)
            self.done.append(w["id"])
        return body

    def entries(self):
        m = self.offer
        if "image" in m:
            return [("firmware.bin", m["image"]["len"], m["image"]["sha256"])]
        return [(f["path"], f["len"], f["sha256"]) for f in m["files"]]

    def download(self):
        """Fetch every file chunk by chunk, check it, install; returns True if installed."""
        total = sum(n for _, n, _ in self.entries()) or 1
        got, reported = 0, 0
        for path, size, digest in self.entries():
            data = b""
            while len(data) < size:
                self.want = {"version": self.offer["version"], "path": path,
                             "offset": len(data), "len": self.chunk_len}
                chunk = self.step()["chunk"]
                assert "error" not in chunk, chunk
                assert (chunk["path"], chunk["offset"], chunk["size"]) == (path, len(data), size)
                piece = base64.b64decode(chunk["data"])
                assert piece, "empty chunk before the end"
                data += piece
                got += len(piece)
                if got * 100 // total >= reported + 10:
                    reported = got * 100 // total // 10 * 10
                    self.report("downloading", reported)
            self.want = None
            if hashlib.sha256(data).hexdigest() != digest:
                self.report("rejected", reason="hash mismatch: %s" % path)
                self.step()
                return False
            self.files[path] = data
        self.report("verified")
        self.report("installing")
        self.running = self.offer["version"]
        self.report("installed")
        self.step()
        return True
