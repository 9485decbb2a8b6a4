"""Soaks (`make soak`, `make soak-http|soak-https|soak-mqtt`; the slow lane, outside make
test): a meter on the board interpreter under a heap cap, metering and exchanging with a
real head-end (and broker) for 30 minutes (BC_SOAK_S): readings every second, a `read`
work item every 30 s, and halfway the head-end (over MQTT the broker) restarted, so the
meter reconnects. The cap is the smallest heap the transport passed in 20 s
(bench.heap_budget, docs/performance.md), from .mpy as `make deploy` ships the firmware
(`make soak` sets BC_FIRMWARE_MPY=1), plus a margin of 16 KiB: a heap that fragments or
leaks over the run fails with MemoryError or a stuck exchange."""

import time

from lab import processes

MARGIN_KIB = 16
# measured 2026-12-06 from .mpy (BC_FIRMWARE_MPY=1 python -m bench.heap_budget steady-*)
MEASURED_KIB = {"steady-http": 148, "steady-https": 150, "steady-mqtt": 160}
WORK_EVERY_S = 30


def cap(name):
    return MEASURED_KIB[name] + MARGIN_KIB


def soak(site, name, seconds, kib=None):
    """Run one soak; returns its figures (alive, memory_errors, work sent/done, readings)."""
    kib = kib or cap(name)
    device, api, d, proc, log = site.launch(name, kib)
    out = {"scenario": name, "heap_kib": kib, "seconds": seconds, "work_sent": 0,
           "work_done": 0, "restarted": False}
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
            except AssertionError:
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
    if not out.get("alive") or out["memory_errors"]:
        out["log_tail"] = text[-1500:]      # where it failed, for the report
    return out
