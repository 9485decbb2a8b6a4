"""Head-end at scale (part of `make bench`): N simulated meters in continuous long-poll
against one head-end, N = 1,000, 5,000, 10,000 by default (--n to change the list).

Real processes on loopback: the head-end (`tools/backchannel serve`, uvicorn + SQLite WAL)
and the load generator (bench/loadgen.py, one asyncio process holding every meter: signed
requests, keep-alive, long-poll wait = time to the next reading, a reading every 10 s, work
executed and answered). Both get RLIMIT_NOFILE raised to the hard limit. The two processes
share the machine's cores, which the table says.

For each N, after every meter has connected:
- steady window: head-end CPU (utime+stime from /proc/<pid>/stat, % of one core) and RSS
  (VmRSS, peak of samples every 0.5 s), exchanges/s answered (counted by the load generator).
- single command: `read` to a random meter, one at a time (random 0-200 ms apart), during
  the steady window; latency = the work record's `finished_at - created` (POST /v1/.../work
  to result stored, the head-end's own clock).
- group command: a group of all N, one `read`; time from the group command's `created` to
  the last member's `finished_at`, polled read-only from the SQLite file (a WAL reader does
  not block the head-end); and the operator's wall time until every outcome was final.
Then the store alone: exchanges/s through the exchange core (authenticate, store, deliver;
no HTTP) in-process against a fresh SQLite file, and the database size per stored reading.

Figures are reported, never asserted. Everything is torn down on exit, failure or Ctrl-C.

    .venv/bin/python -m bench.scale [--json] [--n 1000,5000,10000] [--window S]
                                          [--commands N] [--group-timeout S]
"""

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.procs import (
    free_port,
    machine,
    machine_busy,
    proc_cpu,
    proc_rss,
    proc_wait,
    raise_nofile,
)
from bench.scale_report import fmt_s, print_table  # noqa: F401  (__main__ calls print_table)
from bench.scale_store import store_ceiling
from bench.stats import percentile

REPORT_S = 10.0
FINAL = ("done", "rejected", "unknown_op", "expired", "cancelled")


def register(db_path, n, key_path=None):
    """n meters (one transaction, through the head-end's devices module) and an operator
    token in the store at db_path (a SQLite file or a postgresql:// URL); returns
    ({device: key}, token)."""
    from headend import devices, signing
    from headend.datastore import open_store
    db = open_store(str(db_path), key_path)
    keys = {}
    with db.tx():
        for i in range(n):
            dev = "m%05d" % i
            keys[dev] = devices.create(db, dev, signing.new_key(), 0)
    token = devices.add_token(db, "bench", "operator")
    db.close()
    return keys, token


class Api:
    """The operator API over one keep-alive httpx client."""

    def __init__(self, url, token):
        import httpx
        self.c = httpx.Client(base_url=url, headers={"Authorization": "Bearer " + token},
                              timeout=60.0)

    def post(self, path, body):
        r = self.c.post(path, json=body)
        if r.status_code >= 300:
            raise RuntimeError("POST %s: %d %s" % (path, r.status_code, r.text[:200]))
        return r.json()

    def close(self):
        self.c.close()


