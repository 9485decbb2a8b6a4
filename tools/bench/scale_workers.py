"""Scale bench, several processes (issue 19, item 6): N meters (10,000 by default) against
`backchannel serve --workers 2` on PostgreSQL behind its HAProxy, and in the same run against
one `serve` on SQLite, so the two are compared under the same machine load.

Each case as in bench/scale.py (real processes on loopback, bench/loadgen.py holding every
meter): after every meter has connected, a steady window (CPU of every process from
/proc/<pid>/stat: each worker, HAProxy, the PostgreSQL server with its backends, the load
generator; peak RSS of each head-end process; exchanges/s), single `read` commands
(p50/p99 from the work records), then a group command to all N. CPU per exchange per
process = that process's CPU seconds over the fleet's exchanges in the window (round robin
gives each worker about half of them). PostgreSQL is a private cluster with fsync on.

    .venv/bin/python -m bench.scale_workers [--json] [--n 10000] [--workers 2] [--window S]
"""

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.procs import machine, machine_busy, proc_cpu, proc_rss, proc_wait, raise_nofile
from bench.scale import REPORT_S, Api, Run, group_command, register, single_commands
from bench.stats import percentile


class PgReader:
    """scale.py's read-only queries ("?" placeholders) on PostgreSQL."""

    def __init__(self, url):
        import psycopg
        self.conn = psycopg.connect(url, autocommit=True)

    def execute(self, sql, args=()):
        return self.conn.execute(sql.replace("?", "%s"), args)

    def close(self):
        self.conn.close()


def raise_nofile_for_proxy():
    """HAProxy holds two descriptors per meter (lb_server.maxconn): the hard limit up to
    65,536 where allowed (root), then the soft one to it."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        raise_nofile()


class PgRun(Run):
    """scale.Run with `serve --workers N` on a private PostgreSQL cluster (fsync on)."""

    def __init__(self, n, work_dir, seed, workers=2):
        super().__init__(n, work_dir, seed)
        self.workers = workers
        self.pg = None
        self.start_s = 120.0
        self.preexec = raise_nofile_for_proxy

    def setup_store(self):
        from headend import pg_server
        self.pg = pg_server.PgServer(Path(tempfile.mkdtemp(prefix="bc-scale-pg-")))
        try:
            self.pg.start()
        except pg_server.PgServerError as e:
            raise RuntimeError("PostgreSQL: %s" % e) from None
        self.key = self.dir / "hub.key"
        self.keys, self.token = register(self.pg.url(), self.n, str(self.key))

    def head_argv(self):
        return [sys.executable, "-m", "headend", "serve", "--db", self.pg.url(), "--db-key",
                str(self.key), "--workers", str(self.workers), "--lb-dir", str(self.dir / "lb"),
                "--port", str(self.port), "--log-level", "warning"]

    def reader(self):
        return PgReader(self.pg.url())

    def stop(self):
        try:
            super().stop()
        finally:
            if self.pg is not None:
                from headend import pg_server
                pg_server.remove(self.pg)


def processes(run):
    """{name: [pids]} of the server side: head-end processes, HAProxy, PostgreSQL."""
    if not isinstance(run, PgRun):
        return {"headend": [run.head.pid]}
    info = json.loads((run.dir / "lb" / "workers.json").read_text())
    out = {"worker%d" % i: [w["pid"] for w in info["workers"]][i:i + 1]
           for i in range(len(info["workers"]))}
    out["haproxy"] = [info["haproxy"]] if info.get("haproxy") else []
    out["supervisor"] = [info["supervisor"]]
    postmaster = int((run.pg.data / "postmaster.pid").read_text().split()[0])
    out["postgresql"] = [postmaster] + children(postmaster)
    return out


def children(parent):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def wal_bytes(conn):
    """PostgreSQL's WAL position in bytes (None on SQLite)."""
    if not isinstance(conn, PgReader):
        return None
    return float(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
                 .fetchone()[0])


def cpu_of(pids):
    """{pid: CPU seconds} of the pids still there."""
    out = {}
    for p in pids:
        try:
            out[p] = proc_cpu(p)
        except OSError:
            pass
    return out


def waits_of(pids):
    """{pid: seconds runnable but waiting for a CPU} of the pids still there."""
    return {p: proc_wait(p) for p in pids if os.path.exists("/proc/%d" % p)}


def spent(before, after):
    return sum(after[p] - before[p] for p in after if p in before)


