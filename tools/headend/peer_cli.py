"""`backchannel peer-rule list|add|remove`: the utility's peer allow rules, through the API
(a utility token for every meter to change them)."""

import click

from . import render


def command(api):
    @click.group("peer-rule")
    def peer_rule():
        """Peer allow rules: which meters may send which ops to which (deny by default)."""

    @peer_rule.command("list")
    @api
    @render.json_option
    def listing(client):
        """Every rule: id, senders, targets, ops, who added it."""
        rows = client.get("/v1/peer-rules")
        if render.printed_as_json(rows):
            return
        if not rows:
            click.echo("no peer rules: every peer send is refused")
            return
        click.echo("%-4s  %-16s  %-16s  %-28s  %s" % ("ID", "FROM", "TO", "OPS", "BY"))
        for r in rows:
            click.echo("%-4d  %-16s  %-16s  %-28s  %s" % (
                r["id"], r["from"], r["to"], ",".join(r["ops"]), r["by"]))

    @peer_rule.command("add")
    @api
    @click.option("--from", "src", required=True, help="the sending meters: a group, or *")
    @click.option("--to", "dst", required=True, help="the target meters: a group, or *")
    @click.option("--op", "ops", multiple=True, required=True,
                  help="an op the senders may send (read, get_events, set_presence); "
                       "repeatable")
    def add(client, src, dst, ops):
        """Allow meters of group --from to send --op to meters of group --to."""
        r = client.post("/v1/peer-rules", {"from": src, "to": dst, "ops": list(ops)})
        click.echo("peer rule %d: %s -> %s: %s" % (r["id"], r["from"], r["to"],
                                                   ",".join(r["ops"])))

    @peer_rule.command("remove")
    @api
    @click.argument("rule_id", type=click.IntRange(1, 2 ** 62))
    def remove(client, rule_id):
        """Remove rule RULE_ID (sends it allowed are refused from then on)."""
        r = client.delete("/v1/peer-rules/%d" % rule_id)
        click.echo("removed peer rule %d: %s -> %s: %s" % (r["id"], r["from"], r["to"],
                                                           ",".join(r["ops"])))

    return peer_rule
