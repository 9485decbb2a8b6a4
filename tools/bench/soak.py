"""Soaks (`make soak`, `make soak-http|soak-https|soak-mqtt|soak-xmpp|soak-email`; the slow
lane, outside make test): a meter on the board interpreter under the board heap cap
(CAP_KIB), metering and exchanging with a real head-end (and broker, XMPP or mail server) for
30 minutes (BC_SOAK_S): readings every second, a `read` work item every 30 s, and halfway the
head-end (over MQTT the broker) restarted, so the meter reconnects (over XMPP and email the
meter's own server is not restarted). Firmware from .mpy as `make deploy` ships it (`make
soak` sets BC_FIRMWARE_MPY=1). The cap is the free GC heap of the smallest supported board
(BOARD_HEAP_KIB, cited below and in docs/performance.md) less the margin (MARGIN_KIB). Each
`read` answer carries the meter's free heap after a collection and its low-water mark
(firmware/health.py, HeapWatch, sampled every 5 s): the soak passes only with no MemoryError
and that minimum at or above the margin. Each soak's figures (with the load average during
the run) are kept in tools/bench/soak_results.json, which `make bench` prints."""

import fcntl
import json
import os
import subprocess
import time

import httpx

from lab import processes, runner

# The board heap cap (issue 11). Supported boards: the Raspberry Pi Pico 2 W (RP2350) and an
# ESP32 with PSRAM (MicroPython's heap is then the whole SPIRAM, "typically 4MB": MicroPython
# docs, esp32 quickref, "Controlling the Python heap size"). The smaller is the Pico 2 W:
# 436 KiB of GC heap (gc.mem_free() + gc.mem_alloc() after gc.collect(), MicroPython 1.29.0,
# "Raspberry Pi Pico 2 W with RP2350"; dmccreary/clocks-and-watches,
# docs/kits/sw-gc9b72/index.md and src/kits/sw-gc9b72/01-probe.py), with 364-400 KB of it
# still free while that kit's own app runs with Wi-Fi up (its 12-main-template). On the rp2
# port the CYW43 Wi-Fi driver and lwIP keep their buffers outside the GC heap and Mbed TLS
# allocates inside it, as on the board interpreter. A plain ESP32 (~100 KB) and a Pico W
# (174 KiB with Wi-Fi connected) are not supported with a transport (docs/performance.md).
BOARD = "Pico 2 W"
BOARD_HEAP_KIB = 436
# what the model lacks (the board's Wi-Fi and socket objects, main.py, the REPL, a newer
# MicroPython's own use) and what the soak does not reach (fragmentation beyond 30 minutes):
# the cap leaves it out, and the soak's lowest free heap after a collection must stay above it
MARGIN_KIB = 36
CAP_KIB = BOARD_HEAP_KIB - MARGIN_KIB      # 400
# the smallest heap each transport passed in 20 s (bench.heap_budget steady-*, from .mpy,
# 2026-12-07 on a VM at load average 20; docs/performance.md), for comparison with the cap
MEASURED_KIB = {"steady-http": 164, "steady-https": 164, "steady-mqtt": 192}
WORK_EVERY_S = 30
RESULTS = runner.ROOT / "tools" / "bench" / "soak_results.json"


def cap(name=None):
    """The soak's heap cap (the same for every transport: the board's free heap less the
    margin)."""
    return CAP_KIB


def passed(r):
    """The soak's verdict (host_tests/test_soak.py asserts the same, clause by clause)."""
    return bool(r.get("alive") and r["memory_errors"] == 0 and r["restarted"]
                and r["work_done"] >= r["work_sent"] - 1 and r["readings"] >= r["seconds"] * 0.8
                and r.get("min_free") is not None
                and r["min_free"] >= r.get("margin_kib", MARGIN_KIB) * 1024)


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
           "mpy": runner.firmware_mpy(), "commit": _commit(),    # the tree the run began on
           "started": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    start = time.monotonic()
    loads = []
    try:
        while time.monotonic() - start < seconds and proc.poll() is None:
            loads.append(os.getloadavg()[0])
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
        if loads:   # the machine's 1-minute load average during the run (2 cores, shared)
            out["load"] = [round(min(loads), 1), round(max(loads), 1)]
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
        kept = {_key(v): v for v in load(path).values()}   # older caps keep name@NNNK
        kept[_key(r)] = dict({k: v for k, v in r.items() if k != "log_tail"},
                             commit=r.get("commit") or _commit())
        path.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")


def _key(r):
    """A soak at today's cap under its scenario's name; one at any other cap as name@NNNK."""
    if r["heap_kib"] == cap():
        return r["scenario"]
    return "%s@%dK" % (r["scenario"], r["heap_kib"])


def load(path=RESULTS):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def print_table(kept, file=None):
    """The soaks' figures as `make bench` prints them (from the last soaks run)."""
    print("Soaks under the board heap cap (the last `make soak`, tools/bench/soak_results.json):",
          file=file)
    print("  cap %d KiB = the %s's %d KiB of GC heap (MicroPython 1.29.0, cited in "
          "docs/performance.md) less a %d KiB margin" % (CAP_KIB, BOARD, BOARD_HEAP_KIB,
                                                        MARGIN_KIB), file=file)
    if not kept:
        print("  none recorded yet: run `make soak`", file=file)
        return
    print("  %-17s %5s %6s %5s %9s %9s %9s %7s %6s %9s  %s" % (
        "scenario", "cap", "time", "MemE", "min free", "end free", "readings", "work",
        "result", "load", "when, commit"), file=file)
    for name in sorted(kept, key=lambda k: (k != kept[k]["scenario"], k)):
        r = kept[name]
        mf = r.get("min_free")
        ld = r.get("load")
        print("  %-17s %4dK %5.0fm %5d %8s %9s %9d %3d/%-3d %6s %9s  %s %s%s" % (
            name, r["heap_kib"], r["seconds"] / 60, r["memory_errors"],
            "-" if mf is None else "%.1fK" % (mf / 1024),
            "-" if r.get("free_end") is None else "%.1fK" % (r["free_end"] / 1024),
            r.get("readings", 0), r["work_done"], r["work_sent"],
            "pass" if r.get("passed") else "FAIL",
            "-" if not ld else "%.0f-%.0f" % tuple(ld), r.get("started", "?"),
            r.get("commit", "?"), " (.mpy)" if r.get("mpy") else ""), file=file)
    print("  pass: alive, no MemoryError, the restart ridden out, every work item but the one "
          "across it answered, 80 %% of readings stored, min free >= the margin (%d KiB; "
          "16 KiB for the runs at older caps, name@NNNK); load: the 1-minute load average "
          "during the run (2 cores, shared)" % MARGIN_KIB, file=file)
