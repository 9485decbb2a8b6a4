"""The scale bench's table (tools/bench/scale.py)."""

GROUP_TARGET_S = 10.0
P99_TARGET_S = 1.0
RSS_TARGET = 1 << 30
TARGET_N = 10000


def fmt_s(x):
    if x is None or x != x:
        return "n/a"
    return "%.0f ms" % (x * 1000) if x < 1 else "%.1f s" % x


def print_table(report):
    from rich.console import Console
    from rich.table import Table
    m = report["machine"]
    table = Table(title="backchannel head-end at scale (loopback, one head-end process)",
                  caption="head-end and load generator share %s cores (%s); readings every "
                          "%.0f s per meter; %s; commit %s; runtime %.0f s"
                  % (m["nproc"], m["cpu"], report["report_s"], m["date"], m["commit"],
                     report["runtime_s"]))
    for name in ("meters", "head-end RSS", "head-end CPU", "cmd p50", "cmd p99",
                 "group to all", "exchanges/s", "errors", "loadgen / other CPU",
                 "head-end CPU wait"):
        table.add_column(name, justify="right")
    for r in report["runs"]:
        g = r["group_s"]
        group = fmt_s(g) if g is not None else "%d of %d by timeout" % (
            r["group_final"], r["n"])
        table.add_row("%d" % r["n"], "%.0f MiB" % (r["rss_peak"] / 2**20),
                      "%.0f%% (group %.0f%%)" % (r["cpu_pct"], r["group_cpu_pct"]),
                      fmt_s(r["p50_s"]), fmt_s(r["p99_s"]), group,
                      "%.0f of %.0f" % (r["exchanges_s"], r["expected_s"]),
                      str(sum(r["loadgen_errors"].values()) + r["commands_missing"]),
                      "%s / %s" % tuple("%.0f%%" % r[k] if k in r else "n/a"
                                        for k in ("loadgen_cpu_pct", "other_cpu_pct")),
                      "%.0f%%" % r["runq_wait_pct"] if "runq_wait_pct" in r else "n/a")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(table)
    console.print("store alone (exchange core, no HTTP, %s in flight): %.0f exchanges/s, "
                  "%s fsyncs, %.0f bytes of SQLite per exchange with one reading"
                  % (report.get("store_concurrency", 1), report["store_exchanges_s"],
                     report.get("store_fsyncs", "n/a"), report["store_bytes_per_exchange"]))
    big = [r for r in report["runs"] if r["n"] == TARGET_N]
    if big:
        r = big[0]
        checks = [("p99 < 1 s", r["p99_s"] < P99_TARGET_S),
                  ("group < 10 s", r["group_s"] is not None and r["group_s"] < GROUP_TARGET_S),
                  ("RSS < 1 GiB", r["rss_peak"] < RSS_TARGET)]
        console.print("targets at %d meters: %s" % (TARGET_N, "; ".join(
            "%s %s" % (name, "[green]met[/]" if ok else "[red]MISSED[/]")
            for name, ok in checks)))