def measure_case(run, window, commands, group_timeout, seed):
    """One case, steady window then commands then a group to all; figures per process."""
    rng = random.Random(seed)
    budget = run.ramp + 90 + window + group_timeout + 60
    try:
        t_setup = time.monotonic()
        run.start(duration=budget)
        try:
            run.wait_connected(timeout=run.ramp + 90)
        except RuntimeError as e:
            # on a loaded machine not every meter has its connection yet: measure what runs
            # (each meter keeps trying) and say how many had one; a process that exited is
            # still a failure of the case
            if "connected after" not in str(e):
                raise
        connected = run.status.get("connected", 0)
        setup_s = time.monotonic() - t_setup
        api, conn = Api(run.url, run.token), run.reader()
        try:
            procs = processes(run)
            heads = [p for k, v in procs.items() if k.startswith(("headend", "worker"))
                     for p in v]
            peaks = dict.fromkeys(heads, 0)
            every = [p for v in procs.values() for p in v] + [g.pid for g in run.gens]
            wal0 = wal_bytes(conn)
            load0 = os.getloadavg()[0]
            c0, t0, st0, busy0 = cpu_of(every), time.monotonic(), dict(run.status), machine_busy()
            w0 = waits_of(every)
            lat, missing = single_commands(run, api, conn, commands, rng, t0 + window + 15)
            while True:
                for p in heads:
                    peaks[p] = max(peaks[p], proc_rss(p))
                if time.monotonic() - t0 >= window:
                    break
                time.sleep(0.5)
            c1, t1, st1, busy1 = cpu_of(every), time.monotonic(), dict(run.status), machine_busy()
            w1 = waits_of(every)
            wal1 = wal_bytes(conn)
            api.c.timeout = httpx.Timeout(group_timeout)
            try:
                g = group_command(run, api, conn, group_timeout)
            except (RuntimeError, httpx.HTTPError) as e:
                # a 5xx from the proxy, or no answer in group_timeout: an overloaded head-end
                # answers the operator after the meters queued before it
                g = {"group_s": None, "group_final": 0,
                     "group_error": ("%s: %s" % (type(e).__name__, e))[:300]}
            c2, t2 = cpu_of(every), time.monotonic()
            load1 = os.getloadavg()[0]
        finally:
            conn.close()
            api.close()
        span = st1.get("t", 0) - st0.get("t", 0)
        exch = st1.get("exchanges", 0) - st0.get("exchanges", 0)
        rate = exch / span if span > 0 else 0.0
        per = {}
        for name, pids in list(procs.items()) + [("loadgen", [g.pid for g in run.gens])]:
            s = spent({p: c0[p] for p in pids if p in c0}, {p: c1[p] for p in pids if p in c1})
            sg = spent({p: c1[p] for p in pids if p in c1}, {p: c2[p] for p in pids if p in c2})
            # time runnable but not running: how much the rest of the machine held it back
            wt = spent({p: w0[p] for p in pids if p in w0}, {p: w1[p] for p in pids if p in w1})
            per[name] = {"cpu_pct": 100 * s / (t1 - t0),
                         "runq_wait_pct": 100 * wt / (t1 - t0),
                         "cpu_ms_per_exchange": 1000 * s / exch if exch else None,
                         "group_cpu_pct": 100 * sg / (t2 - t1)}
        for p in heads:
            name = next(k for k, v in procs.items() if p in v)
            per[name]["rss"] = peaks[p]
        server = [k for k in per if k != "loadgen"]
        errors = {k: v for k, v in st1.get("errors", {}).items() if v}
        return dict(g, n=run.n, connected=connected, loadgen_procs=run.gen_procs,
                    ramp_s=run.ramp, setup_s=setup_s, window_s=t1 - t0,
                    exchanges_s=rate,
                    load=(load0, load1),
                    expected_s=run.n / REPORT_S, processes=per,
                    server_cpu_ms_per_exchange=sum(per[k]["cpu_ms_per_exchange"] or 0
                                                   for k in server),
                    headend_rss=sum(peaks.values()),
                    wal_bytes_per_exchange=(wal1 - wal0) / exch if wal0 is not None and exch
                    else None,
                    other_cpu_pct=100 * ((busy1 - busy0) - spent(c0, c1)) / (t1 - t0),
                    p50_s=percentile(lat, 50, float("nan")),
                    p99_s=percentile(lat, 99, float("nan")), commands=len(lat),
                    commands_missing=missing, loadgen_errors=errors)
    finally:
        run.stop()


