"""Command latency and bytes by email beside HTTPS long-poll, in the same run (`make bench`,
or `python -m bench.mail_latency [--n N]`): three real meters on the MicroPython unix port
(one on HTTPS long-poll, one collecting by IMAP IDLE, one by POP3 polling every POLL_S), one
real head-end (TLS from the lab PKI) with its mail gateway, the private dovecot + postfix
(lab/mailsite.py), all on loopback. Each meter is sent `read` N times in turn; the latency
is the work's queued to result time at the head-end. Bytes on the wire, TLS included:
every meter connects through counting relays (bench/byte_relay.py), read before a command
and SETTLE_S after it is done (so the answer the meter fetches after sending its result
counts), and over IDLE_S with no command (what keeping the channel costs: long-polls, IDLE
renewals, readings every 5 s mailed every 30 s). Also the mail sizes each way (postfix's
log)."""

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.byte_relay import Relay
from lab import mailsite, pki, processes

POLL_S = 15
KINDS = ("http", "imap", "pop3")
SETTLE_S = 6        # after a command is done, for the meter to fetch its answer
IDLE_S = 60         # a window with no command


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def measure(n=10, workdir=None):
    reason = mailsite.missing()
    if reason:
        raise RuntimeError(reason)
    work = Path(workdir or tempfile.mkdtemp(prefix="bench-mail-"))
    pki.init(work / "pki", hosts=[mailsite.DOMAIN], ips=["127.0.0.1"])
    tls = pki.paths(work / "pki")
    mail = mailsite.MailSite(work / "pki").configure(["b-imap", "b-pop3"])
    he = processes.Headend(work, extra=mail.serve_args(), certfile=tls["server_pem"],
                           keyfile=tls["server_key"], cafile=tls["ca_pem"])
    keys = {k: he.add_device("b-" + k) for k in KINDS}
    token = he.add_token("bench", "operator")
    ports = mail.ports
    relays = {"http": [Relay("127.0.0.1", he.port)],
              "imap": [Relay("127.0.0.1", ports[p]) for p in ("smtps_port", "imaps_port")],
              "pop3": [Relay("127.0.0.1", ports[p]) for p in ("smtps_port", "pop3s_port")]}
    for r in sum(relays.values(), []):
        r.start()
    smtp_i, imap, smtp_p, pop3 = (r.port for r in relays["imap"] + relays["pop3"])
    meters = [processes.Meter(work, "b-http", keys["http"], "https://127.0.0.1:%d"
                              % relays["http"][0].port, report_s=5, ca_file=str(tls["ca_pem"])),
              processes.Meter(work, "b-imap", keys["imap"], "", report_s=5,
                              **mail.meter_settings("b-imap", "imap", mail_send_s=30,
                                                    mail_smtp_port=smtp_i,
                                                    mail_imap_port=imap)),
              processes.Meter(work, "b-pop3", keys["pop3"], "", report_s=5,
                              **mail.meter_settings("b-pop3", "pop3", mail_send_s=30,
                                                    mail_poll_s=POLL_S, mail_smtp_port=smtp_p,
                                                    mail_pop3_port=pop3))]

    def wire(k):
        return sum(r.up + r.down for r in relays[k])
    procs = []
    try:
        mail.start()
        procs.append(he.start())
        procs += [m.start() for m in meters]
        api = he.api(token)
        for k in KINDS:
            processes.wait_until(lambda d="b-" + k: api.get("/v1/devices/%s" % d).json()[
                "last_contact"], 90, "b-%s's first exchange" % k)
        time.sleep(SETTLE_S)
        before = {k: wire(k) for k in KINDS}
        time.sleep(IDLE_S)
        idle = {k: (wire(k) - before[k]) * 60 / IDLE_S for k in KINDS}
        took = {k: [] for k in KINDS}
        sent = {k: [] for k in KINDS}
        for _ in range(n):
            for k in KINDS:
                b0 = wire(k)
                w = processes.run_work(api, "b-" + k, "read", timeout=POLL_S * 3 + 30)
                if w["status"] == "done":
                    took[k].append(w["finished_at"] - w["created"])
                    time.sleep(SETTLE_S)
                    sent[k].append(wire(k) - b0)
        log = (mail.dir / "postfix" / "maillog").read_text(errors="replace")
        sizes = {"to_headend": [], "to_meter": []}
        for sender, size in re.findall(r"from=<([^>]*)>, size=(\d+)", log):
            sizes["to_meter" if sender.startswith("headend@") else "to_headend"].append(
                int(size))
        return {"n": n, "poll_s": POLL_S,
                "latency_s": {k: {"p50": statistics.median(v), "p99": _pct(v, 99),
                                  "max": max(v), "ok": len(v)} if v else None
                              for k, v in took.items()},
                "wire_per_command": {k: statistics.median(v) if v else None
                                     for k, v in sent.items()},
                "wire_idle_per_min": idle, "settle_s": SETTLE_S, "idle_s": IDLE_S,
                "connections": {k: sum(r.connections for r in relays[k]) for k in KINDS},
                "mail_bytes": {k: statistics.median(v) if v else None
                               for k, v in sizes.items()}}
    finally:
        for p in reversed(procs):
            p.kill()
        for r in sum(relays.values(), []):
            r.stop()
        mail.remove()


def print_table(r):
    print("command latency, same run, loopback (n = %d each; POP3 polls every %d s)"
          % (r["n"], r["poll_s"]))
    names = {"http": "HTTPS long-poll", "imap": "email, IMAP IDLE", "pop3": "email, POP3"}
    for k in KINDS:
        v = r["latency_s"][k]
        if v is None:
            print("  %-18s no command answered" % names[k])
        else:
            print("  %-18s p50 %7.2f s   p99 %7.2f s   max %7.2f s   (%d ok)"
                  % (names[k], v["p50"], v["p99"], v["max"], v["ok"]))
    print("bytes on the wire, TLS included (median per command, from queued to %d s after "
          "done; and per minute with no command, %d s window)" % (r["settle_s"], r["idle_s"]))
    for k in KINDS:
        per = r["wire_per_command"][k]
        print("  %-18s %9s B per command   %9.0f B per idle minute"
              % (names[k], "-" if per is None else "%.0f" % per, r["wire_idle_per_min"][k]))
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
