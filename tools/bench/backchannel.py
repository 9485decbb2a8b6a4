"""Back-channel benchmark (part of `make bench`): command latency and idle exchange size.

Real processes: the head-end (tools/backchannel serve, uvicorn + SQLite, with its MQTT
bridge), mosquitto (configured by `backchannel broker-config`, run by `backchannel broker`)
and four simulated meters (the firmware on the MicroPython unix port, tools/sim/meter_main.py).
As root, the head-end and the broker run in the netlab namespace `out` and the meters in
site `a` behind its nftables firewall (tools/lab/netlab.py); otherwise everything talks over
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

    .venv/bin/python -m bench.backchannel [--json] [--commands N] [--poll-commands N]
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

from bench.backchannel_report import print_table, rows  # noqa: F401  (__main__ calls print_table)
from bench.procs import machine
from bench.proxy import breakdown, idle_exchanges, spawn_proxy
from bench.stats import percentile
from lab import netlab, processes

POLL_S = 30                   # the periodic-polling device's poll interval
WARMUP = 5                    # long-poll commands run before the timed ones


# --------------------------------------------------------------------------- statistics

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


def _meter(processes, work, device, key, url, lab, **settings):
    """A meter with the firmware's defaults plus `settings` (processes.Meter defaults
    report_s to 1; the bench wants the firmware's own defaults)."""
    m = processes.Meter(work, device, key, url, lab=lab, ns="a" if lab else None)
    cfg = {"device_id": device, "device_key": key, "server_url": url}
    cfg.update(settings)
    m.config.write_text(json.dumps(cfg))
    return m.start()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def _call(api, method, path, body=None):
    """An operator API call through processes.Headend.api() (httpx, or LabHttp in the lab)."""
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
    seed = random.randrange(1 << 30) if seed is None else seed
    say = (lambda msg: print("bench_backchannel: " + msg, file=sys.stderr, flush=True)) \
        if progress else (lambda msg: None)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    work = tempfile.mkdtemp(prefix="bc-bench-")
    lab, procs, headend, api, admin, broker = None, [], None, None, None, None
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
        headend = processes.Headend(work, host=host, lab=lab)
        # Registered through the operator API (an admin token): without `poll` a device gets
        # the head-end's default_poll, 0 (continuous long-poll; `next` = mqtt_heartbeat on MQTT).
        token = headend.add_token("bench", "operator")
        admin_token = headend.add_token("bench-admin", "admin")
        if _mosquitto_available():
            # next to the head-end: in `out` (bound to its address there) or on loopback
            broker = processes.Broker(work, headend.db, host=host, lab=lab, ns="out").start()
            headend.extra += broker.serve_args()
        else:
            say("mosquitto is not installed: no MQTT latency")
        headend.start()
        api = headend.api(token)
        admin = headend.api(admin_token)
        keys = {"meter-lp": _register(admin, "meter-lp"),
                "meter-idle": _register(admin, "meter-idle"),
                "meter-pp": _register(admin, "meter-pp", POLL_S)}
        if broker is not None:
            keys["meter-mq"] = _register(admin, "meter-mq")
            broker.configure()          # the new meter's login and ACL; the broker rereads them
        proxy, proxy_log, proxy_port = spawn_proxy(lab, work, host, headend.port)
        procs.append(proxy)
        url = headend.url
        procs.append(_meter(processes, work, "meter-lp", keys["meter-lp"], url, lab).proc)
        procs.append(_meter(processes, work, "meter-pp", keys["meter-pp"], url, lab,
                            poll_wait_s=0).proc)
        procs.append(_meter(processes, work, "meter-idle", keys["meter-idle"],
                            "http://127.0.0.1:%d" % proxy_port, lab, report_s=3600).proc)
        if broker is not None:
            procs.append(_meter(processes, work, "meter-mq", keys["meter-mq"], "", lab,
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
        cmd = [sys.executable, "-m", "bench.operator_api", json.dumps(args)]
        limit = window + POLL_S + commands * 4 + 150
        if lab:
            out = lab.check_output("out", cmd, timeout=limit)
        else:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                                 check=True).stdout
        driven = json.loads(out.strip().splitlines()[-1])
        idle = idle_exchanges(proxy_log)
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError("a bench process exited early: %s" % dead)
    except subprocess.CalledProcessError as e:
        raise RuntimeError("driver failed (%d): %s"
                           % (e.returncode, e.stderr or e.output)) from e
    finally:
        for client in (api, admin):
            if hasattr(client, "close"):
                client.close()
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
        "machine": machine(("firmware", "boards", "tools/headend")), "path": path_note,
        "seed": seed,
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
            request_parts=breakdown(sample["request"]),
            response_parts=breakdown(sample["response"]))
    report["rows"] = rows(report)
    return report


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