class Run:
    """One N: the head-end and load generator processes, their teardown, the samplers."""

    def __init__(self, n, work_dir, seed):
        self.n = n
        self.dir = Path(work_dir)
        self.db_path = self.dir / "scale.db"
        self.seed = seed
        self.procs = []
        self.status = {}
        self.rss_peak = 0
        self._sampling = False
        self.start_s = 30.0               # for the head-end to answer /v1/health
        self.preexec = raise_nofile       # run in the head-end's process before exec
        # load generator processes, each holding its share of the meters, and the seconds
        # over which the meters start (bench.scale_workers: several, and a longer ramp)
        self.gen_procs = 1
        self.ramp = REPORT_S
        self.gens = []
        self._gen_status = {}

    def setup_store(self):
        self.keys, self.token = register(self.db_path, self.n)

    def head_argv(self):
        return [sys.executable, "-m", "headend", "serve", "--db", str(self.db_path),
                "--port", str(self.port), "--log-level", "warning"]

    def reader(self):
        """Read-only queries on the store ("?" placeholders): single_commands, group_command."""
        return _ro(self.db_path)

    def start(self, duration):
        self.setup_store()
        (self.dir / "keys.json").write_text(json.dumps(self.keys))
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.head_log = open(self.dir / "headend.log", "w+b")
        # a session of its own, and so a scheduler autogroup of its own (Linux gives each
        # session an equal share of the CPU whatever the nice values inside it): on a VM
        # shared with other sessions, the head-end, the meters and this process shared one
        # share and the head-end waited for a CPU 91 % of the time
        head = subprocess.Popen(
            self.head_argv(),
            stdout=self.head_log, stderr=subprocess.STDOUT, preexec_fn=self.preexec, cwd=self.dir,
            start_new_session=True)
        self.procs.append(head)
        self.head = head
        self._wait_health(head)
        devices = list(self.keys)
        for i in range(self.gen_procs):
            keys = self.dir / ("keys.json" if self.gen_procs == 1 else "keys-%d.json" % i)
            if self.gen_procs > 1:
                keys.write_text(json.dumps({d: self.keys[d] for d in devices[i::self.gen_procs]}))
            gen = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", "--url", self.url, "--keys",
                 str(keys), "--report", str(REPORT_S), "--ramp", str(self.ramp),
                 "--duration", str(duration), "--seed", str(self.seed + i)],
                stdout=subprocess.PIPE, stderr=open(self.dir / ("loadgen-%d.log" % i), "wb"),
                preexec_fn=raise_nofile, cwd=self.dir, start_new_session=True)
            self.procs.append(gen)
            self.gens.append(gen)
            threading.Thread(target=self._read_status, args=(i, gen), daemon=True).start()
        self.gen = self.gens[0]
        self._sampling = True
        threading.Thread(target=self._sample_rss, daemon=True).start()

    def _wait_health(self, head):
        import httpx
        end = time.monotonic() + self.start_s
        while time.monotonic() < end:
            if head.poll() is not None:
                raise RuntimeError("head-end exited: %s" % self._log_tail())
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("head-end did not answer /v1/health in %.0f s" % self.start_s)

    def _log_tail(self):
        self.head_log.seek(0)
        return self.head_log.read().decode(errors="replace")[-1500:]

    def _read_status(self, i, gen):
        for line in gen.stdout:
            try:
                self._gen_status[i] = json.loads(line)
            except ValueError:
                continue
            self.status = self._merged()

    def _merged(self):
        """The load generators' counters added up; `t` the least advanced one's."""
        parts = [self._gen_status.get(i, {}) for i in range(len(self.gens))]
        out = {"t": min(p.get("t", 0) for p in parts), "errors": {}}
        for key in ("meters", "connected", "exchanges", "items", "work"):
            out[key] = sum(p.get(key, 0) for p in parts)
        for p in parts:
            for k, v in p.get("errors", {}).items():
                out["errors"][k] = out["errors"].get(k, 0) + v
        return out

    def _sample_rss(self):
        while self._sampling:
            try:
                self.rss_peak = max(self.rss_peak, proc_rss(self.head.pid))
            except OSError:
                return
            time.sleep(0.5)

    def wait_connected(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("a process exited early (rc %s): %s"
                                       % (p.returncode, self._log_tail()))
            st = self.status
            if st.get("connected", 0) >= self.n and st.get("t", 0) >= REPORT_S + 1:
                return
            time.sleep(0.5)
        raise RuntimeError("only %s of %d meters connected after %.0f s"
                           % (self.status.get("connected"), self.n, timeout))

    def stop(self):
        self._sampling = False
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        for gen in self.gens:
            if gen.stdout:
                gen.stdout.close()
        self.head_log.close()


def _ro(db_path):
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def single_commands(run, api, conn, count, rng, deadline):
    """`read` to random meters one at a time; latencies (s) from the work records."""
    lat, missing = [], 0
    devices = list(run.keys)
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        dev = rng.choice(devices)
        try:
            num = int(api.post("/v1/devices/%s/work" % dev,
                               {"op": "read", "args": {}})["id"][2:])
        except Exception:           # httpx errors: the API did not answer in 60 s
            missing += 1
            continue
        end = time.monotonic() + 30
        while True:
            row = conn.execute("SELECT status, created, finished_at FROM work WHERE num = ?",
                               (num,)).fetchone()
            if row and row[0] in FINAL:
                lat.append(row[2] - row[1])
                break
            if time.monotonic() > end:
                missing += 1
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.2))
    return lat, missing


def group_command(run, api, conn, timeout):
    members = list(run.keys)
    t0 = time.monotonic()
    api.post("/v1/groups", {"name": "all", "members": members})
    t_create = time.monotonic() - t0
    t1 = time.monotonic()
    gid = api.post("/v1/groups/all/work", {"op": "read", "args": {}, "expires_in": 3600})["gid"]
    t_post = time.monotonic() - t1
    end = t1 + timeout
    final = 0
    while time.monotonic() < end:
        final = conn.execute("SELECT COUNT(*) FROM work WHERE gid = ? AND status IN (%s)"
                             % ",".join("?" * len(FINAL)), (gid, *FINAL)).fetchone()[0]
        if final >= run.n:
            break
        time.sleep(0.1)
    wall = time.monotonic() - t1
    created, last, done = conn.execute(
        "SELECT MIN(g.created), MAX(w.finished_at), SUM(CASE WHEN w.status = 'done' THEN 1 "
        "ELSE 0 END) FROM group_work g JOIN work w ON w.gid = g.gid WHERE g.gid = ?",
        (gid,)).fetchone()
    complete = final >= run.n
    return {"group_s": (last - created) if complete and last else None,
            "group_wall_s": wall if complete else None, "group_final": final,
            "group_done": done or 0, "group_create_s": t_create, "group_post_s": t_post}


