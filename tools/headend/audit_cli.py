"""`backchannel audit`: the head-end's audit log through the API, newest first."""

import time

import click

from . import render


def command(api):
    @click.command("audit")
    @api
    @click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
    @click.option("--target", help="only this target, e.g. device:meter-a or group:north")
    @click.option("--by", help="only actions by this token name (or cli:USER)")
    @render.json_option
    def audit_log(client, limit, target, by):
        """The audit log, newest first: who did what to which target, when, with what outcome
        (an admin or utility token)."""
        rows = client.get("/v1/audit", limit=limit, **{k: v for k, v in
                                                          (("target", target), ("by", by)) if v})
        if render.printed_as_json(rows):
            return
        for r in rows:
            click.echo("%s  %-14s %-8s %-14s %-22s %s%s" % (
                time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(r["at"])), r["who"], r["role"],
                r["action"], r["target"] or "-", r["outcome"],
                "  " + r["detail"] if r["detail"] else ""))

    return audit_log
