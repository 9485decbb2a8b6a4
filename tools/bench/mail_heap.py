"""The heap an email meter needs on the board interpreter (32-bit, float32), measured the
simple way: one meter per heap size, all at once, against one private mail server and a
real head-end (loopback): each must keep exchanging for `seconds` and answer a `read`
pushed by mail, with no MemoryError in its log. IMAP IDLE and POP3 each; the firmware from
.mpy, as deployed (BC_FIRMWARE_MPY=1).

    python -m bench.mail_heap [--seconds S] [--kib 96,112,128,...]

Not in `make bench` (about 2 minutes, as root); figures in docs/email.md."""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from lab import mailsite, pki, processes, runner

KIB = (96, 112, 128, 144, 160, 192)


def measure(kibs=KIB, seconds=60):
    if not runner.available("board"):
        raise RuntimeError(runner.board_missing_reason())
    work = Path(tempfile.mkdtemp(prefix="mail-heap-"))
    pki.init(work / "pki", hosts=[mailsite.DOMAIN], ips=["127.0.0.1"])
    names = ["h%s-%d" % (p, k) for p in ("imap", "pop3") for k in kibs]
    mail = mailsite.MailSite(work / "pki").configure(names)
    he = processes.Headend(work, extra=mail.serve_args())
    keys = {n: he.add_device(n) for n in names}
    token = he.add_token("bench", "operator")
    procs, meters = [], {}
    saved = os.environ.get("BC_BOARD_HEAP")
    os.environ["BC_FIRMWARE_MPY"] = "1"         # as deployed: precompiled .mpy
    try:
        mail.start()
        procs.append(he.start())
        for n in names:
            pickup, kib = n[1:5], int(n.split("-")[1])
            os.environ["BC_BOARD_HEAP"] = "%dK" % kib
            meters[n] = processes.Meter(work, n, keys[n], "", interpreter="board",
                                        report_s=5, **mail.meter_settings(
                                            n, pickup, mail_send_s=10, mail_poll_s=15))
            procs.append(meters[n].start())
        time.sleep(seconds)
        api = he.api(token)
        queued = {n: api.post("/v1/devices/%s/work" % n, json={"op": "read", "args": {}})
                  .json()["id"] for n in names}
        time.sleep(45)
        out = {}
        for n in names:
            w = api.get("/v1/work/%s" % queued[n]).json()
            log = meters[n].log()
            ok = (w["status"] == "done" and "MemoryError" not in log
                  and meters[n].proc.poll() is None)
            out[n] = {"ok": ok, "status": w["status"],
                      "memory_error": "MemoryError" in log}
        return out
    finally:
        if saved is None:
            os.environ.pop("BC_BOARD_HEAP", None)
        else:
            os.environ["BC_BOARD_HEAP"] = saved
        for p in reversed(procs):
            p.kill()
        mail.remove()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--kib", default=",".join(str(k) for k in KIB))
    a = ap.parse_args(argv)
    r = measure([int(k) for k in a.kib.split(",")], a.seconds)
    for n in sorted(r, key=lambda n: (n[:5], int(n.split("-")[1]))):
        print("%-10s %s  (read %s%s)" % (n, "passes" if r[n]["ok"] else "FAILS",
                                        r[n]["status"],
                                        ", MemoryError" if r[n]["memory_error"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
