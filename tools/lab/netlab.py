#!/usr/bin/env python3
"""Network test lab: two meter sites behind stateful nftables firewalls, and a head-end.

    .venv/bin/python -m lab.netlab up [PREFIX]      build a lab, print its prefix
    .venv/bin/python -m lab.netlab down PREFIX      remove a lab (also after a crash)
    .venv/bin/python -m lab.netlab status [PREFIX]  show one lab, or list all labs
    .venv/bin/python -m lab.netlab check [PREFIX]   build a lab, prove the firewall, tear down

PREFIX defaults to $BC_LAB, else a fresh `bc-<6 hex>`. Needs root, iproute2 and nftables.
All addresses live inside the lab's own namespaces; docs/e2e.md shows the topology.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

from lab import proc_sockets

ECHO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.py")   # run in a namespace
HEADEND_IP = "10.77.0.1"        # on lo in <p>-out
SITES = {"a": 1, "b": 2}        # site -> subnet 10.77.<n>.0/24: site .2, out side .1
UPLINK = "up0"                  # site-side veth; its peer in <p>-out is "<site>0"

# The default stateful firewall, loaded in each site namespace.
FIREWALL = """\
table inet bc_fw {
    chain input {
        type filter hook input priority filter; policy drop;
        iif "lo" accept
        ct state established,related accept
        ct state invalid counter drop
        ct state new counter drop
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
    }
    chain output {
        type filter hook output priority filter; policy accept;
    }
}
"""
# A cut uplink: whatever arrives over the link is dropped, on both of its ends. Input
# hooks only, so senders see silence and time out (as with a real cut), not EPERM.
PARTITION = """\
table inet {table} {{
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{dev}" counter drop
    }}
}}
"""



class LabError(RuntimeError):
    pass


def sh(cmd, input=None, check=True, timeout=20):
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise LabError(f"{shlex.join(cmd)}: {r.stderr.strip() or 'exit %d' % r.returncode}")
    return r


def netns_list():
    return [line.split()[0] for line in sh(["ip", "netns", "list"]).stdout.splitlines()
            if line.strip()]


class Lab:
    def __init__(self, prefix=None):
        self.prefix = prefix or os.environ.get("BC_LAB") or f"bc-{uuid.uuid4().hex[:6]}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", self.prefix):
            raise LabError(f"bad lab prefix {self.prefix!r}")
        self.ns = {"out": f"{self.prefix}-out", **{s: f"{self.prefix}-{s}" for s in SITES}}
        self.headend_ip = HEADEND_IP
        self.site_ip = {s: f"10.77.{n}.2" for s, n in SITES.items()}
        self.gateway_ip = {s: f"10.77.{n}.1" for s, n in SITES.items()}
        self._procs = []

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def nsname(self, ns):
        """'out', 'a', 'b' or a full namespace name."""
        return self.ns.get(ns, ns)

    def exists(self):
        return sorted(set(self.ns.values()) & set(netns_list()))

    def up(self):
        if self.exists():
            raise LabError(f"lab {self.prefix} already exists (run: netlab.py down {self.prefix})")
        def ip(ns, *args):
            return sh(["ip", "-n", self.ns[ns], *args])

        try:
            for name in self.ns.values():
                sh(["ip", "netns", "add", name])
                sh(["ip", "-n", name, "link", "set", "lo", "up"])
            ip("out", "addr", "add", f"{HEADEND_IP}/32", "dev", "lo")
            for site, n in SITES.items():
                peer = f"{site}0"
                ip("out", "link", "add", peer, "type", "veth", "peer", "name", UPLINK,
                   "netns", self.ns[site])
                ip("out", "addr", "add", f"10.77.{n}.1/24", "dev", peer)
                ip("out", "link", "set", peer, "up")
                # the head-end host speaks from its one address (so UDP replies match conntrack)
                ip("out", "route", "replace", f"10.77.{n}.0/24", "dev", peer, "src", HEADEND_IP)
                ip(site, "addr", "add", f"10.77.{n}.2/24", "dev", UPLINK)
                ip(site, "link", "set", UPLINK, "up")
                ip(site, "route", "add", "default", "via", f"10.77.{n}.1")
                sh(["ip", "netns", "exec", self.ns[site], "nft", "-f", "-"], input=FIREWALL)
            for site in SITES:  # carrier comes up asynchronously (linkwatch): wait, bounded
                for _ in range(50):
                    if "state UP" in ip(site, "-o", "link", "show", "dev", UPLINK).stdout:
                        break
                    time.sleep(0.1)
                else:
                    raise LabError(f"{self.ns[site]}: {UPLINK} did not come up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self):
        """Kill everything running in the lab's namespaces and delete them. Idempotent."""
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()
        self._procs.clear()
        present = set(netns_list())
        for name in (n for n in self.ns.values() if n in present):
            for pid in sh(["ip", "netns", "pids", name], check=False).stdout.split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            sh(["ip", "netns", "del", name], check=False)
        if self.exists():
            raise LabError(f"could not remove {self.exists()}")

    def ns_argv(self, ns, cmd):
        """The argv that runs cmd (a list, or a shell-like string) inside a namespace."""
        return ["ip", "netns", "exec", self.nsname(ns),
                *(shlex.split(cmd) if isinstance(cmd, str) else cmd)]

    def run(self, ns, cmd, **popen_kwargs):
        """Start cmd (a list, or a shell-like string) inside a namespace; down() kills it."""
        p = subprocess.Popen(self.ns_argv(ns, cmd), **popen_kwargs)
        self._procs.append(p)
        return p

    def check_output(self, ns, cmd, timeout=20, **kwargs):
        return subprocess.check_output(self.ns_argv(ns, cmd), text=True, timeout=timeout, **kwargs)

    def serve(self, ns, proto="tcp", host="0.0.0.0", port=0, lifetime=60):
        """Start an echo server in ns; returns its Popen, with .port, once it listens."""
        p = self.run(ns, [sys.executable, ECHO, "serve", proto, host, str(port), str(lifetime)],
                     stdout=subprocess.PIPE, text=True)
        with selectors.DefaultSelector() as sel:
            sel.register(p.stdout, selectors.EVENT_READ)
            line = p.stdout.readline() if sel.select(10) else ""
        if not line.startswith("ready "):
            p.kill()
            raise LabError(f"echo server in {ns} did not start (exit {p.wait(5)})")
        p.port = int(line.split()[1])
        return p

    def probe(self, ns, host, port, proto="tcp", timeout=2.0):
        """From ns, connect to host:port, send a token and wait for its echo.
        Returns {"connected": bool, "echoed": bool, "error": str|None, "seconds": float}."""
        cmd = self.ns_argv(ns, [sys.executable, ECHO, "probe", proto, host, str(port),
                                str(timeout)])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 15)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"connected": False, "echoed": False, "error": r.stderr.strip(), "seconds": None}

    def partition(self, site, on=True):
        """Cut (on=True) or restore (on=False) a site's uplink. Idempotent."""
        table = f"bc_part_{site}"
        for ns, dev in (("out", f"{site}0"), (site, UPLINK)):
            script = f"add table inet {table}\ndelete table inet {table}\n"
            script += PARTITION.format(table=table, dev=dev) if on else ""
            sh(self.ns_argv(ns, ["nft", "-f", "-"]), input=script)

    def listening_sockets(self, pid):
        return proc_sockets.listening_sockets(pid)


