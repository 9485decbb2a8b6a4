# One "boot" of a meter's updater, for host_tests/test_update_meter.py, under MicroPython
# and CPython. Reads a JSON document from stdin:
#   {"base": DIR, "release": DIR, "cfg": {...}, "image": bool, "crash": NAME or null,
#    "tamper": {path: offset} or null, "steps": [[op, ...], ...]}
# It runs fwboot.select(base) first (as main.py does), then builds the updater over a real
# Outbox in base/state, and runs the steps against a fake link that serves chunks from the
# release directory (as the head-end would). Prints one JSON document: the boot, per-step
# results, the `update` items and what the link served. `crash` stops the process dead
# (nothing more is written) at a named point: before_install (every file staged and
# hashed), before_rename, after_rename, before_pointer, after_pointer.
# With "image": true the board has boards/esp32_ota.py's ImageWriter over the fake
# esp32.Partition flash ("fakes": host_tests/fakes), kept in base/ between boots.

import json
import sys
from binascii import b2a_base64

import fwboot

doc = json.loads(sys.stdin.read())
BASE = doc["base"]


class FakeMachine:
    WDT_RESET = 3

    def reset_cause(self):
        return 3 if doc.get("watchdog") else 1


sys.modules["machine"] = FakeMachine()  # the board's reset cause, for fwboot
BOOT = None if doc.get("no_select") else fwboot.select(BASE)  # no_select: a restart
# inside the process that skips fwboot (main.py on the unix port, which has no reset)

import asyncio

import fw_files
import updater as updater_mod
import version
from outbox import Outbox

if doc.get("image"):  # an ESP32 with OTA partitions: the real writer on a fake flash
    import fake_ota_flash  # with the fake esp32 module first on the path (the harness)

    from boards.esp32_ota import ImageWriter

    if fake_ota_flash.load(BASE) != "ota_0":  # the new image is running
        version.VERSION = doc["image_version"]


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


class Board:
    pass


class FakeApp:
    def __init__(self):
        self.cfg = doc["cfg"]
        self.board = Board()
        if doc.get("image"):
            self.board.image_writer = ImageWriter
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
    if op == "download":  # s[1]: at most this many chunks (None: until done); s[2]: the
        n = 0             # link's fetch_len (None: the updater's FETCH_LEN)
        while s[1] is None or n < s[1]:
            f = up.fetch(s[2] if len(s) > 2 else None)
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
    out["notices"] = [i["body"] for i in app.outbox.peek(1000, 1 << 20) if i["kind"] == "notice"]
    out["items"] = offered
    out["served"] = served
    if doc.get("image"):
        fake_ota_flash.save(BASE)
        out["flash"] = fake_ota_flash.esp32.STATE
    print(json.dumps(out))


main()
