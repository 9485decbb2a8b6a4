"""Back-channel benchmark (part of `make bench`): command latency and idle exchange size.

Real processes: the head-end (tools/backchannel serve, uvicorn + SQLite, with its MQTT
bridge), mosquitto (configured by `backchannel broker-config`, run by `backchannel broker`)
and four simulated meters (the firmware on the MicroPython unix port, boards/sim_meter.py).
As root, the head-end and the broker run in the netlab namespace `out` and the meters in
site `a` behind its nftables firewall (tools/netlab.py); otherwise everything talks over
loopback. The table says which.

- long-poll latency: sequential `read` commands (a random 0-100 ms apart) to a meter with
  the firmware's default config, registered with the head-end's default poll (`next` 0:
  continuous long-poll), from POST /v1/devices/{id}/work to the result stored; the
  head-end's own `created` and `finished_at` timestamps of the work record (one clock).
- MQTT latency: the same sequential `read` commands (after the long-poll ones, not at the
  same time) to a meter with transport=mqtt (firmware defaults otherwise): the bridge pushes
  the work on bc/<id>/down as soon as it is queued, the meter publishes its result on
  bc/<id>/up. Same timestamps. Skipped (and said so) when mosquitto is not installed.
- 30 s polling latency: a second meter with poll_wait_s=0 whose device poll is 30 s;
  commands are submitted at uniformly random moments (concurrently with the above, it is
  another device), so each waits for the next scheduled exchange: expect uniform 0-30 s.
- idle exchange bytes: a third meter (report_s=3600, nothing to send) talks through a
  byte-counting TCP proxy in its own namespace; an idle exchange is a request with no items
  and no `done` answered with no work. HTTP bytes (headers and body), no TCP/IP overhead.

Figures are reported, never asserted. Everything is torn down on exit, failure or Ctrl-C.

    .venv/bin/python tools/bench_backchannel.py [--json] [--commands N] [--poll-commands N]
                                                [--window S] [--loopback] [--seed N]
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine
from bench_proxy import _breakdown, _idle_exchanges, _spawn_proxy

ROOT = Path(__file__).resolve().parent.parent

LATENCY_P99_TARGET_MS = 50.0
MQTT_P99_TARGET_MS = 30.0
IDLE_BYTES_TARGET = 600
POLL_S = 30                   # the periodic-polling device's poll interval
IDLE_WAIT_S = 25              # firmware poll_wait_s default: the idle meter's long-poll
WARMUP = 5                    # long-poll commands run before the timed ones


# --------------------------------------------------------------------------- statistics

def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(latencies):
    if not latencies:
        return {"n": 0}
    return {"n": len(latencies), "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "min": min(latencies), "max": max(latencies),
            "mean": sum(latencies) / len(latencies)}


# --------------------------------------------------------------------------- the bench

def _mosquitto_available():
    return bool(shutil.which("mosquitto") or os.access("/usr/sbin/mosquitto", os.X_OK))


def _lab_available():
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")):
        return False
    return True


def _meter(system, work, device, key, url, lab, **settings):
    """A meter with the firmware's defaults plus `settings` (system.Meter defaults
    report_s to 1; the bench wants the firmware's own defaults)."""
    m = system.Meter(work, device, key, url, lab=lab, ns="a" if lab else None)
    cfg = {"device_id": device, "device_key": key, "server_url": url}
    cfg.update(settings)
    m.config.write_text(json.dumps(cfg))
    return m.start()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def _call(api, method, path, body=None):
    """An operator API call through system.Headend.api() (httpx, or LabHttp in the lab)."""
    if hasattr(api, "base_url"):
        return api.request(method, path, json=body)
    return api.request(method, path, body)


def _register(api, device, poll=None):
    """POST /v1/devices: without poll the device gets the head-end's default_poll (0:
    continuous long-poll). Returns the device's key."""
    r = _call(api, "POST", "/v1/devices", dict({"id": device}, **({"poll": poll} if poll else {})))
    if r.status_code != 201:
        raise RuntimeError("POST /v1/devices %s: %d %s" % (device, r.status_code, r.text))
    return r.json()["key"]


