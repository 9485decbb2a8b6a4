"""`backchannel group ...`: groups of meters and group commands through the API."""

from urllib.parse import quote

import click

from . import render
from .client import CliError, parse_args


def command(api):
    @click.group()
    def group():
        """Groups of meters and group commands."""


    @group.command("create")
    @api
    @click.argument("name")
    @click.argument("members", nargs=-1, required=True)
    def group_create(client, name, members):
        """Create group NAME with MEMBERS."""
        g = client.post("/v1/groups", {"name": name, "members": list(members)})
        click.echo("%s: %s" % (g["name"], " ".join(g["members"])))


    @group.command("list")
    @api
    @render.json_option
    def group_list(client):
        """List groups with their members."""
        render.groups(client.get("/v1/groups"))


    @group.command("add-member")
    @api
    @click.argument("name")
    @click.argument("members", nargs=-1, required=True)
    def group_add_member(client, name, members):
        """Add MEMBERS to group NAME."""
        g = client.post("/v1/groups/%s/members" % name, {"members": list(members)})
        click.echo("%s: %s" % (g["name"], " ".join(g["members"])))


    @group.command("remove-member")
    @api
    @click.argument("name")
    @click.argument("members", nargs=-1, required=True)
    def group_remove_member(client, name, members):
        """Remove MEMBERS from group NAME (its commands keep their outcomes)."""
        g = client.get("/v1/groups/%s" % quote(name, safe=""))
        absent = sorted(set(members) - set(g["members"]))
        if absent:      # before removing any: all or none
            raise CliError("not in group %s: %s" % (name, ", ".join(absent)))
        for member in sorted(set(members)):
            g = client.delete("/v1/groups/%s/members/%s" % (quote(name, safe=""),
                                                             quote(member, safe="")))
        click.echo("%s: %s" % (g["name"], " ".join(g["members"]) or "(no members)"))


    @group.command("delete")
    @api
    @click.argument("name")
    def group_delete(client, name):
        """Delete group NAME and its command history (refused while a command is open)."""
        g = client.delete("/v1/groups/%s" % name)
        click.echo("deleted group %s (%d members)" % (g["name"], len(g["members"])))


    @group.command("send")
    @api
    @click.argument("name")
    @click.argument("op")
    @click.argument("args_json", required=False)
    @click.option("--when-available", is_flag=True,
                  help="hold each item until its meter is available")
    @click.option("--deadline", type=click.IntRange(1, 30 * 86400),
                  help="seconds from now after which undelivered items expire")
    @click.option("--expires-in", type=click.IntRange(1, 30 * 86400), default=3600,
                  show_default=True)
    def group_send(client, name, op, args_json, when_available, deadline, expires_in):
        """Send OP to every member of NAME; print the command id (GID)."""
        body = {"op": op, "args": parse_args(args_json), "when_available": when_available,
                "expires_in": deadline or expires_in}
        click.echo(client.post("/v1/groups/%s/work" % name, body)["gid"])


    @group.command("status")
    @api
    @click.argument("name")
    @click.argument("gid", type=int)
    @render.json_option
    def group_status(client, name, gid):
        """Outcome per member of group command GID."""
        render.group_status(client.get("/v1/groups/%s/work/%d" % (name, gid)))

    return group
