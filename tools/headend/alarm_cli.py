"""`backchannel alarms`, `alarm show|ack|drill`, `escalation`, `duty`: alarms and their
escalation through the API (escalation.py, docs/alarms.md)."""

import click

from . import render


def _alarm_line(a):
    return "%-5d %-15s %-13s %-16s %-12s %s" % (
        a["id"], a["state"], a["kind"], a["device"], a["grp"],
        ("with %s" % a["operator"]) if a["operator"] else
        ("acked by %s" % a["acked_by"]) if a["acked_by"] else "-")


def commands(api):
    @click.command("alarms")
    @api
    @click.option("--state", type=click.Choice(["open", "acked", "unacknowledged"]))
    @click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
    @render.json_option
    def alarms(client, state, limit):
        """Alarms, newest first: state, kind, meter, group, who has it now."""
        rows = client.get("/v1/alarms", limit=limit, **({"state": state} if state else {}))
        if render.printed_as_json(rows):
            return
        if not rows:
            click.echo("no alarms")
        for a in rows:
            click.echo(_alarm_line(a))

    @click.group("alarm")
    def alarm():
        """One alarm: show its steps, acknowledge it, or raise a drill."""

    @alarm.command("show")
    @api
    @click.argument("alarm_id", type=click.IntRange(1))
    @render.json_option
    def show(client, alarm_id):
        """Every step of ALARM_ID: raised, skipped, notified, timeout, repeat, acked."""
        a = client.get("/v1/alarms/%d" % alarm_id)
        if render.printed_as_json(a):
            return
        click.echo(_alarm_line(a))
        for s in a["steps"]:
            click.echo("  %s  %-14s %-10s %s" % (render.when(s["at"]), s["step"],
                                                 s["operator"] or "", s["detail"] or ""))

    @alarm.command("ack")
    @api
    @click.argument("alarm_id", type=click.IntRange(1))
    def ack(client, alarm_id):
        """Acknowledge ALARM_ID: its escalation stops."""
        a = client.post("/v1/alarms/%d/ack" % alarm_id, {"channel": "cli"})
        click.echo("alarm %d acknowledged by %s" % (a["id"], a["acked_by"]))

    @alarm.command("drill")
    @api
    @click.argument("meter")
    @click.option("--note", default="", help="shown to the operators")
    def drill(client, meter, note):
        """Raise a drill alarm for METER (utility or admin): it escalates as a real one."""
        for a in client.post("/v1/alarms", {"device": meter, "kind": "drill", "note": note}):
            click.echo(_alarm_line(a))

    @click.command("escalation")
    @api
    @click.argument("group")
    @click.option("--set", "operators", help="operators in order, comma-separated")
    @click.option("--timeout", type=click.FloatRange(10, 86400), default=120.0,
                  show_default=True, help="seconds before the next operator (with --set)")
    @click.option("--kinds", default="interruption,swell", show_default=True,
                  help="event kinds that raise an alarm (with --set)")
    @click.option("--delete", is_flag=True, help="remove GROUP's list")
    @render.json_option
    def escalation(client, group, operators, timeout, kinds, delete):
        """Show GROUP's escalation list, or set or delete it (utility or admin)."""
        if delete:
            client.delete("/v1/escalation/%s" % group)
            click.echo("escalation list of %s deleted" % group)
            return
        if operators:
            esc = client.put("/v1/escalation/%s" % group, {
                "operators": [o for o in operators.split(",") if o],
                "timeout_s": timeout, "kinds": [k for k in kinds.split(",") if k]})
        else:
            esc = client.get("/v1/escalation/%s" % group)
        if render.printed_as_json(esc):
            return
        click.echo("%s: %s (each %g s; on %s)" % (esc["group"], " -> ".join(esc["operators"]),
                                                  esc["timeout_s"], ", ".join(esc["kinds"])))

    @click.command("duty")
    @api
    @click.argument("operator")
    @click.option("--set", "windows", multiple=True,
                  help="a window in UTC, e.g. 'mon-fri 08:00-17:00' or 'always' (repeatable)")
    @click.option("--clear", is_flag=True, help="remove OPERATOR's schedule")
    def duty(client, operator, windows, clear):
        """Show OPERATOR's on-duty schedule and availability, or set or clear it."""
        if clear:
            client.delete("/v1/operators/%s/duty" % operator)
            click.echo("duty schedule of %s cleared" % operator)
            return
        if windows:
            d = client.put("/v1/operators/%s/duty" % operator, {"windows": list(windows)})
        else:
            d = client.get("/v1/operators/%s/duty" % operator)
        click.echo("%s: %s; now %s" % (operator, "; ".join(d["windows"]) or "no schedule",
                                       ("available (%s)" % d["available"]) if d["available"]
                                       else "unavailable"))

    return [alarms, alarm, escalation, duty]
