#!/usr/bin/env python3
"""`make e2e`: the end-to-end firewall proof, as a PASS/FAIL table of its scenarios, each
over both transports (http, mqtt), then over http in the XML, SOAP and WBXML encodings
(xml, soap, wbxml: only the encoding varies), then the firewall, a read round trip, work
queued while a meter is down and a server restart over xmpp and email (Prosody, or postfix
and dovecot, beside the head-end; the sites may connect only to them: lab/servers.py), and
over xmpp also the rendezvous, a group command, presence on a cut uplink (probed), a signed
update and an operator's XMPP client (each presence change, `read` in the chat, an alarm
escalated past an operator who is away).

    python -m lab.e2e [PYTEST ARGS...]  (make e2e)
        e.g. -x, -k test_5, -k mqtt, -k "test_7 and http"

Runs host_tests/test_e2e*.py (pytest -v): the real head-end in a network namespace (over
mqtt with mosquitto beside it) and two real meters (MicroPython unix port) behind stateful
nftables firewalls (tools/lab/netlab.py, docs/e2e.md). Exits 0 when every scenario passed, 1
when one failed or did not run. Needs root, iproute2 and nftables; without them it says
why, runs nothing and exits 0 (a skip is not a pass: the table says SKIP). Running as root
without mosquitto, it installs Debian's (apt-get) first, as `make sim TRANSPORT=mqtt` does;
if mosquitto is still missing, the mqtt rows say SKIP and the run fails.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console
from rich.table import Table

from lab.runner import ROOT

TESTS = sorted((ROOT / "host_tests").glob("test_e2e*.py"))
STYLE = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "yellow", "NOT RUN": "red"}
# xml, soap, wbxml: http in that encoding
TRANSPORTS = ("http", "mqtt", "xml", "soap", "wbxml", "xmpp", "email")


class Scenarios:
    """A pytest plugin collecting one row per test: title, outcome, time, why."""

    def __init__(self):
        self.rows = {}

    def pytest_collection_finish(self, session):
        for n, item in enumerate(session.items):      # after -k / -m deselection
            doc = getattr(item, "function", None).__doc__ or item.name
            callspec = getattr(item, "callspec", None)
            transport = callspec.params.get("env", "") if callspec else ""
            self.rows[item.nodeid] = {"title": doc.strip().splitlines()[0], "outcome": "NOT RUN",
                                      "seconds": 0.0, "why": "", "transport": transport,
                                      "test": getattr(item, "originalname", item.name),
                                      "order": n}

    def pytest_runtest_logreport(self, report):
        row = self.rows.get(report.nodeid)
        if row is None:
            return
        row["seconds"] += report.duration
        if report.failed:
            row["outcome"] = "FAIL"
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash else str(report.longrepr)
            row["why"] = ("%s: " % report.when if report.when != "call" else "") + \
                text.strip().splitlines()[0][:200]
        elif report.skipped and row["outcome"] != "FAIL":
            row["outcome"] = "SKIP"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            row["why"] = reason.replace("Skipped: ", "", 1)
        elif report.when == "call" and report.passed and row["outcome"] == "NOT RUN":
            row["outcome"] = "PASS"
            row["why"] = "; ".join(v for k, v in report.user_properties if k == "evidence")


def _number(test):
    """A scenario's number (test_10_... after test_9_...); 0 for a name without one."""
    digits = test.split("_")[1] if test.count("_") else ""
    return int(digits) if digits.isdigit() else 0


def main(argv):
    console = Console(width=None if sys.stdout.isatty() else 132)
    plugin = Scenarios()
    started = time.monotonic()
    rc = pytest.main(["-v", "-p", "no:cacheprovider", *map(str, TESTS), *argv], plugins=[plugin])
    took = time.monotonic() - started
    rows = list(plugin.rows.values())
    # pytest runs all of one transport, then the other; the table pairs them per scenario,
    # in scenario order (test_<n>_...)
    rank = {t: i for i, t in enumerate(TRANSPORTS)}
    rows.sort(key=lambda r: (_number(r["test"]), r["test"], rank.get(r["transport"], 99),
                             r["order"]))

    table = Table(title="backchannel end to end: head-end (and its broker or server) outside, "
                        "meters behind firewalls", show_lines=False)
    table.add_column("scenario")
    table.add_column("transport")
    table.add_column("result", justify="center")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for i, row in enumerate(rows):
        same = i and rows[i - 1]["test"] == row["test"]
        if i and not same:
            table.add_section()
        table.add_row("" if same else row["title"], row["transport"],
                      "[%s]%s[/]" % (STYLE[row["outcome"]], row["outcome"]),
                      "%.1f s" % row["seconds"], row["why"])
    console.print()
    console.print(table)

    per = []
    for t in [t for t in TRANSPORTS if any(r["transport"] == t for r in rows)]:
        mine = [r for r in rows if r["transport"] == t]
        per.append("%s %d/%d (%.0f s)" % (t, sum(r["outcome"] == "PASS" for r in mine),
                                          len(mine), sum(r["seconds"] for r in mine)))
    per = "; ".join(per)
    count = {k: sum(r["outcome"] == k for r in rows) for k in STYLE}
    if rows and count["SKIP"] == len(rows):
        why = rows[0]["why"] or "skipped"
        console.print("[yellow]SKIP[/]: %s; nothing was proven" % why)
        return 0
    if rows and count["PASS"] == len(rows) and rc == 0:
        console.print("[bold green]PASS[/]: %d/%d scenarios in %.0f s: %s"
                      % (len(rows), len(rows), took, per))
        return 0
    if not rows:
        console.print("[bold red]FAIL[/]: no scenario was collected (pytest exit %d)" % rc)
        return 1
    stopped = "interrupted; " if rc == pytest.ExitCode.INTERRUPTED else ""
    console.print("[bold red]FAIL[/]: %s%d passed, %d failed, %d skipped, %d not run, in %.0f s "
                  "(pytest exit %d): %s" % (stopped, count["PASS"], count["FAIL"],
                                            count["SKIP"], count["NOT RUN"], took, rc, per))
    return 1


def ensure_mosquitto():
    """Debian's mosquitto for the mqtt rows, installed on first use when running as root
    (as `make sim TRANSPORT=mqtt` does). Without root, or if the install fails, the mqtt
    rows skip, saying why."""
    from headend import broker

    try:
        return broker.find("mosquitto")
    except broker.BrokerError:
        pass
    if os.geteuid() != 0:
        return None
    print("installing mosquitto (apt-get) for the mqtt transport ...", file=sys.stderr)
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "mosquitto"]):
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode:
            print("could not install mosquitto: %s failed" % " ".join(cmd), file=sys.stderr)
            return None
    try:
        return broker.find("mosquitto")
    except broker.BrokerError:
        return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    os.chdir(ROOT)
    # SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: pytest runs the finalizers that
    # tear the lab down, instead of leaving namespaces and processes behind.
    signal.signal(signal.SIGTERM, _interrupt)
    ensure_mosquitto()
    sys.exit(main(sys.argv[1:]))
