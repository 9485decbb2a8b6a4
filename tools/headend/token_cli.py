"""`backchannel token create|list|revoke`: bearer tokens, directly on the database (like
`add-token`, which stays as the short form of `token create`)."""

import time

import click

from . import audit, render, tokens
from .client import CliError
from .settings import ROLES


def command(db_option, open_db):
    @click.group("token")
    def token():
        """Bearer tokens: roles, expiry, group scopes, revocation."""

    @token.command("create")
    @db_option
    @click.argument("name")
    @click.option("--role", type=click.Choice(ROLES), required=True,
                  help="admin: tokens and devices; utility: also utility-only ops")
    @click.option("--expires-in", help="lifetime: 3600, 90m, 12h, 30d, 52w (default: never)")
    @click.option("--group", "group_names", multiple=True,
                  help="confine the token to this group's meters (repeatable)")
    @click.option("--token", "value", help="the token to store (default: random)")
    def create(db_path, name, role, expires_in, group_names, value):
        """Create a token and print it (the head-end keeps only its hash)."""
        from . import groups
        try:
            seconds = tokens.parse_duration(expires_in) if expires_in else None
            db = open_db(db_path)
            for g in group_names:
                if groups.get(db, g) is None:
                    raise ValueError("unknown group %s" % g)
            made = tokens.create(db, name, role, value, expires_in=seconds,
                                 groups=list(group_names) or None)
            audit.cli_record(db, "create_token", "token:%s" % tokens.id_of(made), detail={
                    "name": name, "role": role, "expires_in": seconds,
                    "groups": list(group_names) or None})
            click.echo(made)
        except ValueError as e:
            raise CliError(str(e)) from None

    @token.command("list")
    @db_option
    @render.json_option
    def listing(db_path):
        """Every token: id, name, role, state, expiry, groups (never the token)."""
        rows = tokens.listing(open_db(db_path))
        if render.printed_as_json(rows):
            return
        click.echo("%-12s  %-16s  %-8s  %-7s  %-20s  %s" % (
            "ID", "NAME", "ROLE", "STATE", "EXPIRES", "GROUPS"))
        for t in rows:
            click.echo("%-12s  %-16s  %-8s  %-7s  %-20s  %s" % (
                t["id"], t["name"], t["role"], t["state"],
                _utc(t["expires"]) if t["expires"] else "never",
                ",".join(t["groups"]) if t["groups"] else "(all)"))

    @token.command("revoke")
    @db_option
    @click.argument("which")
    def revoke(db_path, which):
        """Revoke token WHICH (its id, or every token of that name)."""
        db = open_db(db_path)
        revoked = tokens.revoke(db, which)
        audit.cli_record(db, "revoke_token", "token:%s" % which,
                         "ok" if revoked else "no such token", {"revoked": revoked})
        if not revoked:
            raise CliError("no token %s (see `backchannel token list`)" % which)
        click.echo("revoked %s" % " ".join(revoked))

    return token


def _utc(t):
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))