def measure(commands=200, poll_commands=20, window=120.0, loopback=False, seed=None,
            progress=True, keep=False):
    """Run the back-channel bench; returns its report (figures and table rows)."""
    sys.path.insert(0, str(ROOT / "host_tests"))
    sys.path.insert(0, str(ROOT / "tools"))
    import system  # host_tests/system.py
    import netlab

    seed = random.randrange(1 << 30) if seed is None else seed
    say = (lambda msg: print("bench_backchannel: " + msg, file=sys.stderr, flush=True)) \
        if progress else (lambda msg: None)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    work = tempfile.mkdtemp(prefix="bc-bench-")
    lab, procs, headend, api, broker = None, [], None, None, None
    path_note = "loopback"
    t_start = time.monotonic()
    try:
        if not loopback and _lab_available():
            lab = netlab.Lab()
            try:
                lab.up()
                path_note = "firewall lab"
            except netlab.LabError as e:
                say("netlab unavailable (%s); using loopback" % e)
                lab = None
        elif not loopback:
            say("not root (or no ip/nft): the firewall lab needs root; using loopback")
        host = lab.headend_ip if lab else "127.0.0.1"
        headend = system.Headend(work, host=host, lab=lab)
        # Registered through the operator API: without `poll` a device gets the head-end's
        # default_poll, 0 (continuous long-poll; `next` = mqtt_heartbeat on MQTT).
        token = headend.add_token("bench", "operator")
        if _mosquitto_available():
            # next to the head-end: in `out` (bound to its address there) or on loopback
            broker = system.Broker(work, headend.db, host=host, lab=lab, ns="out").start()
            headend.extra += broker.serve_args()
        else:
            say("mosquitto is not installed: no MQTT latency")
        headend.start()
        api = headend.api(token)
        keys = {"meter-lp": _register(api, "meter-lp"), "meter-idle": _register(api, "meter-idle"),
                "meter-pp": _register(api, "meter-pp", POLL_S)}
        if broker is not None:
            keys["meter-mq"] = _register(api, "meter-mq")
            broker.configure()          # the new meter's login and ACL; the broker rereads them
        proxy, proxy_log, proxy_port = _spawn_proxy(lab, work, host, headend.port)
        procs.append(proxy)
        url = headend.url
        procs.append(_meter(system, work, "meter-lp", keys["meter-lp"], url, lab).proc)
        procs.append(_meter(system, work, "meter-pp", keys["meter-pp"], url, lab,
                            poll_wait_s=0).proc)
        procs.append(_meter(system, work, "meter-idle", keys["meter-idle"],
                            "http://127.0.0.1:%d" % proxy_port, lab, report_s=3600).proc)
        if broker is not None:
            procs.append(_meter(system, work, "meter-mq", keys["meter-mq"], "", lab,
                                **broker.meter_settings(keepalive=None)).proc)
        say("%s: %d long-poll commands, %d over MQTT; %d commands at random moments over "
            "%.0f s to a %d s-polling meter; idle exchanges through a byte counter (up to "
            "about %.0f s)" % (path_note, commands, commands if broker else 0, poll_commands,
                               window, POLL_S, window + POLL_S + 15))
        args = {"url": url, "token": token, "lp_device": "meter-lp", "lp_n": commands,
                "warmup": WARMUP, "window": window, "seed": seed,
                "random": [{"name": "pp", "device": "meter-pp", "n": poll_commands,
                            "drain": POLL_S + 15}],
                "wait_for": ["meter-lp", "meter-pp", "meter-idle"]}
        if broker is not None:
            args.update(mq_device="meter-mq", mq_n=commands)
            args["wait_for"].append("meter-mq")
        cmd = [sys.executable, str(ROOT / "tools/bench_operator.py"), json.dumps(args)]
        limit = window + POLL_S + commands * 4 + 150
        if lab:
            out = lab.check_output("out", cmd, timeout=limit)
        else:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                                 check=True).stdout
        driven = json.loads(out.strip().splitlines()[-1])
        idle = _idle_exchanges(proxy_log)
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError("a bench process exited early: %s" % dead)
    except subprocess.CalledProcessError as e:
        raise RuntimeError("driver failed (%d): %s" % (e.returncode, e.stderr or e.output))
    finally:
        if hasattr(api, "close"):
            api.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if headend is not None:
            headend.kill()
        if broker is not None:
            broker.stop()
        if lab is not None:
            lab.down()
        if keep:
            say("logs kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGTERM, old_term)

    def latencies(records):
        return [(w["finished_at"] - w["created"]) for w in records
                if w["status"] == "done" and w["finished_at"] is not None]

    def random_group(name, poll_s, expect_p50, expect_p99):
        recs = driven["random"][name]
        lat = latencies(recs)
        return dict(summary(lat), unit="s", commands=len(recs), failed=len(recs) - len(lat),
                    poll_s=poll_s, window_s=window, errors=driven["errors"][name],
                    samples=sorted(round(x, 3) for x in lat),
                    expect_p50=expect_p50, expect_p99=expect_p99)

    def sequential(records):
        lat = latencies(records)
        ok = [w for w in records if w["status"] == "done" and w["finished_at"]
              and w["delivered_at"]]
        # the split: created -> delivered_at (the held long-poll answers; the bridge pushes)
        # -> finished_at (the meter has run it and its next request has brought the result)
        wake = summary([(w["delivered_at"] - w["created"]) * 1000 for w in ok])
        turn = summary([(w["finished_at"] - w["delivered_at"]) * 1000 for w in ok])
        return dict(summary([x * 1000 for x in lat]), unit="ms", commands=len(records),
                    failed=len(records) - len(lat), warmup=WARMUP,
                    to_delivery_ms=wake, meter_turnaround_ms=turn)

    report = {
        "machine": machine(("firmware", "boards", "tools/headend")), "path": path_note, "seed": seed,
        "seconds": round(time.monotonic() - t_start, 1),
        "long_poll": sequential(driven["lp"]),
        "mqtt": dict(sequential(driven.get("mqtt", [])), enabled=broker is not None,
                     broker=("netns `out`, meter in site `a`" if lab else "loopback")),
        "polling": random_group("pp", POLL_S, POLL_S * 0.5, POLL_S * 0.99),
        "idle": {"exchanges": len(idle)},
    }
    if idle:
        totals = sorted(r["total"] for r in idle)
        sample = idle[len(idle) // 2]
        report["idle"].update(
            min=totals[0], max=totals[-1], median=totals[len(totals) // 2],
            req_head=sample["req_head"], req_body=sample["req_body"],
            resp_head=sample["resp_head"], resp_body=sample["resp_body"],
            total=sample["total"], request=sample["request"], response=sample["response"],
            request_parts=_breakdown(sample["request"]),
            response_parts=_breakdown(sample["response"]))
    report["rows"] = rows(report)
    return report


def rows(rep):
    where = "lab" if rep["path"] == "firewall lab" else "loopback"
    lp, pp, idle = rep["long_poll"], rep["polling"], rep["idle"]
    mq = rep.get("mqtt", {"enabled": False})
    out = []
    if lp["n"]:
        fail = ", %d failed" % lp["failed"] if lp["failed"] else ""
        out += [
            {"measure": "Command latency p50, long-poll (%s)" % where,
             "value": "%.1f ms" % lp["p50"],
             "baseline": "n=%d reads%s" % (lp["n"], fail), "target": "-", "met": None},
            {"measure": "Command latency p99, long-poll (%s)" % where,
             "value": "%.1f ms" % lp["p99"], "baseline": "max %.1f ms" % lp["max"],
             "target": "<= %.0f ms" % LATENCY_P99_TARGET_MS,
             "met": lp["p99"] <= LATENCY_P99_TARGET_MS and not lp["failed"]},
            {"measure": "  split: to delivery + to result stored",
             "value": "p50 %.1f + %.1f ms" % (lp["to_delivery_ms"]["p50"],
                                             lp["meter_turnaround_ms"]["p50"]),
             "baseline": "p99 %.1f + %.1f ms" % (lp["to_delivery_ms"]["p99"],
                                                lp["meter_turnaround_ms"]["p99"]),
             "target": "diagnostic", "met": None},
        ]
    else:
        out.append({"measure": "Command latency, long-poll", "value": "no data",
                    "baseline": "-", "target": "<= %.0f ms" % LATENCY_P99_TARGET_MS,
                    "met": False})
    if mq.get("n"):
        fail = ", %d failed" % mq["failed"] if mq["failed"] else ""
        out += [
            {"measure": "Command latency p50, MQTT push (%s)" % where,
             "value": "%.1f ms" % mq["p50"],
             "baseline": "n=%d reads%s" % (mq["n"], fail), "target": "-", "met": None},
            {"measure": "Command latency p99, MQTT push (%s)" % where,
             "value": "%.1f ms" % mq["p99"], "baseline": "max %.1f ms" % mq["max"],
             "target": "<= %.0f ms" % MQTT_P99_TARGET_MS,
             "met": mq["p99"] <= MQTT_P99_TARGET_MS and not mq["failed"]},
            {"measure": "  split: to push + to result stored",
             "value": "p50 %.1f + %.1f ms" % (mq["to_delivery_ms"]["p50"],
                                             mq["meter_turnaround_ms"]["p50"]),
             "baseline": "p99 %.1f + %.1f ms" % (mq["to_delivery_ms"]["p99"],
                                                mq["meter_turnaround_ms"]["p99"]),
             "target": "diagnostic", "met": None},
        ]
    else:
        out.append({"measure": "Command latency, MQTT push", "value": "no data",
                    "baseline": "-" if mq.get("enabled") else "mosquitto not installed",
                    "target": "<= %.0f ms" % MQTT_P99_TARGET_MS,
                    "met": False if mq.get("enabled") else None})
    for g, label in ((pp, "%d s polling (%s)" % (pp["poll_s"], where)),):
        if not g["n"]:
            out.append({"measure": "Command latency, %s" % label, "value": "no data",
                        "baseline": "; ".join(g["errors"]) or "-", "target": "reference",
                        "met": None})
            continue
        fail = ", %d failed" % g["failed"] if g["failed"] else ""
        out += [
            {"measure": "Command latency p50, %s" % label, "value": "%.1f s" % g["p50"],
             "baseline": "expect %.1f s; n=%d%s" % (g["expect_p50"], g["n"], fail),
             "target": "reference", "met": None},
            {"measure": "Command latency p99, %s" % label, "value": "%.1f s" % g["p99"],
             "baseline": "expect %.1f s; n=%d" % (g["expect_p99"], g["n"]),
             "target": "reference", "met": None},
        ]
    if idle["exchanges"]:
        out += [
            {"measure": "Idle exchange, HTTP bytes (%s)" % where,
             "value": "%d B" % idle["median"],
             "baseline": "req %d+%d, resp %d+%d (hdr+body)" % (
                 idle["req_head"], idle["req_body"], idle["resp_head"], idle["resp_body"]),
             "target": "<= %d B" % IDLE_BYTES_TARGET,
             "met": idle["max"] <= IDLE_BYTES_TARGET},
            {"measure": "  idle traffic, one exchange per %d s" % IDLE_WAIT_S,
             "value": "%.2f MB/day" % (idle["median"] * 86400 / IDLE_WAIT_S / 1e6),
             "baseline": "n=%d idle exchanges, %d-%d B" % (idle["exchanges"], idle["min"],
                                                            idle["max"]),
             "target": "reference", "met": None},
        ]
    else:
        out.append({"measure": "Idle exchange, HTTP bytes (%s)" % where,
                     "value": "none seen", "baseline": "-",
                     "target": "<= %d B" % IDLE_BYTES_TARGET, "met": False})
    return out


def print_table(report, console=None):
    from rich.console import Console
    from rich.table import Table

    m = report["machine"]
    where = ("head-end and broker in netns `out`, meters in site `a` behind the nftables "
             "firewall" if report["path"] == "firewall lab"
             else "head-end, broker and meters on loopback")
    lp, pp = report["long_poll"], report["polling"]
    table = Table(title="backchannel back-channel benchmark, %s" % where,
                  caption="latency: the head-end's work created -> finished_at (result stored), "
                          "`read`, plain HTTP / MQTT. long-poll: firmware default config, "
                          "next=0, %d sequential after %d warm-up, 0-100 ms apart. MQTT push: "
                          "the same, to a transport=mqtt meter, after the long-poll ones (QoS 1 "
                          "both ways, no TLS). polling: poll_wait_s=0, "
                          "next=%d s, %d commands at random moments over %.0f s (expected: "
                          "uniform over the interval; a p99 of so few samples is about their "
                          "max). idle: "
                          "report_s=3600, headers + body, TCP/IP excluded. %.0f s; %s, nproc %s, "
                          "%s; commit %s"
                          % (lp.get("n", 0), lp["warmup"], pp["poll_s"], pp["commands"],
                             pp["window_s"], report["seconds"], m["date"], m["nproc"],
                             m["cpu"], m["commit"]))
    for name, justify in (("measure", "left"), ("value", "right"), ("baseline", "right"),
                          ("target", "right"), ("met?", "center")):
        table.add_column(name, justify=justify)
    for r in report["rows"]:
        met = "-" if r["met"] is None else "[green]yes[/]" if r["met"] else "[red]NO[/]"
        table.add_row(r["measure"], r["value"], r["baseline"], r["target"], met)
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
    console.print(table)
    missed = [r["measure"].strip() for r in report["rows"] if r["met"] is False]
    if missed:
        console.print("[yellow]Targets missed:[/] " + "; ".join(missed))
    else:
        console.print("[green]All targets met.[/]")
    idle = report["idle"]
    if idle.get("request"):
        parts = lambda ps: ", ".join("%s %d" % p for p in ps)
        console.print("Idle exchange, %d B: request: %s. Response: %s."
                      % (idle["total"], parts(idle["request_parts"]),
                         parts(idle["response_parts"])), markup=False, highlight=False)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--commands", type=int, default=200, help="long-poll commands (timed)")
    ap.add_argument("--poll-commands", type=int, default=20,
                    help="commands to the 30 s-polling meter")
    ap.add_argument("--window", type=float, default=120.0,
                    help="seconds over which the polling commands are submitted")
    ap.add_argument("--loopback", action="store_true", help="skip the firewall lab")
    ap.add_argument("--seed", type=int, help="seed for the random submission moments")
    ap.add_argument("--keep", action="store_true", help="keep the logs (work directory)")
    args = ap.parse_args(argv)
    try:
        report = measure(args.commands, args.poll_commands, args.window, args.loopback,
                         args.seed, keep=args.keep)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, AssertionError) as e:
        print("back-channel bench could not run: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("back-channel bench interrupted (torn down)", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
