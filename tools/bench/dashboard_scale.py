"""The dashboard at scale (part of `make bench`): a real head-end (`backchannel serve`, its
own process, lab/processes.py) on a temp database with 10,000 registered meters (--n).

Set-up, before the head-end starts: the meters are registered in one transaction
(headend.devices) with a 15-minute poll (so none is derived `unavailable` during the bench),
then each makes one signed exchange through the head-end's own exchange core
(headend.exchange.handle, in this process, 32 in flight): --readings readings and a
`presence` item each, so every meter has readings, a presence and a last contact.

Measured, in this order:
- Fleet page: GET /ui/ after a dashboard login, client wall time from the request to the
  full body over loopback: the first (cold) render, then the median of 5. Beside it in the
  same run: GET /v1/health, and the same page filtered to 10 meters (q=m0000; the search
  still scans every meter). Target: median < 1 s.
- Exchange p99: signed exchanges (bench/loadgen.py's meters: HMAC-signed, keep-alive, wait 0,
  one reading each) from 200 meters at a fixed rate (--rate, default 100/s) for --seconds,
  without and with --streams live SSE streams open (bench/sse_clients.py, its own process,
  one dashboard session per stream, watching meters the load is writing to), interleaved
  (without, with, ...) --runs times each; figure: the median of the runs' p99s. Target:
  under 10 % added.
- SSE latency: from the reading stored (its `received`, the head-end's clock) to the
  `reading` event arriving on a stream, over every event of the runs with streams.
Figures are reported, never asserted; everything is torn down on exit, failure or Ctrl-C.

    .venv/bin/python -m bench.dashboard_scale [--json] [--n 10000] [--streams 20] [--runs 5]
                                              [--seconds 5] [--rate 100]
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import sse_clients
from bench.dashboard_scale_report import print_table
from bench.procs import machine, proc_cpu, proc_wait, raise_nofile
from bench.stats import percentile

POLL_S = 900               # the fleet's poll: no meter turns `unavailable` during the bench
LOAD_METERS = 200
PRESENCE = (("available", None), ("available", None), ("active", None),
            ("available_restricted", "critical process, back at 17:00"),
            ("available_off", "relay open"))


def progress(fmt, *args):
    print("dashboard bench: " + fmt % args, file=sys.stderr, flush=True)


def populate(db_path, n, readings, concurrency=32):
    """n meters, each with `readings` readings and a stated presence; returns ({id: key},
    operator token, seconds)."""
    from headend import devices, exchange, settings, signing
    from headend.db import Database
    from headend.hub import Hub
    t0 = time.monotonic()
    db = Database(db_path)
    keys = {}
    with db.tx():
        for i in range(n):
            dev = "m%05d" % i
            keys[dev] = devices.create(db, dev, signing.new_key(), POLL_S)
    token = devices.add_token(db, "bench", "operator")
    db.close()
    hub = Hub(settings.Settings(db=db_path), Database(db_path))
    rng = random.Random(1)
    devs = list(keys)

    async def worker(k):
        for dev in devs[k::concurrency]:
            now = time.time()
            items = [{"seq": s + 1, "kind": "reading", "body": {
                "t": round(now - (readings - s) * 60, 1), "vrms": round(rng.uniform(228, 232), 2),
                "irms": 4.2, "p": 918.0, "q": 120.5, "s": 966.4, "pf": 0.95, "f": 50.0,
                "import_wh": 1000.0 + s * 15.3}} for s in range(readings)]
            state, note = rng.choice(PRESENCE)
            items.append({"seq": readings + 1, "kind": "presence",
                          "body": {"state": state, "note": note}})
            body = json.dumps({"v": 2, "device": dev, "epoch": os.urandom(8).hex(),
                               "ts": int(now), "nonce": os.urandom(8).hex(), "wait": 0,
                               "room": 4, "done": [], "items": items},
                              separators=(",", ":")).encode()
            await exchange.handle(hub, body, signing.sign(keys[dev], body), "http")

    async def go():
        hub.loop = asyncio.get_running_loop()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))

    asyncio.run(go())
    hub.db.close()
    return keys, token, time.monotonic() - t0


def timed_get(client, path, repeat):
    """Wall times (s) of `repeat` GETs to the full body; the last body."""
    out, body = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path)
        body = r.text                      # read in full
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError("GET %s: %d" % (path, r.status_code))
    return out, body


def fleet_page(url, token, repeat=5):
    import httpx
    with httpx.Client(base_url=url, timeout=60) as c:
        page = c.get("/ui/login")
        sse_clients.check_login(c.post("/ui/login", data=sse_clients.login_form(token, page.text)))
        first, body = timed_get(c, "/ui/", 1)
        times, body = timed_get(c, "/ui/", repeat)
        health, _ = timed_get(c, "/v1/health", repeat)
        small, small_body = timed_get(c, "/ui/?q=m0000", repeat)
        last, _ = timed_get(c, "/ui/?page_no=100000", repeat)
    return {"fleet_first_s": first[0], "fleet_s": statistics.median(times), "fleet_runs": times,
            "fleet_rows": body.count("<tr data-meter="), "fleet_body_bytes": len(body),
            "health_s": statistics.median(health),
            "fleet_small_s": statistics.median(small),
            "fleet_small_rows": small_body.count("<tr data-meter="),
            "fleet_last_page_s": statistics.median(last)}


class Streams:
    """The SSE clients' process; its events collected by a reader thread."""

    def __init__(self, url, token, devices, log):
        self.events, self.ready = [], threading.Event()
        # --token=T: a token may start with "-", which argparse takes for an option
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sse_clients", "--url", url, "--token=" + token,
             *devices], stdout=subprocess.PIPE, stderr=log, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("the SSE clients did not open their streams")

    def _read(self):
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "ready" in msg:
                self.ready.set()
            else:
                self.events.append(msg)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()


