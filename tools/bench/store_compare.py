"""The exchange core on each store, side by side (issue 19): exchanges/s through
authenticate + store + deliver (no HTTP) with `concurrency` exchanges in flight, one reading
each, against a fresh SQLite file and a fresh database in a private PostgreSQL cluster
(headend/pg_server.py, fsync on: commits are as durable as SQLite's). Reports the rate and the
head-end process's CPU per exchange (PostgreSQL's own server CPU comes on top: its backend
processes are measured from /proc as well).

    .venv/bin/python -m bench.store_compare [--seconds S] [--json]
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

from headend import datastore, devices, exchange, pg_server, settings, signing
from headend.hub import Hub


def _cpu_of(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _postgres_pids(server):
    try:
        master = int((server.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return []
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return [master] + kids


def run_core(location, key_path, seconds, devices_n, concurrency, server_pids=lambda: []):
    db = datastore.open_store(location, key_path)
    keys = {}
    with db.tx():
        for i in range(devices_n):
            dev = "m%05d" % i
            keys[dev] = devices.create(db, dev, signing.new_key(), 0)
    hub = Hub(settings.Settings(db=location, db_key=key_path), db)
    devs, seqs, count = list(keys), dict.fromkeys(keys, 0), [0]

    async def worker(k, end):
        i = k
        while time.perf_counter() < end:
            dev = devs[i % len(devs)]
            i += concurrency
            seqs[dev] += 1
            body = json.dumps({"v": 2, "device": dev, "epoch": "0" * 16, "ts": int(time.time()),
                               "nonce": os.urandom(8).hex(), "wait": 0, "room": 4, "done": [],
                               "items": [{"seq": seqs[dev], "kind": "reading",
                                          "body": {"t": time.time(), "vrms": 230.1, "p": 918.0,
                                                   "import_wh": 1234.5}}]},
                              separators=(",", ":")).encode()
            await exchange.handle(hub, body, signing.sign(keys[dev], body), "mqtt")
            count[0] += 1

    async def go():
        hub.loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, t0 + seconds) for k in range(concurrency)))
        return time.perf_counter() - t0

    own0, srv0 = time.process_time(), _cpu_of(server_pids())
    wall = asyncio.run(go())
    own, srv = time.process_time() - own0, _cpu_of(server_pids()) - srv0
    stored = db.one("SELECT COUNT(*) AS n FROM items")["n"]
    hub.group_commit.close()
    db.close()
    n = count[0]
    return {"exchanges_s": n / wall, "exchanges": n, "stored": stored,
            "headend_cpu_ms": 1000 * own / n, "server_cpu_ms": 1000 * srv / n}


def measure(seconds=5.0, devices_n=500, concurrency=32):
    out = {}
    with tempfile.TemporaryDirectory(prefix="bc-cmp-") as tmp:
        path = os.path.join(tmp, "hub.db")
        out["sqlite"] = run_core(path, path + ".key", seconds, devices_n, concurrency)
        reason = pg_server.missing_reason()
        if reason:
            out["postgresql"] = {"skipped": reason}
            return out
        server = pg_server.temporary(fast=False).start()
        try:
            out["postgresql"] = run_core(server.url(), os.path.join(tmp, "pg.key"), seconds,
                                         devices_n, concurrency,
                                         lambda: _postgres_pids(server))
        finally:
            pg_server.remove(server)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = measure(args.seconds)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for name, r in out.items():
        if "skipped" in r:
            print("%-10s skipped: %s" % (name, r["skipped"]))
            continue
        print("%-10s %6.0f exchanges/s  head-end CPU %.2f ms/exchange  database server CPU "
              "%.2f ms/exchange  (%d exchanges, %d stored)"
              % (name, r["exchanges_s"], r["headend_cpu_ms"], r["server_cpu_ms"],
                 r["exchanges"], r["stored"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
