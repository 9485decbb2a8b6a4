"""The back-channel bench's table (tools/bench/backchannel.py)."""

LATENCY_P99_TARGET_MS = 50.0
MQTT_P99_TARGET_MS = 30.0
IDLE_BYTES_TARGET = 600
IDLE_WAIT_S = 25              # firmware poll_wait_s default: the idle meter's long-poll


def rows(rep):
    where = "lab" if rep["path"] == "firewall lab" else "loopback"
    lp, pp, idle = rep["long_poll"], rep["polling"], rep["idle"]
    mq = rep.get("mqtt", {"enabled": False})
    out = []
    if lp["n"]:
        fail = ", %d failed" % lp["failed"] if lp["failed"] else ""
        out += [
            {"measure": "Command latency p50, long-poll (%s)" % where,
             "value": "%.1f ms" % lp["p50"],
             "baseline": "n=%d reads%s" % (lp["n"], fail), "target": "-", "met": None},
            {"measure": "Command latency p99, long-poll (%s)" % where,
             "value": "%.1f ms" % lp["p99"], "baseline": "max %.1f ms" % lp["max"],
             "target": "<= %.0f ms" % LATENCY_P99_TARGET_MS,
             "met": lp["p99"] <= LATENCY_P99_TARGET_MS and not lp["failed"]},
            {"measure": "  split: to delivery + to result stored",
             "value": "p50 %.1f + %.1f ms" % (lp["to_delivery_ms"]["p50"],
                                             lp["meter_turnaround_ms"]["p50"]),
             "baseline": "p99 %.1f + %.1f ms" % (lp["to_delivery_ms"]["p99"],
                                                lp["meter_turnaround_ms"]["p99"]),
             "target": "diagnostic", "met": None},
        ]
    else:
        out.append({"measure": "Command latency, long-poll", "value": "no data",
                    "baseline": "-", "target": "<= %.0f ms" % LATENCY_P99_TARGET_MS,
                    "met": False})
    if mq.get("n"):
        fail = ", %d failed" % mq["failed"] if mq["failed"] else ""
        out += [
            {"measure": "Command latency p50, MQTT push (%s)" % where,
             "value": "%.1f ms" % mq["p50"],
             "baseline": "n=%d reads%s" % (mq["n"], fail), "target": "-", "met": None},
            {"measure": "Command latency p99, MQTT push (%s)" % where,
             "value": "%.1f ms" % mq["p99"], "baseline": "max %.1f ms" % mq["max"],
             "target": "<= %.0f ms" % MQTT_P99_TARGET_MS,
             "met": mq["p99"] <= MQTT_P99_TARGET_MS and not mq["failed"]},
            {"measure": "  split: to push + to result stored",
             "value": "p50 %.1f + %.1f ms" % (mq["to_delivery_ms"]["p50"],
                                             mq["meter_turnaround_ms"]["p50"]),
             "baseline": "p99 %.1f + %.1f ms" % (mq["to_delivery_ms"]["p99"],
                                                mq["meter_turnaround_ms"]["p99"]),
             "target": "diagnostic", "met": None},
        ]
    else:
        out.append({"measure": "Command latency, MQTT push", "value": "no data",
                    "baseline": "-" if mq.get("enabled") else "mosquitto not installed",
                    "target": "<= %.0f ms" % MQTT_P99_TARGET_MS,
                    "met": False if mq.get("enabled") else None})
    for g, label in ((pp, "%d s polling (%s)" % (pp["poll_s"], where)),):
        if not g["n"]:
            out.append({"measure": "Command latency, %s" % label, "value": "no data",
                        "baseline": "; ".join(g["errors"]) or "-", "target": "reference",
                        "met": None})
            continue
        fail = ", %d failed" % g["failed"] if g["failed"] else ""
        out += [
            {"measure": "Command latency p50, %s" % label, "value": "%.1f s" % g["p50"],
             "baseline": "expect %.1f s; n=%d%s" % (g["expect_p50"], g["n"], fail),
             "target": "reference", "met": None},
            {"measure": "Command latency p99, %s" % label, "value": "%.1f s" % g["p99"],
             "baseline": "expect %.1f s; n=%d" % (g["expect_p99"], g["n"]),
             "target": "reference", "met": None},
        ]
    if idle["exchanges"]:
        out += [
            {"measure": "Idle exchange, HTTP bytes (%s)" % where,
             "value": "%d B" % idle["median"],
             "baseline": "req %d+%d, resp %d+%d (hdr+body)" % (
                 idle["req_head"], idle["req_body"], idle["resp_head"], idle["resp_body"]),
             "target": "<= %d B" % IDLE_BYTES_TARGET,
             "met": idle["max"] <= IDLE_BYTES_TARGET},
            {"measure": "  idle traffic, one exchange per %d s" % IDLE_WAIT_S,
             "value": "%.2f MB/day" % (idle["median"] * 86400 / IDLE_WAIT_S / 1e6),
             "baseline": "n=%d idle exchanges, %d-%d B" % (idle["exchanges"], idle["min"],
                                                            idle["max"]),
             "target": "reference", "met": None},
        ]
    else:
        out.append({"measure": "Idle exchange, HTTP bytes (%s)" % where,
                     "value": "none seen", "baseline": "-",
                     "target": "<= %d B" % IDLE_BYTES_TARGET, "met": False})
    return out


def print_table(report, console=None):
    from rich.console import Console
    from rich.table import Table

    m = report["machine"]
    where = ("head-end and broker in netns `out`, meters in site `a` behind the nftables "
             "firewall" if report["path"] == "firewall lab"
             else "head-end, broker and meters on loopback")
    lp, pp = report["long_poll"], report["polling"]
    table = Table(title="backchannel back-channel benchmark, %s" % where,
                  caption="latency: the head-end's work created -> finished_at (result stored), "
                          "`read`, plain HTTP / MQTT. long-poll: firmware default config, "
                          "next=0, %d sequential after %d warm-up, 0-100 ms apart. MQTT push: "
                          "the same, to a transport=mqtt meter, after the long-poll ones (QoS 1 "
                          "both ways, no TLS). polling: poll_wait_s=0, "
                          "next=%d s, %d commands at random moments over %.0f s (expected: "
                          "uniform over the interval; a p99 of so few samples is about their "
                          "max). idle: "
                          "report_s=3600, headers + body, TCP/IP excluded. %.0f s; %s, nproc %s, "
                          "%s; commit %s"
                          % (lp.get("n", 0), lp["warmup"], pp["poll_s"], pp["commands"],
                             pp["window_s"], report["seconds"], m["date"], m["nproc"],
                             m["cpu"], m["commit"]))
    for name, justify in (("measure", "left"), ("value", "right"), ("baseline", "right"),
                          ("target", "right"), ("met?", "center")):
        table.add_column(name, justify=justify)
    for r in report["rows"]:
        met = "-" if r["met"] is None else "[green]yes[/]" if r["met"] else "[red]NO[/]"
        table.add_row(r["measure"], r["value"], r["baseline"], r["target"], met)
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)
    console.print(table)
    missed = [r["measure"].strip() for r in report["rows"] if r["met"] is False]
    if missed:
        console.print("[yellow]Targets missed:[/] " + "; ".join(missed))
    else:
        console.print("[green]All targets met.[/]")
    idle = report["idle"]
    if idle.get("request"):
        def parts(ps):
            return ", ".join("%s %d" % p for p in ps)

        console.print("Idle exchange, %d B: request: %s. Response: %s."
                      % (idle["total"], parts(idle["request_parts"]),
                         parts(idle["response_parts"])), markup=False, highlight=False)