async def exchange_run(meters, rate, seconds):
    """Signed exchanges at `rate`/s for `seconds`; latencies (s). One worker per meter
    slice, each paced on a fixed schedule."""
    workers = min(20, len(meters))
    lat, errors = [], []
    interval = workers / rate
    t0 = time.perf_counter()

    async def worker(k):
        mine = meters[k::workers]
        i = 0
        while True:
            due = t0 + k * interval / workers + i * interval
            if due - t0 >= seconds:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            m = mine[i % len(mine)]
            i += 1
            try:
                took = await m.exchange_now()
            except Exception as e:             # counted, not fatal: a figure, not a test
                errors.append(type(e).__name__)
                m.close()
                continue
            lat.append(took)

    await asyncio.gather(*(worker(k) for k in range(workers)))
    return lat, errors


def sse_latencies(db_path, events, since):
    """Seconds from each streamed reading's `received` (stored, the head-end's clock: the
    same machine's) to its event's arrival; read-only from the SQLite file."""
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
    try:
        stored = {(d, t): at for d, t, at in conn.execute(
            "SELECT device, json_extract(body, '$.t'), received FROM items "
            "WHERE kind = 'reading' AND received >= ?", (since - 1,))}
    finally:
        conn.close()
    return [e["at"] - stored[(e["d"], e["t"])] for e in events if (e["d"], e["t"]) in stored]


def exchange_runs(head, keys, token, streams_n, runs, seconds, rate, log):
    from bench.loadgen import LoadGen
    load = dict(list(keys.items())[:LOAD_METERS])
    gen = LoadGen(head.url, load, report=1e9, wait=0, ramp=0)
    watched = [m.device for m in gen.meters[:streams_n]]
    loop = asyncio.new_event_loop()
    out = {"without": [], "with": [], "errors": 0, "sse": [], "events": 0,
           "streams": len(watched), "rate": rate, "seconds": seconds, "runs": runs,
           "load_meters": len(gen.meters)}
    try:
        loop.run_until_complete(exchange_run(gen.meters, rate, min(1.0, seconds)))  # warm up
        for _ in range(runs):
            for variant in ("without", "with"):
                for m in gen.meters:     # idle past keep-alive meanwhile: connect untimed
                    m.close()
                t_open = time.monotonic()
                streams = Streams(head.url, token, watched, log) if variant == "with" else None
                if streams is not None:
                    out["streams_open_s"] = time.monotonic() - t_open
                pid = head.proc.pid
                cpu0, wait0, t0 = proc_cpu(pid), proc_wait(pid), time.monotonic()
                since = time.time()
                try:
                    lat, errors = loop.run_until_complete(
                        exchange_run(gen.meters, rate, seconds))
                    span = time.monotonic() - t0
                    cpu, wait = proc_cpu(pid) - cpu0, proc_wait(pid) - wait0
                    if streams is not None:  # the last readings' events (polled every 0.5 s)
                        time.sleep(1.0)
                finally:
                    if streams is not None:
                        streams.stop()
                out["errors"] += len(errors)
                out.setdefault("error_kinds", {}).update({e: errors.count(e) for e in errors})
                out[variant].append({"p99": percentile(lat, 99), "p50": percentile(lat, 50),
                                     "n": len(lat), "cpu_pct": 100 * cpu / span,
                                     "runq_wait_pct": 100 * wait / span})
                progress("exchanges %s streams: p99 %.1f ms (n=%d)", variant,
                         out[variant][-1]["p99"] * 1000, len(lat))
                if streams is not None:
                    out["events"] += len(streams.events)
                    out["sse"] += sse_latencies(head.db, streams.events, since)
    finally:
        for m in gen.meters:
            m.close()
        loop.close()
    return out


