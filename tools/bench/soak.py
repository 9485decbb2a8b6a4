"""Soaks (`make soak`, `make soak-http|soak-https|soak-mqtt`; the slow lane, outside make
test): a meter on the board interpreter under a heap cap, metering and exchanging with a
real head-end (and broker) for 30 minutes (BC_SOAK_S): readings every second, a `read`
work item every 30 s, and halfway the head-end (over MQTT the broker) restarted, so the
meter reconnects. The cap is the smallest heap the transport passed in 20 s
(bench.heap_budget, docs/performance.md), from .mpy as `make deploy` ships the firmware
(`make soak` sets BC_FIRMWARE_MPY=1), plus a margin of 16 KiB: a heap that fragments or
leaks over the run fails with MemoryError or a stuck exchange. Each `read` answer carries
the meter's free heap after a collection and its low-water mark (firmware/health.py,
HeapWatch, sampled every 5 s): the soak passes only if that minimum stays above the margin.
Each soak's figures are kept in tools/bench/soak_results.json, which `make bench` prints."""

import fcntl
import json
import subprocess
import time

import httpx

from lab import processes, runner

MARGIN_KIB = 16
# measured 2026-12-07 from .mpy (BC_FIRMWARE_MPY=1 python -m bench.heap_budget steady-*) on a
# VM at load average 20 (2 cores): starved probes read high (2026-12-06: 148, 150, 160)
MEASURED_KIB = {"steady-http": 164, "steady-https": 164, "steady-mqtt": 192}
WORK_EVERY_S = 30
RESULTS = runner.ROOT / "tools" / "bench" / "soak_results.json"


def cap(name):
    return MEASURED_KIB[name] + MARGIN_KIB


def passed(r):
    """The soak's verdict (host_tests/test_soak.py asserts the same, clause by clause)."""
    return bool(r.get("alive") and r["memory_errors"] == 0 and r["restarted"]
                and r["work_done"] >= r["work_sent"] - 1 and r["readings"] >= r["seconds"] * 0.8
                and r.get("min_free") is not None and r["min_free"] >= MARGIN_KIB * 1024)


def _heap(out, w):
    heap = (w.get("result") or {}).get("heap")
    if heap:
        out["heap_samples"] = heap["samples"]
        out["free_end"] = heap["free"]
        lo = out.get("min_free")
        out["min_free"] = heap["min_free"] if lo is None else min(lo, heap["min_free"])


def soak(site, name, seconds, kib=None):
    """Run one soak; returns its figures (alive, memory_errors, work sent/done, readings,
    min_free: the meter's lowest free heap after a collection, in bytes)."""
    kib = kib or cap(name)
    device, api, d, proc, log = site.launch(name, kib)
    out = {"scenario": name, "heap_kib": kib, "margin_kib": MARGIN_KIB, "seconds": seconds,
           "work_sent": 0, "work_done": 0, "restarted": False, "min_free": None,
           "mpy": runner.firmware_mpy(), "started": time.strftime("%Y-%m-%dT%H:%MZ",
                                                                   time.gmtime())}
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds and proc.poll() is None:
            if not out["restarted"] and time.monotonic() - start >= seconds / 2:
                site.restart(name)
                out["restarted"] = True
            out["work_sent"] += 1
            try:
                w = processes.run_work(api, device, "read", timeout=WORK_EVERY_S * 2)
                out["work_done"] += w["status"] == "done"
                _heap(out, w)
            except (AssertionError, httpx.HTTPError):  # not done in time; head-end restarting
                pass
            time.sleep(max(0.0, WORK_EVERY_S - (time.monotonic() - start) % WORK_EVERY_S))
        out["alive"] = proc.poll() is None
        out["readings"] = len(api.get("/v1/devices/%s/readings?limit=10000" % device).json())
    finally:
        proc.kill()
        proc.wait()
        log.close()
    text = (d / "meter.log").read_text(errors="replace")
    out["memory_errors"] = text.count("MemoryError")
    out["passed"] = passed(out)
    if not out["passed"]:
        out["log_tail"] = text[-1500:]      # where it failed, for the report
    record(out)
    return out


def _commit():
    p = subprocess.run(["git", "-C", str(runner.ROOT), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return p.stdout.strip() or "?"


def record(r, path=RESULTS):
    """Keep the soak's figures (the latest per scenario) for `make bench` to print. Soaks of
    different transports may run side by side (make -j3 soak-http soak-https soak-mqtt)."""
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kept = load(path)
        key = r["scenario"] if r["heap_kib"] == cap(r["scenario"]) else "%s@%dK" % (
            r["scenario"], r["heap_kib"])
        kept[key] = dict({k: v for k, v in r.items() if k != "log_tail"}, commit=_commit())
        path.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")


def load(path=RESULTS):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def print_table(kept, file=None):
    """The soaks' figures as `make bench` prints them (from the last soaks run)."""
    print("Soaks under the board heap cap (the last `make soak`, tools/bench/soak_results.json):",
          file=file)
    if not kept:
        print("  none recorded yet: run `make soak`", file=file)
        return
    print("  %-13s %5s %6s %5s %9s %9s %9s %6s %6s  %s" % (
        "scenario", "cap", "time", "MemE", "min free", "end free", "readings", "work",
        "result", "when, commit"), file=file)
    for name in sorted(kept):
        r = kept[name]
        mf = r.get("min_free")
        print("  %-13s %4dK %5.0fm %5d %8s %9s %9d %3d/%-3d %6s  %s %s%s" % (
            name, r["heap_kib"], r["seconds"] / 60, r["memory_errors"],
            "-" if mf is None else "%.1fK" % (mf / 1024),
            "-" if r.get("free_end") is None else "%.1fK" % (r["free_end"] / 1024),
            r.get("readings", 0), r["work_done"], r["work_sent"],
            "pass" if r.get("passed") else "FAIL", r.get("started", "?"), r.get("commit", "?"),
            " (.mpy)" if r.get("mpy") else ""), file=file)
    print("  pass: alive, no MemoryError, the restart ridden out, every work item but the one "
          "across it answered, 80 %% of readings stored, min free >= the %d KiB margin"
          % MARGIN_KIB, file=file)
