"""Command latency by email beside HTTP long-poll, in the same run (`make bench`, or
`python -m bench.mail_latency [--n N]`): three real meters on the MicroPython unix port (one
on HTTP long-poll, one collecting by IMAP IDLE, one by POP3 polling every POLL_S), one real
head-end with its mail gateway, the private dovecot + postfix (lab/mailsite.py), all on
loopback. Each meter is sent `read` N times in turn; the latency is the work's queued to
result time at the head-end. Also the mail sizes each way (postfix's log) and the TLS
bytes a meter moved per exchange by mail (not measured here: see docs/email.md)."""

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

from lab import mailsite, pki, processes

POLL_S = 15
KINDS = ("http", "imap", "pop3")


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(n=10, workdir=None):
    reason = mailsite.missing()
    if reason:
        raise RuntimeError(reason)
    work = Path(workdir or tempfile.mkdtemp(prefix="bench-mail-"))
    pki.init(work / "pki", hosts=[mailsite.DOMAIN], ips=["127.0.0.1"])
    mail = mailsite.MailSite(work / "pki").configure(["b-imap", "b-pop3"])
    he = processes.Headend(work, extra=mail.serve_args())
    keys = {k: he.add_device("b-" + k) for k in KINDS}
    token = he.add_token("bench", "operator")
    meters = [processes.Meter(work, "b-http", keys["http"], he.url, report_s=5),
              processes.Meter(work, "b-imap", keys["imap"], "", report_s=5,
                              **mail.meter_settings("b-imap", "imap", mail_send_s=30)),
              processes.Meter(work, "b-pop3", keys["pop3"], "", report_s=5,
                              **mail.meter_settings("b-pop3", "pop3", mail_send_s=30,
                                                    mail_poll_s=POLL_S))]
    procs = []
    try:
        mail.start()
        procs.append(he.start())
        procs += [m.start() for m in meters]
        api = he.api(token)
        for k in KINDS:
            processes.wait_until(lambda d="b-" + k: api.get("/v1/devices/%s" % d).json()[
                "last_contact"], 90, "b-%s's first exchange" % k)
        took = {k: [] for k in KINDS}
        for _ in range(n):
            for k in KINDS:
                w = processes.run_work(api, "b-" + k, "read", timeout=POLL_S * 3 + 30)
                if w["status"] == "done":
                    took[k].append(w["finished_at"] - w["created"])
        log = (mail.dir / "postfix" / "maillog").read_text(errors="replace")
        sizes = {"to_headend": [], "to_meter": []}
        for sender, size in re.findall(r"from=<([^>]*)>, size=(\d+)", log):
            sizes["to_meter" if sender.startswith("headend@") else "to_headend"].append(
                int(size))
        return {"n": n, "poll_s": POLL_S,
                "latency_s": {k: {"p50": statistics.median(v), "p99": _pct(v, 99),
                                  "max": max(v), "ok": len(v)} if v else None
                              for k, v in took.items()},
                "mail_bytes": {k: statistics.median(v) if v else None
                               for k, v in sizes.items()}}
    finally:
        for p in reversed(procs):
            p.kill()
        mail.remove()


def print_table(r):
    print("command latency, same run, loopback (n = %d each; POP3 polls every %d s)"
          % (r["n"], r["poll_s"]))
    names = {"http": "HTTP long-poll", "imap": "email, IMAP IDLE", "pop3": "email, POP3"}
    for k in KINDS:
        v = r["latency_s"][k]
        if v is None:
            print("  %-18s no command answered" % names[k])
        else:
            print("  %-18s p50 %7.2f s   p99 %7.2f s   max %7.2f s   (%d ok)"
                  % (names[k], v["p50"], v["p99"], v["max"], v["ok"]))
    b = r["mail_bytes"]
    print("  mail sizes (median, as postfix queued them): meter -> head-end %s B, "
          "head-end -> meter %s B" % (b["to_headend"], b["to_meter"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args(argv)
    print_table(measure(args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