# --- CLI

def check(prefix=None):
    """Build a lab, prove the firewall behaviour, print a table, tear down. True if all pass."""
    rows = []  # (name, expect open?, got open?, seconds, error)
    lab = Lab(prefix)
    try:
        lab.up()
        srv = {(ns, proto): lab.serve(ns, proto) for ns in lab.ns for proto in ("tcp", "udp")}
        cases = []  # (name, expect open?, result key, probe args: ns, host, port[, proto])
        for s, ip in lab.site_ip.items():
            he_tcp = (HEADEND_IP, srv["out", "tcp"].port)
            he_udp = (HEADEND_IP, srv["out", "udp"].port, "udp")
            in_tcp, in_udp = (ip, srv[s, "tcp"].port), (ip, srv[s, "udp"].port, "udp")
            cases += [(f"site {s} -> head-end tcp connect", True, "connected", (s, *he_tcp)),
                      (f"site {s} <- head-end tcp reply (established)", True, "echoed",
                       (s, *he_tcp)),
                      (f"site {s} <- head-end udp reply (established)", True, "echoed",
                       (s, *he_udp)),
                      (f"site {s} local server answers (control)", True, "echoed", (s, *in_tcp)),
                      (f"out -> site {s} tcp connect (new, inbound)", False, "connected",
                       ("out", *in_tcp)),
                      (f"out -> site {s} udp (new, inbound)", False, "echoed",
                       ("out", *in_udp))]
        with ThreadPoolExecutor(4) as pool:  # blocked probes each wait out their 2 s timeout
            results = list(pool.map(lambda c: lab.probe(*c[3]), cases))
        rows = [(name, want, bool(r[key]), r["seconds"], r["error"])
                for (name, want, key, _), r in zip(cases, results)]
    except Exception as e:
        rows.append((f"lab error: {e}", True, False, None, None))
    finally:
        lab.down()
    word = {True: "open", False: "blocked"}
    print(f"lab {lab.prefix}\n{'CHECK':46} {'EXPECT':8} {'GOT':8} {'TIME':>6}  RESULT")
    for name, want, got, secs, err in rows:
        t = "-" if secs is None else f"{secs:.2f}s"
        extra = f"  ({err})" if want != got and err else ""
        verdict = "PASS" if want == got else "FAIL"
        print(f"{name:46} {word[want]:8} {word[got]:8} {t:>6}  {verdict}{extra}")
    passed = sum(want == got for _, want, got, _, _ in rows)
    print(f"{'PASS' if passed == len(rows) else 'FAIL'}: {passed}/{len(rows)} checks")
    return passed == len(rows)


def status(prefix=None):
    names = netns_list()
    if prefix is None:
        print("\n".join(sorted(n[:-4] for n in names if n.endswith("-out"))) or "no labs")
        return
    for name in Lab(prefix).ns.values():
        if name not in names:
            print(f"{name}: absent")
            continue
        tables = sh(["ip", "netns", "exec", name, "nft", "list", "tables"]).stdout.split("\n")
        print(f"{name}:\n" + sh(["ip", "-n", name, "-br", "addr"]).stdout.rstrip()
              + "\n  nft: " + (", ".join(t.strip() for t in tables if t.strip()) or "none"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status", "check"])
    ap.add_argument("prefix", nargs="?", default=os.environ.get("BC_LAB"))
    a = ap.parse_args(argv)
    if a.command == "down" and not a.prefix:
        ap.error("down needs PREFIX or $BC_LAB (`netlab.py status` lists labs)")
    try:
        if a.command == "up":
            print(Lab(a.prefix).up().prefix)
        elif a.command == "down":
            Lab(a.prefix).down()
        elif a.command == "status":
            status(a.prefix)
        else:
            return 0 if check(a.prefix) else 1
    except LabError as e:
        sys.exit(f"netlab: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
