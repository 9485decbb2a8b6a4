"""`backchannel update GROUP --version V`: send a published release to every meter of a
group as work op `update` (held for each meter until it is available), then follow the
meters' progress until each has installed, rolled back, rejected, or its work ended."""

import time

import click
from rich.progress import BarColumn, Progress, TextColumn

from . import releases, render
from .client import CliError

WORK_FINAL = ("rejected", "unknown_op", "expired", "cancelled")   # the update never started
STATE_FINAL = ("installed", "rolled_back", "rejected")
BAR_ROWS = 20             # meters with their own progress bar; more show only the total


def command(api):
    """The click command, given cli.api (adds --url/--token/--cacert, passes a Client)."""
    return click.command("update")(api(update))


@click.argument("group")
@click.option("--version", "version", required=True, help="a published release")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="follow the meters' progress until each is finished")
@click.option("--timeout", type=float,
              help="seconds to follow (default: --expires-in plus 15 minutes)")
@click.option("--expires-in", type=click.IntRange(1, 30 * 86400), default=3600,
              show_default=True, help="seconds the work waits for a meter to be available")
@click.option("--interval", type=click.FloatRange(0.05, 60), default=1.0, show_default=True,
              help="seconds between progress polls")
def update(client, group, version, wait, timeout, expires_in, interval):
    """Update every meter of GROUP to release VERSION (signed and published). Exits 1
    unless every meter installed it."""
    if not releases.VERSION.fullmatch(version):
        raise CliError("bad version %r: expected MAJOR.MINOR.PATCH" % version)
    release = client.get("/v1/releases/%s" % version)
    args = {"manifest": release["manifest"], "sig": release["sig"]}
    cmd = client.post("/v1/groups/%s/work" % group, {
        "op": "update", "args": args, "when_available": True, "expires_in": expires_in})
    click.echo("update %s -> group %s: command %d, %d meter(s)"
               % (version, group, cmd["gid"], len(cmd["work"])))
    if not wait:
        return
    end = time.monotonic() + (timeout if timeout is not None else expires_in + 900)
    rows = follow(client, group, cmd["gid"], version, sorted(cmd["work"]), end, interval)
    render.update_outcomes(version, rows)
    failed = sorted(m for m, r in rows.items() if r["outcome"] != "installed")
    if failed:
        unfinished = [m for m in failed if not rows[m]["final"]]
        raise CliError("%d of %d meter(s) did not install %s%s: %s" % (
            len(failed), len(rows), version, " (timed out)" if unfinished else "",
            ", ".join("%s %s" % (m, rows[m]["outcome"]) for m in failed)))


def follow(client, group, gid, version, members, end, interval):
    """Poll the group command and GET /v1/updates until every member is finished or `end`
    (monotonic) passes; a progress bar on a terminal, a line per change otherwise."""
    console = render.console
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed:>3.0f}/{task.total:.0f}"),
                        console=console, transient=True, disable=not console.is_terminal)
    seen = {}
    with progress:
        total = progress.add_task("meters finished", total=len(members))
        bars = {m: progress.add_task(m, total=100) for m in members[:BAR_ROWS]}
        while True:
            rows = snapshot(client, group, gid, version)
            for m in members:
                row = rows[m]
                label = row["outcome"] + (" %d%%" % row["percent"] if row["percent"]
                                          is not None and row["outcome"] == "downloading" else "")
                if m in bars:
                    progress.update(bars[m], description="%s %s" % (m, label),
                                    completed=_percent(row))
                if not console.is_terminal and seen.get(m) != label:
                    console.print("%s: %s" % (m, label), highlight=False)
                seen[m] = label
            done = sum(rows[m]["final"] for m in members)
            progress.update(total, completed=done)
            if done == len(members) or time.monotonic() > end:
                return rows
            time.sleep(interval)


def snapshot(client, group, gid, version):
    """{member: {work, outcome, final, percent, reason, at}}: the meter's latest update
    report received since the command was created, else its work's status."""
    status = client.get("/v1/groups/%s/work/%d" % (group, gid))
    reports = {u["device"]: u for u in client.get("/v1/updates", version=version)
               if u["at"] >= status["created"]}
    rows = {}
    for member, work in status["outcomes"].items():
        report = reports.get(member)
        if report is not None:      # the meter took the update on: its reports tell the rest
            rows[member] = {"work": work["work"], "outcome": report["state"],
                            "final": report["state"] in STATE_FINAL,
                            "percent": report["percent"], "reason": report["reason"],
                            "at": report["at"]}
        else:
            rows[member] = {"work": work["work"], "outcome": work["status"],
                            "final": work["status"] in WORK_FINAL, "percent": None,
                            "reason": work["reason"], "at": None}
    return rows


def _percent(row):
    if row["outcome"] == "downloading":
        return row["percent"] or 0
    return 100 if row["outcome"] in ("verified", "installing", "installed") else 0
