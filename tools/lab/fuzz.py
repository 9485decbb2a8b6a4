#!/usr/bin/env python3
"""The long fuzz campaign and the security report (docs/security.md).

Runs host_tests/test_fuzz_firmware.py, test_fuzz_waveform.py and test_fuzz_headend.py (the
same tests `make test` runs with a few hundred inputs) with many more: --examples per parser
under CPython (default 100000), --mp-examples per firmware parser under the MicroPython unix
port, --schema-examples per head-end API operation and mode for schemathesis. Each parser
runs as its own pytest process, --jobs at a time; prints per-parser counts (outcomes: ok,
each documented error, HTTP statuses), time and slowest input, and failures. Exit status 1
if anything failed.

    tools/fuzz                      # the whole campaign
    tools/fuzz --examples 5000 --only http,work
    tools/fuzz --report             # only the security checks' counts
    tools/fuzz --stop-after 3600    # then stop: each parser running reports how far it got
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from lab.runner import ROOT

TESTS = ROOT / "host_tests"
FIRMWARE_PARSERS = ["cfgfile", "config", "http", "manifest", "outbox", "response", "work",
                    "xml", "soap", "wbxml", "xmlstream", "mime", "imap", "pop3", "stanza",
                    "guarded"]
PARSERS = {       # parser: (test file in host_tests/, test id or -k expression)
    **{p: ("test_fuzz_firmware.py", "test_firmware_parser_cpython[%s]" % p)
       for p in FIRMWARE_PARSERS},
    **{"mp-" + p: ("test_fuzz_firmware.py", "test_firmware_parser_micropython[%s]" % p)
       for p in FIRMWARE_PARSERS},
    "csv": ("test_fuzz_waveform.py", "test_waveform_csv"),
    "comtrade": ("test_fuzz_waveform.py", "test_waveform_comtrade"),
    "exchange": ("test_fuzz_headend.py", "test_headend_exchange"),
    "peer_rules": ("test_fuzz_headend.py", "test_headend_peer_rules"),
    "presence": ("test_fuzz_headend.py", "test_headend_presence"),
    "openapi": ("test_fuzz_headend.py", "test_openapi_no_server_errors or test_openapi_report "
                "or test_api_non_finite_and_huge_numbers"),
}


def env_for(args, stats):
    env = dict(os.environ, BC_FUZZ_EXAMPLES=str(args.examples),
               BC_FUZZ_MP_EXAMPLES=str(args.mp_examples),
               BC_SCHEMA_EXAMPLES=str(args.schema_examples), BC_FUZZ_STATS=str(stats))
    return env


def pytest_cmd(target, selector=None):
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           str(TESTS / target)]
    if selector:
        if "[" in selector:
            cmd[-1] += "::" + selector
        else:
            cmd += ["-k", selector]
    return cmd


def campaign(args):
    names = args.only.split(",") if args.only else list(PARSERS)
    unknown = [n for n in names if n not in PARSERS]
    if unknown:
        sys.exit("fuzz: unknown parser %s (choose from %s)" % (", ".join(unknown),
                                                                  ", ".join(PARSERS)))
    tmp = Path(tempfile.mkdtemp(prefix="bc-fuzz-"))
    stats = tmp / "stats.jsonl"
    env = env_for(args, stats)
    print("fuzz: %d examples per parser (CPython), %d under MicroPython, %d per API operation "
          "and mode (schemathesis); %d jobs" % (args.examples, args.mp_examples,
                                                 args.schema_examples, args.jobs), flush=True)
    pending = list(names)
    running = {}
    failed = {}
    took = {}
    stopped, not_run = set(), []
    deadline = time.monotonic() + args.stop_after if args.stop_after else None
    while pending or running:
        if deadline is not None and time.monotonic() > deadline:
            deadline, not_run, pending = None, pending, []
            for name, (p, _, _) in running.items():
                stopped.add(name)
                p.terminate()       # SIGTERM: it reports the inputs it ran (fuzz_common)
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = open(tmp / ("%s.log" % name), "w")
            p = subprocess.Popen(pytest_cmd(*PARSERS[name]), cwd=ROOT,
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (p, time.monotonic(), log)
        time.sleep(0.2)
        for name, (p, start, log) in list(running.items()):
            if p.poll() is None:
                continue
            log.close()
            del running[name]
            took[name] = time.monotonic() - start
            if name in stopped:
                outcome = "stopped"
            elif p.returncode != 0:
                failed[name] = tail(tmp / ("%s.log" % name))
                outcome = "FAILED"
            else:
                outcome = "passed"
            print("  %-10s %s in %.0f s" % (name, outcome, took[name]), flush=True)
    print()
    rows = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    print("%-10s %-12s %9s %8s %9s  outcomes" % ("parser", "runtime", "inputs", "seconds",
                                                 "slowest"))
    total = 0
    for r in sorted(rows, key=lambda r: (r["runtime"], r["parser"])):
        total += r["examples"]
        outcomes = ", ".join("%s %d" % kv for kv in Counter(r["outcomes"]).most_common())
        print("%-10s %-12s %9d %8s %9s  %s%s" % (
            r["parser"], r["runtime"], r["examples"], r.get("seconds", "-"),
            "%.3f s" % r["slowest_s"] if "slowest_s" in r else "-", outcomes,
            "  FAILED" if r.get("failed") else "  (stopped)" if r.get("stopped") else ""))
    print("\n%d inputs, %d failure%s; logs in %s" % (total, len(failed),
                                                     "" if len(failed) == 1 else "s", tmp))
    if stopped or not_run:
        print("--stop-after: stopped %s; not run %s" % (", ".join(sorted(stopped)) or "none",
                                                       ", ".join(not_run) or "none"))
    for name, text in failed.items():
        print("\n--- %s failed ---\n%s" % (name, text))
    return 1 if failed else 0


def tail(path, lines=40):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def report(args):
    tmp = Path(tempfile.mkdtemp(prefix="bc-security-"))
    out = tmp / "security.jsonl"
    env = dict(env_for(args, tmp / "unused"), BC_SECURITY_REPORT=str(out))
    p = subprocess.run(pytest_cmd("test_security.py"), cwd=ROOT, env=env,
                       capture_output=True, text=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    print("%-52s %6s  %s" % ("security check", "count", "refused with"))
    for r in rows:
        print("%-52s %6d  %s" % (r["check"], r["count"], r["outcome"]))
    print("\n%d checks, %d attempts refused; test_security.py %s" % (
        len(rows), sum(r["count"] for r in rows), "passed" if p.returncode == 0 else "FAILED"))
    if p.returncode:
        print(p.stdout[-4000:])
    return p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=100000,
                    help="inputs per parser under CPython (default 100000)")
    ap.add_argument("--mp-examples", type=int, default=2000,
                    help="inputs per firmware parser under MicroPython (default 2000)")
    ap.add_argument("--schema-examples", type=int, default=200,
                    help="schemathesis examples per API operation and mode (default 200)")
    ap.add_argument("--only", help="comma-separated parsers: " + ", ".join(PARSERS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--stop-after", type=float, metavar="SECONDS",
                    help="then stop the parsers running (each reports the inputs it ran, "
                    "marked stopped) and start no more")
    ap.add_argument("--report", action="store_true",
                    help="run the security checks and print their counts (no fuzzing)")
    args = ap.parse_args()
    sys.exit(report(args) if args.report else campaign(args))


if __name__ == "__main__":
    main()
