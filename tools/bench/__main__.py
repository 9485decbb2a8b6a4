"""Benchmarks (`make bench`): the firmware hot path on the MicroPython unix port, the
signed-update signature check (bench/ota.py), then the back channel
(bench/backchannel.py).

Launches bench/metering_mp.py under MicroPython and under CPython, takes the median of
repeated runs and prints one table: figure, plain-Python baseline, target, met or not. Then
the hot path on all three interpreters side by side (bench/interpreters.py: CPython, the
unix port, the board interpreter), with THD off and on. Then each wiring's cost
(bench/poly.py: 1p2w, 3p4w, 3p3w, one voltage and five circuits) against the board budget.
Then one ECDSA P-256 verify under both interpreters beside OpenSSL (a second; --no-ota skips it).
Then the exchange's encodings side by side (bench/encoding_sizes.py: bytes per idle exchange
and per 16-reading batch, the meter's parse cost and code size; --no-encodings skips it).
Then the soaks under the board heap cap as `make soak` last recorded them
(tools/bench/soak_results.json; 30 minutes per transport, so not re-run here).
Then command latency and bytes on the wire by email (bench/mail_latency.py: IMAP IDLE and
POP3 beside HTTPS long-poll, one real meter each, through counting relays, about 6 minutes;
--no-mail skips it).
Then runs the back-channel bench (about 2.5 minutes: real head-end and meters, through the netlab
firewall as root, over loopback otherwise) and prints its table. Then the head-end at scale
(bench/scale.py: 1,000 / 5,000 / 10,000 simulated meters in long-poll against one
head-end, about 4 minutes; --scale-n to change the list, --no-scale to skip it). Then the
dashboard at scale (bench/dashboard_scale.py: fleet page, exchange p99 with and without live
SSE streams, SSE latency, at 10,000 meters; about 2 minutes; --no-dashboard skips it).
Timings are reported, never asserted; the exit status is 0 whenever the benchmarks ran.

    make bench, or .venv/bin/python -m bench [--json] [--runs N] [--seconds S] [--no-backchannel]
                                    [--loopback] [--scale/--no-scale] [--scale-n N,N,...]
                                    [--ota/--no-ota] [--dashboard/--no-dashboard]
                                    [--dashboard-n N] [--encodings/--no-encodings]
                                    [--mail/--no-mail]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from bench import interpreters as bench_interpreters
from bench.procs import machine
from lab import runner

SCRIPT = runner.ROOT / "tools" / "bench" / "metering_mp.py"

SPEEDUP_TARGET = 15          # hot path at most 1/15 of the plain-Python loop
HEAP_TARGET = 0              # bytes per cycle in steady state
HEADROOM_HZ = 60             # real-time check: 64 samples per cycle per channel at 60 Hz
SAMPLES_PER_CYCLE = 64


def run_side(interpreter, runs, seconds):
    """Run the firmware-side script; returns its JSON result."""
    cmd, env = runner.command(interpreter, SCRIPT, runs, seconds)
    p = subprocess.run(cmd, capture_output=True, env=env, cwd=runner.ROOT, timeout=300)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (interpreter, p.returncode, p.stderr.decode()))
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def summarize(raw):
    """Medians (ns per V/I pair) of each timed loop, per frequency, plus heap figures."""
    out = {"implementation": raw["implementation"], "version": raw["version"],
           "kernel_viper": raw["viper"], "runs": raw["runs"],
           "signal_seconds_per_run": raw["signal_seconds_per_run"]}
    for hz in ("hz50", "hz60"):
        side = raw[hz]
        for loop in ("feed", "plain", "thd"):
            out["%s_%s_ns" % (loop, hz)] = statistics.median(side[loop + "_ns"])
            out["%s_%s_ns_range" % (loop, hz)] = [min(side[loop + "_ns"]), max(side[loop + "_ns"])]
    out["feed_heap_bytes_per_cycle"] = raw["hz50"].get("feed_heap_bytes_per_cycle")
    out["plain_heap_bytes_per_cycle"] = raw["hz50"].get("plain_heap_bytes_per_cycle")
    out["thd_heap_bytes_per_cycle"] = raw["hz50"].get("thd_heap_bytes_per_cycle")
    out["thd_orders"] = raw["hz50"]["thd_orders"]
    return out


def headroom(ns_per_pair):
    """(time budget per second of signal) / (time spent metering one second of signal)."""
    busy_ns = ns_per_pair * HEADROOM_HZ * SAMPLES_PER_CYCLE
    return 1e9 / busy_ns


def rows(mp, cp):
    """The table: measure, value, baseline, target, met (True / False / None = reference)."""
    feed, plain = mp["feed_hz50_ns"], mp["plain_hz50_ns"]
    speedup = plain / feed
    room, room_plain = headroom(mp["feed_hz60_ns"]), headroom(mp["plain_hz60_ns"])
    heap, heap_plain = mp["feed_heap_bytes_per_cycle"], mp["plain_heap_bytes_per_cycle"]
    room_thd, heap_thd = headroom(mp["thd_hz60_ns"]), mp["thd_heap_bytes_per_cycle"]
    return [
        {"measure": "Hot path Meter.feed, 50 Hz, per V/I pair",
         "value": "%.0f ns" % feed, "baseline": "%.0f ns plain loop" % plain,
         "target": "<= %.0f ns (1/%d)" % (plain / SPEEDUP_TARGET, SPEEDUP_TARGET),
         "met": speedup >= SPEEDUP_TARGET},
        {"measure": "Speed-up over plain-Python loop",
         "value": "%.2fx" % speedup, "baseline": "1x",
         "target": ">= %dx" % SPEEDUP_TARGET, "met": speedup >= SPEEDUP_TARGET},
        {"measure": "Kernel compiled by viper",
         "value": "yes" if mp["kernel_viper"] else "no: bytecode",
         "baseline": "-", "target": "yes", "met": bool(mp["kernel_viper"])},
        {"measure": "CPython, same firmware, per pair",
         "value": "%.0f ns" % cp["feed_hz50_ns"],
         "baseline": "%.0f ns plain loop" % cp["plain_hz50_ns"],
         "target": "reference", "met": None},
        {"measure": "Heap per cycle, steady state",
         "value": "n/a" if heap is None else "%g B" % heap,
         "baseline": "n/a" if heap_plain is None else "%g B plain loop" % heap_plain,
         "target": "%d B" % HEAP_TARGET, "met": heap is not None and heap <= HEAP_TARGET},
        {"measure": "Real-time headroom, %d Hz x %d spc" % (HEADROOM_HZ, SAMPLES_PER_CYCLE),
         "value": "%.1fx real time" % room, "baseline": "%.1fx plain loop" % room_plain,
         "target": ">= 1x (keeps up)", "met": room >= 1},
        {"measure": "CPU share, %d Hz x %d spc" % (HEADROOM_HZ, SAMPLES_PER_CYCLE),
         "value": "%.2f%% of one core" % (100 / room),
         "baseline": "%.2f%% plain loop" % (100 / room_plain),
         "target": "<= 100%", "met": room >= 1},
        {"measure": "Meter.feed with THD to order %d, 50 Hz, per pair" % mp["thd_orders"],
         "value": "%.0f ns" % mp["thd_hz50_ns"],
         "baseline": "%.0f ns without THD" % feed,
         "target": "reference", "met": None},
        {"measure": "CPU share with THD, %d Hz x %d spc" % (HEADROOM_HZ, SAMPLES_PER_CYCLE),
         "value": "%.2f%% of one core" % (100 / room_thd),
         "baseline": "%.2f%% without THD" % (100 / room),
         "target": "<= 100%", "met": room_thd >= 1},
        {"measure": "Heap per cycle with THD, steady state",
         "value": "n/a" if heap_thd is None else "%g B" % heap_thd,
         "baseline": "n/a" if heap is None else "%g B without THD" % heap,
         "target": "%d B" % HEAP_TARGET,
         "met": heap_thd is not None and heap_thd <= HEAP_TARGET},
    ]


def print_table(report):
    from rich.console import Console
    from rich.table import Table

    m, mp = report["machine"], report["micropython"]
    table = Table(title="backchannel metering benchmark, MicroPython %s unix port"
                  % mp["version"],
                  caption="median of %d runs x %d s of signal, 128-sample blocks, "
                          "64 samples/cycle; heap: gc off, 1000 cycles; %s, nproc %s, %s; commit %s"
                  % (mp["runs"], mp["signal_seconds_per_run"], m["date"], m["nproc"], m["cpu"],
                     m["commit"]))
    for name, justify in (("measure", "left"), ("value", "right"), ("baseline", "right"),
                          ("target", "right"), ("met?", "center")):
        table.add_column(name, justify=justify)
    for r in report["rows"]:
        met = "-" if r["met"] is None else "[green]yes[/]" if r["met"] else "[red]NO[/]"
        table.add_row(r["measure"], r["value"], r["baseline"], r["target"], met)
    console = Console()
    if not console.is_terminal:  # piped or under make: do not squeeze to 80 columns
        console = Console(width=120)
    console.print(table)
    missed = [r["measure"].strip() for r in report["rows"] if r["met"] is False]
    if missed:
        console.print("[yellow]Targets missed:[/] " + "; ".join(missed))
    else:
        console.print("[green]All targets met.[/]")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per loop (median taken)")
    ap.add_argument("--seconds", type=int, default=10, help="seconds of signal per run")
    ap.add_argument("--no-backchannel", action="store_true",
                    help="metering only: skip the back-channel bench")
    ap.add_argument("--loopback", action="store_true",
                    help="back-channel bench over loopback even as root (no firewall lab)")
    ap.add_argument("--scale", action=argparse.BooleanOptionalAction, default=True,
                    help="run the head-end at scale bench (tools/bench/scale.py)")
    ap.add_argument("--scale-n", default=os.environ.get("BENCH_SCALE_N", "1000,5000,10000"),
                    help="meter counts for the scale bench [env BENCH_SCALE_N]")
    ap.add_argument("--scale-workers", action=argparse.BooleanOptionalAction, default=True,
                    help="compare serve --workers 2 on PostgreSQL with 1 process on SQLite at "
                         "the largest scale-n (tools/bench/scale_workers.py)")
    ap.add_argument("--ota", action=argparse.BooleanOptionalAction, default=True,
                    help="run the signed-update verify bench (bench/ota.py)")
    ap.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                    help="run the dashboard at scale bench (tools/bench/dashboard_scale.py)")
    ap.add_argument("--dashboard-n", type=int, default=10000,
                    help="registered meters for the dashboard bench")
    ap.add_argument("--encodings", action=argparse.BooleanOptionalAction, default=True,
                    help="bytes and meter cost of each encoding (bench/encoding_sizes.py)")
    ap.add_argument("--mail", action=argparse.BooleanOptionalAction, default=True,
                    help="command latency by IMAP IDLE and POP3 beside HTTP long-poll "
                         "(bench/mail_latency.py; needs dovecot and postfix, as root)")
    ap.add_argument("--xmpp", action=argparse.BooleanOptionalAction, default=True,
                    help="the XMPP transport through a real Prosody (bench/xmpp.py)")
    args = ap.parse_args(argv)
    try:
        mp = summarize(run_side("micropython", args.runs, args.seconds))
        cp = summarize(run_side("cpython", args.runs, max(1, args.seconds // 5)))
        board = None
        if runner.available("board"):
            board = summarize(run_side("board", args.runs, args.seconds))
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
        print("bench could not run: %s" % e, file=sys.stderr)
        return 1
    report = {"machine": machine(), "micropython": mp, "cpython": cp, "board": board,
              "rows": rows(mp, cp)}
    sides = {"cpython": cp, "micropython (unix, 64-bit)": mp,
             "board (32-bit, float32, heap %s)" % runner.board_heap(): board}
    report["interpreters"] = bench_interpreters.rows(sides)
    if not args.json:
        print_table(report)
        print()
        bench_interpreters.print_table(report["interpreters"], caption="median of %d runs x %d s "
                                       "of signal (CPython %d s); THD on: harmonic_order 0"
                                       % (args.runs, args.seconds, max(1, args.seconds // 5)))
    status = 0
    from bench import poly as bench_poly

    try:
        report["polyphase"] = bench_poly.measure()
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
        print("polyphase bench could not run: %s" % e, file=sys.stderr)
        status = 1
    else:
        if not args.json:
            print()
            bench_poly.print_table(report["polyphase"])
    if args.ota:
        from bench import ota as bench_ota

        try:
            report["ota"] = bench_ota.measure()
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as e:
            print("ota bench could not run: %s" % e, file=sys.stderr)
            status = 1
        else:
            if not args.json:
                print()
                bench_ota.print_table(report["ota"])
    if args.encodings:
        from bench import encoding_sizes

        try:
            report["encodings"] = encoding_sizes.measure()
        except (RuntimeError, subprocess.SubprocessError, ValueError, OSError) as e:
            print("encodings bench could not run: %s" % e, file=sys.stderr)
            status = 1
        else:
            if not args.json:
                print()
                encoding_sizes.print_table(report["encodings"])
    from bench import soak as bench_soak  # recorded by `make soak`, not run here (30 min each)

    report["soak"] = bench_soak.load()
    if not args.json:
        print()
        bench_soak.print_table(report["soak"])
    if args.mail:
        from bench import mail_latency

        try:
            report["mail"] = mail_latency.measure()
        except (RuntimeError, subprocess.SubprocessError, AssertionError, OSError) as e:
            print("mail bench could not run: %s" % e, file=sys.stderr)
        else:
            if not args.json:
                print()
                mail_latency.print_table(report["mail"])
    if args.xmpp and shutil.which("prosody"):
        from bench import xmpp as bench_xmpp

        try:
            report["xmpp"] = bench_xmpp.measure(loopback=args.loopback)
        except (RuntimeError, subprocess.SubprocessError, ValueError, OSError,
                AssertionError) as e:
            print("xmpp bench could not run: %s" % e, file=sys.stderr)
            status = 1
        else:
            if not args.json:
                print()
                bench_xmpp.print_table(report["xmpp"])
    if not args.no_backchannel:
        from bench import backchannel as bench_backchannel

        try:
            report["backchannel"] = bench_backchannel.measure(loopback=args.loopback)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, AssertionError) as e:
            print("back-channel bench could not run: %s" % e, file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print("back-channel bench interrupted (torn down)", file=sys.stderr)
            return 130
        else:
            if not args.json:
                print()
                bench_backchannel.print_table(report["backchannel"])
    if args.scale:
        from bench import scale as bench_scale

        try:
            ns = [int(x) for x in args.scale_n.split(",") if x.strip()]
            report["scale"] = bench_scale.measure(ns)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as e:
            print("scale bench could not run: %s" % e, file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print("scale bench interrupted (torn down)", file=sys.stderr)
            return 130
        else:
            if not args.json:
                print()
                bench_scale.print_table(report["scale"])
    if args.scale_workers:
        from bench import scale_workers

        try:
            n = max(int(x) for x in args.scale_n.split(",") if x.strip())
            report["scale_workers"] = scale_workers.measure(n)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError) as e:
            print("scale_workers bench could not run: %s" % e, file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print("scale_workers bench interrupted (torn down)", file=sys.stderr)
            return 130
        else:
            if not args.json:
                print()
                scale_workers.print_table(report["scale_workers"])
    if args.dashboard:
        from bench import dashboard_scale

        try:
            report["dashboard"] = dashboard_scale.measure(args.dashboard_n)
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, OSError,
                AssertionError) as e:
            print("dashboard bench could not run: %s" % e, file=sys.stderr)
            status = 1
        except KeyboardInterrupt:
            print("dashboard bench interrupted (torn down)", file=sys.stderr)
            return 130
        else:
            if not args.json:
                print()
                dashboard_scale.print_table(report["dashboard"])
    if args.json:
        print(json.dumps(report, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