def lighter(run, gen_procs=None):
    """The simulated meters' own cost, spread: one load generator process per 5,000 meters
    (at most 2, each a session of its own: bench.scale.Run) and the meters' starts over
    n/250 s (at least one report interval). With
    10,000 meters in one process starting within 10 s on the shared 2-core VM (load average
    10-13), the load generator got 27 % of a core and waited for one 73 % of the time: it
    opened connections and sent their requests more than 10 s later, the head-end cut them
    as slow (server.HEADER_TIMEOUT; HAProxy's `timeout http-request` answered 408), and
    the meters spent the run reconnecting: 0 exchanges/s while the head-end idled at 5 %."""
    run.gen_procs = gen_procs or max(1, min(2, run.n // 5000))
    run.ramp = max(REPORT_S, run.n / 250)
    return run


def measure(n=10000, workers=2, window=30.0, commands=40, group_timeout=90.0, seed=None,
            gen_procs=None):
    from headend import lb_server, pg_server
    for what, reason in (("PostgreSQL", pg_server.missing_reason()),
                         ("HAProxy", lb_server.missing_reason())):
        if reason:
            raise RuntimeError("%s: %s" % (what, reason))
    seed = random.randrange(1 << 30) if seed is None else seed
    out = {"machine": machine(("tools/headend",)), "seed": seed, "load_before": os.getloadavg(),
           "cases": {}}
    for i, (name, make) in enumerate((
            ("1 process, SQLite", lambda d: lighter(Run(n, d, seed), gen_procs)),
            ("%d processes, PostgreSQL" % workers,
             lambda d: lighter(PgRun(n, d, seed, workers), gen_procs)))):
        with tempfile.TemporaryDirectory(prefix="bc-scalew-") as tmp:
            try:
                r = measure_case(make(tmp), window, commands, group_timeout, seed + i)
            except RuntimeError as e:       # this case could not run: the other still does
                out["cases"][name] = {"n": n, "error": str(e)[:500],
                                      "load": os.getloadavg()[0]}
                print("%s: could not run: %s" % (name, e), file=sys.stderr, flush=True)
                continue
        out["cases"][name] = r
        print("%s: %.0f exchanges/s, p99 %.3f s, group %s s, server CPU %.2f ms/exchange"
              % (name, r["exchanges_s"], r["p99_s"], r["group_s"],
                 r["server_cpu_ms_per_exchange"]), file=sys.stderr, flush=True)
    out["load_after"] = os.getloadavg()
    return out


def print_table(report):
    print("machine: %(cpu)s, %(nproc)d cores, %(date)s" % report["machine"])
    print("load average before %.1f, after %.1f" % (report["load_before"][0],
                                                    report["load_after"][0]))
    for name, r in report["cases"].items():
        if "error" in r:
            print("\n%s, %d meters: could not run (load average %.1f): %s"
                  % (name, r["n"], r["load"], r["error"]))
            continue
        g = "%.1f s" % r["group_s"] if r["group_s"] else "incomplete (%d final%s)" % (
            r["group_final"], ": " + r["group_error"].splitlines()[0] if r.get("group_error")
            else "")
        print("\n%s, %d meters: %.0f of %.0f exchanges/s, p50 %.3f s, p99 %.3f s, group to all "
              "%s, head-end RSS %.0f MiB, server CPU %.2f ms per exchange, other load %.0f%%"
              % (name, r["n"], r["exchanges_s"], r["expected_s"], r["p50_s"], r["p99_s"], g,
                 r["headend_rss"] / 2**20, r["server_cpu_ms_per_exchange"],
                 r["other_cpu_pct"]))
        print("  load average %.1f at the window's start, %.1f after the group; %d of %d "
              "meters connected when it started; %d commands answered, %d not; load "
              "generator errors %s"
              % (r["load"][0], r["load"][1], r.get("connected", r["n"]), r["n"], r["commands"],
                 r["commands_missing"], r["loadgen_errors"] or "none"))
        if r.get("wal_bytes_per_exchange"):
            print("  WAL written: %.0f bytes per exchange" % r["wal_bytes_per_exchange"])
        for pname, p in r["processes"].items():
            rss = " RSS %.0f MiB" % (p["rss"] / 2**20) if "rss" in p else ""
            print("  %-11s CPU %5.1f%% (waiting for a CPU %5.1f%%)  %s ms/exchange  during "
                  "group %5.1f%%%s"
                  % (pname, p["cpu_pct"], p.get("runq_wait_pct", 0),
                     "%.3f" % p["cpu_ms_per_exchange"] if p["cpu_ms_per_exchange"] is not None
                     else "-", p["group_cpu_pct"], rss))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--commands", type=int, default=40)
    ap.add_argument("--group-timeout", type=float, default=90.0)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--loadgen-procs", type=int, help="default: one per 5,000 meters, up to 2")
    args = ap.parse_args(argv)
    try:
        report = measure(args.n, args.workers, args.window, args.commands, args.group_timeout,
                         args.seed, args.loadgen_procs)
    except KeyboardInterrupt:
        print("scale_workers bench interrupted (torn down)", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print("scale_workers bench could not run: %s" % e, file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
