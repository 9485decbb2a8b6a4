"""The hot path on the three interpreters side by side (`make bench`, after the metering
table): CPython, the stock MicroPython unix port (64-bit, doubles) and the board interpreter
(32-bit, float32, its heap capped: lab/board_build.py), each running bench/metering_mp.py.
Per V/I pair: Meter.feed with the fundamental only (harmonic_order 1, THD off) and with THD
to the highest order (the default, harmonic_order 0), the plain-Python loop (the baseline),
the speed-up over it, THD's cost, and the heap per cycle."""


def rows(sides):
    """sides: {interpreter: summarize() output or None (not available)}."""
    out = []
    for name, s in sides.items():
        if s is None:
            out.append({"interpreter": name, "missing": True})
            continue
        feed, thd, plain = s["feed_hz50_ns"], s["thd_hz50_ns"], s["plain_hz50_ns"]
        out.append({"interpreter": name, "missing": False, "thd_off_ns": feed, "thd_on_ns": thd,
                    "plain_ns": plain, "speedup": plain / feed, "thd_cost": thd / feed,
                    "thd_orders": s["thd_orders"],
                    "heap_b_per_cycle": s.get("feed_heap_bytes_per_cycle"),
                    "thd_heap_b_per_cycle": s.get("thd_heap_bytes_per_cycle")})
    return out


def _heap(v):
    return "n/a" if v is None else "%g B" % v


def print_table(table_rows, caption=""):
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Hot path Meter.feed, 50 Hz x 64 spc, ns per V/I pair, per interpreter",
              caption=caption)
    for col in ("interpreter", "THD off", "THD on", "THD costs", "plain loop", "speed-up",
                "heap/cycle off, on"):
        t.add_column(col, justify="left" if col == "interpreter" else "right")
    for r in table_rows:
        if r["missing"]:
            t.add_row(r["interpreter"], "not built", "-", "-", "-", "-", "-")
            continue
        t.add_row(r["interpreter"], "%.0f ns" % r["thd_off_ns"],
                  "%.0f ns (order %d)" % (r["thd_on_ns"], r["thd_orders"]),
                  "%.1fx" % r["thd_cost"], "%.0f ns" % r["plain_ns"], "%.1fx" % r["speedup"],
                  "%s, %s" % (_heap(r["heap_b_per_cycle"]), _heap(r["thd_heap_b_per_cycle"])))
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(t)
