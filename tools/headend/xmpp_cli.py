"""`backchannel xmpp-config` and `xmpp-account`: a private Prosody for the head-end's
XMPP component (im_server.py, docs/xmpp.md)."""

import json
import secrets
from pathlib import Path

import click

from . import im_server
from .client import CliError


def parse_jid(text):
    from .xmpp_gateway import parse_jid as parse  # slixmpp's JID rules, loaded on use

    return parse(text)


def _operator(text):
    jid, sep, name = text.partition("=")
    if not sep or not name or parse_jid(jid) is None:
        raise CliError("--operator takes JID=TOKEN_NAME, e.g. alice@im.example=alice")
    return parse_jid(jid), name


@click.command("xmpp-config")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="where to write prosody.cfg.lua, its data and headend-xmpp.json")
@click.option("--domain", default="im.backchannel.test", show_default=True,
              help="the XMPP domain of operators' (and meters') accounts")
@click.option("--component", help="the head-end's component domain (default fleet.DOMAIN)")
@click.option("--certfile", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--keyfile", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="the client listeners' address (the component port stays on loopback)")
@click.option("--c2s-port", default=5222, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tls-port", default=5223, show_default=True, type=click.IntRange(1, 65535),
              help="Direct TLS (XEP-0368), for meters")
@click.option("--component-port", default=5347, show_default=True,
              type=click.IntRange(1, 65535))
@click.option("--operator", "operators", multiple=True,
              help="JID=TOKEN_NAME: this JID may chat, with that token's role (repeatable)")
def xmpp_config(directory, domain, component, certfile, keyfile, bind, c2s_port, tls_port,
                component_port, operators):
    """Write a private Prosody config and the head-end's XMPP settings
    (DIR/headend-xmpp.json, for `serve --config`). Run the server with
    `prosody -F --config DIR/prosody.cfg.lua`."""
    try:
        conf = im_server.write(directory, domain, component or "fleet." + domain, certfile,
                               keyfile, c2s_port=c2s_port, tls_port=tls_port,
                               component_port=component_port, bind=bind)
    except (OSError, im_server.ImServerError) as e:
        raise CliError(str(e)) from None
    settings = {"xmpp_component": conf["component"], "xmpp_secret": conf["secret"],
                "xmpp_domain": domain,
                "xmpp_host": "127.0.0.1", "xmpp_port": component_port,
                "xmpp_operators": dict(_operator(o) for o in operators)}
    path = Path(directory) / "headend-xmpp.json"
    path.write_text(json.dumps(settings, indent=2) + "\n")
    path.chmod(0o600)
    click.echo("wrote %s and %s" % (Path(directory) / im_server.CONF, path))
    click.echo("run: prosody -F --config %s" % (Path(directory).resolve() / im_server.CONF))


@click.command("xmpp-account")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.argument("jid")
@click.option("--password", help="default: a random one, printed")
@click.option("--meter", is_flag=True,
              help="a meter's account: print its login keys (config xmpp_scram), never the "
                   "password; the server must be running")
@click.option("--cacert", type=click.Path(exists=True, dir_okay=False),
              help="with --meter: the server's CA")
@click.option("--server", default="127.0.0.1", show_default=True,
              help="with --meter: the server's address")
def xmpp_account(directory, jid, password, meter, cacert, server):
    """Create (or reset) the account JID on the private Prosody of DIR."""
    bare = parse_jid(jid)
    if bare is None or "@" not in bare:
        raise CliError("not a JID: %r (user@domain)" % jid)
    user, domain = bare.split("@", 1)
    if meter and not cacert:
        raise CliError("--meter needs --cacert (the CA the server's certificate is from)")
    password = password or secrets.token_urlsafe(12)
    try:
        im_server.register(directory, user, domain, password)
    except im_server.ImServerError as e:
        raise CliError(str(e)) from None
    if not meter:
        click.echo(password)
        return
    from . import xmpp_meter_keys

    try:
        salt, iterations = xmpp_meter_keys.probe(server, im_server.tls_port(directory),
                                                 domain, user, cacert)
    except (OSError, im_server.ImServerError, xmpp_meter_keys.ProbeError) as e:
        raise CliError(str(e)) from None
    click.echo(xmpp_meter_keys.scram_config(password, salt, iterations))
