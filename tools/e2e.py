#!/usr/bin/env python3
"""`make e2e`: the end-to-end firewall proof, as a PASS/FAIL table of its seven scenarios.

    python tools/e2e.py [PYTEST ARGS...]     e.g. -x, -k test_5, -s

Runs host_tests/test_e2e.py (pytest -v): the real head-end in a network namespace and two
real meters (MicroPython unix port) behind stateful nftables firewalls (tools/netlab.py,
docs/e2e.md). Exits 0 when every scenario passed, 1 when one failed or did not run. Needs
root, iproute2 and nftables; without them it says why, runs nothing and exits 0 (a skip is
not a pass: the table says SKIP).
"""
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "host_tests" / "test_e2e.py"
STYLE = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "yellow", "NOT RUN": "red"}


class Scenarios:
    """A pytest plugin collecting one row per test: title, outcome, time, why."""

    def __init__(self):
        self.rows = {}

    def pytest_collection_finish(self, session):
        for item in session.items:      # after -k / -m deselection
            doc = getattr(item, "function", None).__doc__ or item.name
            self.rows[item.nodeid] = {"title": doc.strip().splitlines()[0], "outcome": "NOT RUN",
                                      "seconds": 0.0, "why": ""}

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


def main(argv):
    console = Console(width=None if sys.stdout.isatty() else 132)
    plugin = Scenarios()
    started = time.monotonic()
    rc = pytest.main(["-v", "-p", "no:cacheprovider", str(TESTS), *argv], plugins=[plugin])
    took = time.monotonic() - started
    rows = list(plugin.rows.values())

    table = Table(title="backchannel end to end: head-end outside, meters behind firewalls")
    table.add_column("scenario")
    table.add_column("result", justify="center")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for row in rows:
        table.add_row(row["title"], "[%s]%s[/]" % (STYLE[row["outcome"]], row["outcome"]),
                      "%.1f s" % row["seconds"], row["why"])
    console.print()
    console.print(table)

    count = {k: sum(r["outcome"] == k for r in rows) for k in STYLE}
    if rows and count["SKIP"] == len(rows):
        why = rows[0]["why"] or "skipped"
        console.print("[yellow]SKIP[/]: %s; nothing was proven" % why)
        return 0
    if rows and count["PASS"] == len(rows) and rc == 0:
        console.print("[bold green]PASS[/]: %d/%d scenarios in %.0f s"
                      % (len(rows), len(rows), took))
        return 0
    if not rows:
        console.print("[bold red]FAIL[/]: no scenario was collected (pytest exit %d)" % rc)
        return 1
    stopped = "interrupted; " if rc == pytest.ExitCode.INTERRUPTED else ""
    console.print("[bold red]FAIL[/]: %s%d passed, %d failed, %d skipped, %d not run, in %.0f s "
                  "(pytest exit %d)" % (stopped, count["PASS"], count["FAIL"], count["SKIP"],
                                        count["NOT RUN"], took, rc))
    return 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    os.chdir(ROOT)
    # SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: pytest runs the finalizers that
    # tear the lab down, instead of leaving namespaces and processes behind.
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main(sys.argv[1:]))
