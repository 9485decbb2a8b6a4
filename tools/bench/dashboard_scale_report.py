"""The dashboard-at-scale bench's table (tools/bench/dashboard_scale.py)."""

FLEET_TARGET_S = 1.0
ADDED_TARGET_PCT = 10.0


def ms(x):
    return "n/a" if x is None else "%.1f ms" % (x * 1000) if x < 1 else "%.2f s" % x


def rows(r):
    """measure, value, baseline, target, met (True / False / None = reference)."""
    p99s = lambda v: ", ".join("%.0f" % (x["p99"] * 1000) for x in r[v])  # noqa: E731
    return [
        ("Fleet page /ui/, %d meters, first render" % r["n"], ms(r["fleet_first_s"]),
         "%d rows of %d, %d kB" % (r["fleet_rows"], r["n"], r["fleet_body_bytes"] // 1000),
         "diagnostic", None),
        ("Fleet page /ui/, %d meters, median of %d" % (r["n"], len(r["fleet_runs"])),
         ms(r["fleet_s"]), "%s /v1/health" % ms(r["health_s"]),
         "< %.0f s" % FLEET_TARGET_S, r["fleet_s"] < FLEET_TARGET_S),
        ("  same page filtered to %d meters" % r["fleet_small_rows"], ms(r["fleet_small_s"]),
         "last page %s" % ms(r["fleet_last_page_s"]), "reference", None),
        ("Exchange p99, no streams", ms(r["p99_without_s"]),
         "runs: %s ms" % p99s("without"), "reference", None),
        ("Exchange p99, %d SSE streams open" % r["streams"], ms(r["p99_with_s"]),
         "runs: %s ms" % p99s("with"), "reference", None),
        ("  added by the streams", "%+.1f %%" % r["added_pct"],
         "%d errors" % r["errors"], "< %.0f %%" % ADDED_TARGET_PCT,
         r["added_pct"] < ADDED_TARGET_PCT),
        ("Head-end CPU during the runs, no streams", "%.1f %% of a core" % r["cpu_without_pct"],
         "%.1f %% with streams" % r["cpu_with_pct"], "diagnostic", None),
        ("  head-end waiting for a CPU (machine load)", "%.0f %% of the time"
         % r["runq_wait_pct"], "-", "diagnostic", None),
        ("SSE latency p50, reading stored -> event", ms(r["sse_p50_s"]),
         "%d events of %d" % (r["sse_n"], r["events"]), "reference", None),
        ("SSE latency p99", ms(r["sse_p99_s"]), "max %s" % ms(r["sse_max_s"]),
         "reference", None),
    ]


def print_table(report):
    from rich.console import Console
    from rich.table import Table
    m, r = report["machine"], report
    table = Table(title="backchannel dashboard at scale (loopback, one head-end process)",
                  caption="%d meters (set-up %.0f s, %d readings and a presence each); "
                          "exchanges: %d meters, %.0f/s, wait 0, %d x %.0f s runs each way, "
                          "interleaved, figure = median of the runs' p99; load average %.1f "
                          "before, %.1f after; %s, nproc %s, %s; commit %s; %.0f s"
                  % (r["n"], r["setup_s"], r["readings_per_meter"], r["load_meters"], r["rate"],
                     r["runs"], r["seconds"], r["load_before"][0], r["load_after"][0],
                     m["date"], m["nproc"], m["cpu"], m["commit"], r["runtime_s"]))
    for name, justify in (("measure", "left"), ("value", "right"), ("baseline", "right"),
                          ("target", "right"), ("met?", "center")):
        table.add_column(name, justify=justify)
    for measure, value, baseline, target, met in rows(r):
        table.add_row(measure, value, baseline, target,
                      "-" if met is None else "[green]yes[/]" if met else "[red]NO[/]")
    console = Console()
    if not console.is_terminal:  # piped or under make: do not squeeze to 80 columns
        console = Console(width=120)
    console.print(table)
    missed = [x[0].strip() for x in rows(r) if x[4] is False]
    console.print("[yellow]Targets missed:[/] " + "; ".join(missed) if missed
                  else "[green]Dashboard targets met.[/]")