def summarize(x):
    p99 = {v: statistics.median(r["p99"] for r in x[v]) for v in ("without", "with")}
    cpu = {v: statistics.median(r["cpu_pct"] for r in x[v]) for v in ("without", "with")}
    sse = x.pop("sse")
    return dict(x, p99_without_s=p99["without"], p99_with_s=p99["with"],
                cpu_without_pct=cpu["without"], cpu_with_pct=cpu["with"],
                runq_wait_pct=statistics.median(r["runq_wait_pct"]
                                                for v in ("without", "with") for r in x[v]),
                added_pct=100.0 * (p99["with"] - p99["without"]) / p99["without"],
                sse_n=len(sse), sse_p50_s=percentile(sse, 50), sse_p99_s=percentile(sse, 99),
                sse_max_s=max(sse) if sse else None)


def measure(n=10000, streams=20, runs=5, seconds=5.0, rate=100.0, readings=3):
    from lab.processes import Headend
    raise_nofile()
    t_start = time.monotonic()
    out = {"machine": machine(("tools/headend",)), "n": n, "readings_per_meter": readings,
           "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bc-dash-") as tmp:
        head = Headend(tmp)
        keys, token, out["setup_s"] = populate(head.db, n, readings)
        log = open(os.path.join(tmp, "sse_clients.log"), "w+")
        try:
            t0 = time.monotonic()
            head.start()
            out["headend_start_s"] = time.monotonic() - t0
            progress("%d meters set up in %.0f s, head-end up in %.1f s", n, out["setup_s"],
                     out["headend_start_s"])
            out.update(fleet_page(head.url, token))
            progress("fleet page: median %.0f ms", out["fleet_s"] * 1000)
            out.update(summarize(exchange_runs(head, keys, token, streams, runs, seconds,
                                               rate, log)))
        except RuntimeError as e:
            log.seek(0)
            raise RuntimeError("%s\n%s%s" % (e, log.read()[-1000:], head.log()[-1500:])) from e
        finally:
            head.kill(signal.SIGTERM)
            log.close()
    out["load_after"] = os.getloadavg()
    out["runtime_s"] = time.monotonic() - t_start
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--n", type=int, default=10000, help="registered meters")
    ap.add_argument("--streams", type=int, default=20, help="live SSE streams")
    ap.add_argument("--runs", type=int, default=5, help="runs without and with streams")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per run")
    ap.add_argument("--rate", type=float, default=100.0, help="exchanges per second")
    args = ap.parse_args(argv)
    if args.n < max(args.streams, 11) or args.runs < 1 or args.seconds <= 0 or args.rate <= 0:
        print("dashboard bench: --n must be at least 11 and --streams; --runs, --seconds and "
              "--rate positive", file=sys.stderr)
        return 2
    try:
        report = measure(args.n, args.streams, args.runs, args.seconds, args.rate)
    except KeyboardInterrupt:
        print("dashboard bench interrupted (torn down)", file=sys.stderr)
        return 130
    except (RuntimeError, AssertionError, OSError) as e:
        print("dashboard bench could not run: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