def measure_n(n, window, commands, group_timeout, seed):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bc-scale-") as tmp:
        run = Run(n, tmp, seed)
        budget = REPORT_S + 60 + window + group_timeout + 60
        try:
            t_setup = time.monotonic()
            run.start(duration=budget)
            run.wait_connected(timeout=REPORT_S + 45)
            setup_s = time.monotonic() - t_setup
            api = Api(run.url, run.token)
            conn = _ro(run.db_path)
            try:
                pid = run.head.pid
                run.rss_peak = 0
                cpu0, t0, st0 = proc_cpu(pid), time.monotonic(), dict(run.status)
                gen0, busy0 = proc_cpu(run.gen.pid), machine_busy()
                wait0 = proc_wait(pid)
                lat, missing = single_commands(run, api, conn, commands, rng,
                                               deadline=t0 + window + 15)
                while time.monotonic() - t0 < window:
                    time.sleep(0.2)
                cpu1, t1, st1 = proc_cpu(pid), time.monotonic(), dict(run.status)
                gen1, busy1 = proc_cpu(run.gen.pid), machine_busy()
                wait1 = proc_wait(pid)
                steady_rss = run.rss_peak
                rss_end = proc_rss(pid)
                g = group_command(run, api, conn, group_timeout)
                cpu2, t2, gen2 = proc_cpu(pid), time.monotonic(), proc_cpu(run.gen.pid)
                db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("scale.db*"))
                readings = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            finally:
                conn.close()
                api.close()
            span = st1.get("t", 0) - st0.get("t", 0)
            errors = {k: v for k, v in st1.get("errors", {}).items() if v}
            return dict(g, n=n, setup_s=setup_s, window_s=t1 - t0,
                        cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0),
                        runq_wait_pct=100 * (wait1 - wait0) / (t1 - t0),
                        loadgen_cpu_pct=100 * (gen1 - gen0) / (t1 - t0),
                        other_cpu_pct=100 * ((busy1 - busy0) - (cpu1 - cpu0) - (gen1 - gen0))
                        / (t1 - t0),
                        group_cpu_pct=100 * (cpu2 - cpu1) / (t2 - t1),
                        group_loadgen_cpu_pct=100 * (gen2 - gen1) / (t2 - t1),
                        rss=max(steady_rss, rss_end), rss_peak=max(run.rss_peak, steady_rss),
                        exchanges_s=(st1.get("exchanges", 0) - st0.get("exchanges", 0)) / span
                        if span > 0 else 0.0,
                        expected_s=n / REPORT_S,
                        p50_s=percentile(lat, 50, float("nan")),
                        p99_s=percentile(lat, 99, float("nan")),
                        max_s=max(lat) if lat else float("nan"), commands=len(lat),
                        commands_missing=missing, loadgen_errors=errors,
                        db_bytes=db_bytes, items=readings)
        finally:
            run.stop()


def measure(ns=(1000, 5000, 10000), window=30.0, commands=50, group_timeout=45.0, seed=None):
    seed = random.randrange(1 << 30) if seed is None else seed
    out = {"machine": machine(("tools/headend",)), "seed": seed, "report_s": REPORT_S,
           "runs": []}
    t0 = time.monotonic()
    for i, n in enumerate(ns):
        r = measure_n(n, window, commands, group_timeout, seed + i)
        out["runs"].append(r)
        print("scale bench: %d meters: RSS %.0f MiB, CPU %.0f%%, p50 %s, p99 %s, group %s, "
              "%.0f exchanges/s" % (n, r["rss_peak"] / 2**20, r["cpu_pct"], fmt_s(r["p50_s"]),
                                    fmt_s(r["p99_s"]), fmt_s(r["group_s"]), r["exchanges_s"]),
              file=sys.stderr, flush=True)
    out.update(store_ceiling())
    out["runtime_s"] = time.monotonic() - t0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--n", default="1000,5000,10000", help="comma-separated meter counts")
    ap.add_argument("--window", type=float, default=30.0, help="steady window, seconds")
    ap.add_argument("--commands", type=int, default=50, help="single commands per N")
    ap.add_argument("--group-timeout", type=float, default=45.0)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    try:
        report = measure(ns, args.window, args.commands, args.group_timeout, args.seed)
    except KeyboardInterrupt:
        print("scale bench interrupted (torn down)", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print("scale bench could not run: %s" % e, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else "", end="")
    if not args.json:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
