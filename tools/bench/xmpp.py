"""The XMPP transport's figures (`make bench`; docs/xmpp.md, docs/performance.md): a real
Prosody, the head-end as its component and a meter on the MicroPython unix port over Direct
TLS. As root, through the firewall lab (bench/xmpp_lab.py: the meter behind its site's
firewall, the baseline's echo client beside it, and the delay of presence changes to an
operator's client); otherwise, or with --loopback, on loopback as below.

- command latency: sequential `read` commands, created -> finished as the head-end stores
  them (the component pushes the work, the meter answers with the result in its next
  message);
- baseline, measured in the same run: Prosody's own message round trip between two real
  clients (slixmpp, c2s STARTTLS), the floor any command over this server pays twice;
- bytes per idle minute: the meter's TCP bytes both ways (TLS records included) through a
  counting relay, with no command for 60 s: keepalive pings, heartbeat exchanges and the
  readings of the firmware's default interval (report_s 10).

    python -m bench.xmpp [--json] [--commands N] [--idle S] [--loopback]"""

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.backchannel import summary
from lab import processes
from lab.im_process import DOMAIN, ImServer


class Relay:
    """A TCP relay on 127.0.0.1 to host:port that counts the bytes of each direction."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.up = self.down = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(a, b, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, "down"), daemon=True).start()

    def _pump(self, src, dst, way):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                setattr(self, way, getattr(self, way) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def prosody_round_trip(im, n):
    """n sequential message round trips alice -> bob -> alice through Prosody, in ms."""
    from slixmpp import ClientXMPP

    loop = asyncio.new_event_loop()
    out, done = [], threading.Event()

    def client(user, on_message):
        c = ClientXMPP("%s@%s" % (user, DOMAIN), user + "-pw")
        c.ca_certs = im.ca_file
        c.add_event_handler("message", on_message)
        return c

    async def main():
        got = asyncio.Queue()
        bob = client("bob", lambda m: m.reply(m["body"]).send())
        alice = client("alice", lambda m: got.put_nowait(time.perf_counter()))
        started = [asyncio.Event(), asyncio.Event()]
        for c, ev in ((bob, started[0]), (alice, started[1])):
            c.add_event_handler("session_start", lambda _e, c=c, ev=ev: (c.send_presence(),
                                                                          ev.set()))
            c.connect("127.0.0.1", im.ports["c2s_port"])
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
        to = "bob@%s/%s" % (DOMAIN, bob.boundjid.resource)
        for i in range(n + 5):
            t0 = time.perf_counter()
            alice.send_message(mto=to, mbody="ping %d" % i, mtype="chat")
            t1 = await asyncio.wait_for(got.get(), 10)
            if i >= 5:                          # warm-up
                out.append((t1 - t0) * 1000)
        alice.disconnect()
        bob.disconnect()

    def run():
        try:
            loop.run_until_complete(main())
        finally:
            done.set()
    threading.Thread(target=run, daemon=True).start()
    done.wait(120)
    return out


def measure(commands=100, idle_s=60, loopback=False):
    """Through the firewall lab when it can run here (root), else on loopback."""
    if not loopback:
        from bench import xmpp_lab

        why = xmpp_lab.missing()
        if why is None:
            return xmpp_lab.measure(commands, idle_s)
        print("xmpp bench: %s; on loopback" % why, file=sys.stderr)
    return measure_loopback(commands, idle_s)


def measure_loopback(commands=100, idle_s=60):
    work = Path(tempfile.mkdtemp(prefix="bench-xmpp-"))
    im = ImServer(work)
    procs = []
    try:
        im.configure()
        he = processes.Headend(work, config=im.headend_config())
        key = he.add_device("xm")
        api_token = he.add_token("bench", "operator")
        im.start()
        im.add_meter("xm")
        for user in ("alice", "bob"):
            im.add_account("%s@%s" % (user, DOMAIN), user + "-pw")
        he.start()
        procs.append(he)
        relay = Relay("127.0.0.1", im.ports["tls_port"])
        # the firmware's default reading interval (10 s), not the tests' 1 s
        settings = dict(im.meter_settings("xm"), xmpp_port=relay.port, report_s=10)
        meter = processes.Meter(work, "xm", key, "", **settings)
        procs.append(meter.start())
        api = he.api(api_token)
        processes.wait_until(lambda: api.get("/v1/devices/xm").json()["transport"] == "xmpp",
                             60, "the meter's first exchange over XMPP")
        lat = []
        for i in range(commands + 5):
            w = processes.run_work(api, "xm", "read")
            if i >= 5 and w["status"] == "done":
                lat.append((w["finished_at"] - w["created"]) * 1000)
        base = prosody_round_trip(im, commands)
        time.sleep(2)
        up0, down0 = relay.up, relay.down
        time.sleep(idle_s)
        idle = {"up": relay.up - up0, "down": relay.down - down0, "seconds": idle_s}
        relay.close()
        return {"commands": dict(summary(lat), unit="ms", failed=commands - len(lat)),
                "prosody_round_trip": dict(summary(base), unit="ms"),
                "idle_bytes_per_minute": round((idle["up"] + idle["down"]) * 60 / idle_s),
                "idle": idle, "path": "loopback"}
    finally:
        for p in reversed(procs):
            p.kill()
        im.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_table(report):
    from rich.console import Console
    from rich.table import Table

    lab = report["path"] == "firewall lab"
    t = Table(title="XMPP transport: a MicroPython meter through a real Prosody (%s)"
                    % report["path"],
              caption="commands created -> finished at the head-end; baseline: Prosody's own "
                      "client-to-client round trip in the same run%s; timings not asserted"
                      % (" (operator in out, echo client behind the meter's firewall)"
                         if lab else ""))
    for name, justify in (("measure", "left"), ("value", "right"), ("baseline", "right")):
        t.add_column(name, justify=justify)
    c, b = report["commands"], report["prosody_round_trip"]
    for q in ("p50", "p99"):
        t.add_row("command latency %s (n = %d)" % (q, c["n"]), "%.1f ms" % c[q],
                  "%.1f ms" % b[q])
    for key, what in (("presence_to_operator", "recorded at the head-end"),
                      ("presence_from_command", "set_presence queued")):
        p = report.get(key)
        if p and p["n"]:
            t.add_row("presence change at the operator's client, from %s (n = %d)"
                      % (what, p["n"]), "p50 %.0f ms, p99 %.0f ms" % (p["p50"], p["p99"]), "")
    i = report["idle"]
    t.add_row("bytes per idle minute (%s, both ways, a reading every 10 s)"
              % ("site uplink frames" if lab else "TLS"),
              "%d B" % report["idle_bytes_per_minute"],
              "up %d B, down %d B in %d s" % (i["up"], i["down"], i["seconds"]))
    Console(width=120).print(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--commands", type=int, default=100)
    ap.add_argument("--idle", type=int, default=60, help="seconds of idle traffic measured")
    ap.add_argument("--loopback", action="store_true", help="on loopback even as root")
    a = ap.parse_args(argv)
    if shutil.which("prosody") is None:
        print("xmpp bench: prosody is not installed (apt-get install prosody)", file=sys.stderr)
        return 2
    report = measure(a.commands, a.idle, a.loopback)
    if a.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
