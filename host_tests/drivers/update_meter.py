# One "boot" of a meter's updater, for host_tests/test_update_meter.py, under MicroPython
# and CPython. Reads a JSON document from stdin:
#   {"base": DIR, "release": DIR, "cfg": {...}, "image": bool, "crash": NAME or null,
#    "tamper": {path: offset} or null, "steps": [[op, ...], ...]}
# It runs fwboot.select(base) first (as main.py does), then builds the updater over a real
# Outbox in base/state, and runs the steps against a fake link that serves chunks from the
# release directory (as the head-end would). Prints one JSON document: the boot, per-step
# results, the `update` items and what the link served. `crash` stops the process dead
# (nothing more is written) at a named point: before_install (every file staged and
# hashed), before_rename, after_rename, before_pointer, after_pointer, before_switch.

import json
import sys
from binascii import b2a_base64

import fwboot

doc = json.loads(sys.stdin.read())
BASE = doc["base"]
BOOT = fwboot.select(BASE)

import asyncio  # noqa: E402

import fw_files  # noqa: E402
import updater as updater_mod  # noqa: E402
import version  # noqa: E402
from outbox import Outbox  # noqa: E402

if doc.get("as_version"):  # the new image booted (an image release replaces everything)
    version.VERSION = doc["as_version"]


class Crash(Exception):
    pass


def crash_point(name):
    if name is not None and doc.get("crash") == name:
        raise Crash(name)


def _wrap(module, attr, before, after):
    real = getattr(module, attr)

    def wrapped(*args):
        crash_point(before)
        out = real(*args)
        crash_point(after)
        return out

    setattr(module, attr, wrapped)


class FakeImageWriter:
    """The board's image writer API, over a file base/image.bin; calls go to image.log."""

    def __init__(self):
        self.path = BASE + "/image.bin"

    def _log(self, what):
        with open(BASE + "/image.log", "a") as f:
            f.write(what + "\n")

    def capacity(self):
        return doc.get("capacity", 1 << 20)

    def begin(self, length, offset=0):
        self._log("begin %d %d" % (length, offset))
        data = b""
        if offset:  # keep what lies before offset, as a flash partition would
            with open(self.path, "rb") as f:
                data = f.read(offset)
        with open(self.path, "wb") as f:
            f.write(data)

    def write(self, data):
        with open(self.path, "ab") as f:
            f.write(data)

    def finish(self):
        self._log("finish")

    def verify(self, sha256_hex, length):
        ok = fw_files.size(self.path) == length and fw_files.sha256_hex(self.path) == sha256_hex
        self._log("verify %s" % (ok,))
        return ok

    def switch(self):
        crash_point("before_switch")
        self._log("switch")

    @classmethod
    def confirm(cls):
        FakeImageWriter._log(FakeImageWriter(), "confirm")


class Board:
    pass


class FakeApp:
    def __init__(self):
        self.cfg = doc["cfg"]
        self.board = Board()
        if doc.get("image"):
            self.board.image_writer = FakeImageWriter
        fw_files.mkdir(BASE + "/state")
        self.outbox = Outbox(BASE + "/state/outbox")
        self.reboot_now = False


served = {"chunks": 0, "bytes": 0, "offsets": []}


def serve(fetch):
    """The head-end's answer to a fetch, from the release directory (tampered on request)."""
    path = doc["release"] + "/" + fetch["path"]
    try:
        with open(path, "rb") as f:
            f.seek(fetch["offset"])
            data = bytearray(f.read(min(fetch["len"], 8192)))
        size = fw_files.size(path)
    except OSError:
        return {"version": fetch["version"], "path": fetch["path"], "error": "no such file"}
    where = (doc.get("tamper") or {}).get(fetch["path"])
    if where is not None and fetch["offset"] <= where < fetch["offset"] + len(data):
        data[where - fetch["offset"]] ^= 0x55
    served["chunks"] += 1
    served["bytes"] += len(data)
    served["offsets"].append([fetch["path"], fetch["offset"]])
    return {"version": fetch["version"], "path": fetch["path"], "offset": fetch["offset"],
            "size": size, "data": b2a_base64(bytes(data)).decode().strip()}


def step(up, app, s):
    op = s[0]
    if op == "update":
        try:
            return ["done", up.start(s[1], s[2])]
        except updater_mod.Refused as exc:
            return ["rejected", str(exc)]
    if op == "download":  # s[1]: at most this many chunks (None: until done)
        n = 0
        while s[1] is None or n < s[1]:
            f = up.fetch()
            if f is None:
                break
            up.chunk(serve(f))
            n += 1
        return n
    if op == "chunk":  # a hand-made chunk
        return up.chunk(s[1])
    if op == "fetch":
        return up.fetch()
    if op == "ack":  # the head-end stored every item
        app.outbox.ack(app.outbox.next_seq - 1)
        return app.outbox.acked
    if op == "exchange":  # a healthy exchange
        up.healthy()
        return {"reboot_due": up.reboot_due(), "probation": up.probation_until is not None}
    if op == "watch":  # the probation deadline task
        asyncio.run(up.watch())
        return app.reboot_now
    if op == "state":
        return {"job": up.job and up.job["state"], "reboot_due": up.reboot_due(),
                "probation": up.probation_until is not None, "running": up.running}
    raise ValueError("unknown step %r" % (op,))


def main():
    _wrap(fw_files, "rename", "before_rename", "after_rename")
    _wrap(fwboot, "write_pointer", "before_pointer", "after_pointer")
    _wrap(updater_mod.Updater, "_install", "before_install", None)
    app = FakeApp()
    offered = []
    real_offer = app.outbox.offer

    def offer(kind, body):
        if kind == "update":
            offered.append(body)
        return real_offer(kind, body)

    app.outbox.offer = offer
    out = {"boot": BOOT, "version": version.VERSION, "results": []}
    try:
        up = updater_mod.Updater(app, BASE, BASE + "/state")
        for s in doc["steps"]:
            out["results"].append(step(up, app, s))
    except Crash as exc:
        out["crashed"] = str(exc)
    items = [i for i in app.outbox.peek(1000, 1 << 20) if i["kind"] == "update"]
    out["pending"] = [i["body"] for i in items]
    out["items"] = offered
    out["served"] = served
    print(json.dumps(out))


main()
