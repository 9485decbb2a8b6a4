"""Per-configuration metering cost (`make bench`, after the interpreters table; issue 14):
1p2w, 3p4w, 3p3w and one voltage with five circuits, THD off and on, and with IEC 61000-4-7
harmonic groups and subgroups (not 3P3W, whose line voltages are as any other), on each interpreter
(bench/poly_mp.py). Per configuration: ns per frame (one sample of every channel), its CPU
share at 50 Hz x 64 samples per cycle on this core and as estimated for a board, the heap the
meter holds and the heap allocated per cycle.

The board budget (docs/performance.md, "Hot path on the three interpreters"): an ESP32 or
RP2040 runs MicroPython one to two orders of magnitude slower than this x86 core, so a
configuration's board share is estimated as 10 to 100 times its share here, and must stay
well below 100 % to leave time for the network, JSON and the collector; a plain ESP32 gives
the app about 100 KB of heap, of which the App's metering needs 107-110 KiB today."""

import json
import subprocess

from lab import runner

SCRIPT = runner.ROOT / "tools" / "bench" / "poly_mp.py"
FRAMES_PER_S = 50 * 64
BOARD_SLOWER = (10, 100)
HEAP_BUDGET = 100 * 1000


def measure(seconds=2):
    out = {}
    for interpreter in runner.INTERPRETERS:
        if not runner.available(interpreter):
            out[interpreter] = None
            continue
        cmd, env = runner.command(interpreter, SCRIPT, seconds)
        p = subprocess.run(cmd, capture_output=True, env=env, cwd=runner.ROOT, timeout=900)
        if p.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s" % (interpreter, p.returncode,
                                                        p.stderr.decode()))
        out[interpreter] = json.loads(p.stdout.decode().strip().splitlines()[-1])["rows"]
    return out


def share(ns):
    """Fraction of one core spent metering FRAMES_PER_S frames a second."""
    return ns * FRAMES_PER_S / 1e9


def rows(result):
    out = []
    board = result.get("board") or result.get("micropython") or []
    for r in board:
        s = share(r["ns_per_frame"])
        out.append({"config": r["config"], "thd": r["thd"], "channels": r["channels"],
                    "groups": r.get("groups", False),
                    "ns": r["ns_per_frame"], "share_pct": 100 * s,
                    "board_pct": [100 * s * k for k in BOARD_SLOWER],
                    "held_b": r["held_b"], "heap_b_per_cycle": r["heap_b_per_cycle"],
                    "within": s * BOARD_SLOWER[1] < 1 and r["heap_b_per_cycle"] == 0})
    return out


def print_table(result):
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Metering by configuration, board interpreter, 50 Hz x 64 spc",
              caption="board share: 10-100x this core's (docs/performance.md); "
                      "heap held by the meter against about %d KB free on a plain ESP32"
                      % (HEAP_BUDGET // 1000))
    for col in ("configuration", "THD", "ch", "ns/frame", "this core", "board (est.)",
                "heap held", "heap/cycle", "fits"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for r in rows(result):
        t.add_row(r["config"], "groups" if r["groups"] else "on" if r["thd"] else "off",
                  str(r["channels"]),
                  "%.0f" % r["ns"], "%.2f%%" % r["share_pct"],
                  "%.1f-%.0f%%" % tuple(r["board_pct"]),
                  "n/a" if r["held_b"] is None else "%.1f KB" % (r["held_b"] / 1000),
                  "n/a" if r["heap_b_per_cycle"] is None else "%g B" % r["heap_b_per_cycle"],
                  "yes" if r["within"] else "no")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(t)


if __name__ == "__main__":
    res = measure()
    print_table(res)
