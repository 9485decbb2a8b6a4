"""`backchannel mail-config` and `mail-account`: a private dovecot + postfix for the
head-end's mail gateway (mail_server.py, docs/email.md)."""

import json
import secrets
from pathlib import Path

import click

from . import mail_commands, mail_server
from .client import CliError

SETTINGS = "headend-mail.json"


def _operator(text):
    address, sep, name = text.partition("=")
    if not sep or not name or not mail_commands.is_address(address):
        raise CliError("--operator takes ADDRESS=TOKEN_NAME, e.g. alice@mail.example=alice")
    return address.lower(), name


@click.command("mail-config")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="where to write dovecot.conf, postfix/, the mailboxes and headend-mail.json")
@click.option("--domain", default="mail.backchannel.test", show_default=True)
@click.option("--certfile", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--keyfile", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--cafile", required=True, type=click.Path(exists=True, dir_okay=False),
              help="the CA the head-end verifies the server with")
@click.option("--bind", default="127.0.0.1", show_default=True)
@click.option("--imaps-port", default=993, show_default=True, type=click.IntRange(1, 65535))
@click.option("--pop3s-port", default=995, show_default=True, type=click.IntRange(1, 65535))
@click.option("--smtps-port", default=465, show_default=True, type=click.IntRange(1, 65535))
@click.option("--lmtp-port", default=24, show_default=True, type=click.IntRange(1, 65535),
              help="dovecot's LMTP, on loopback, for postfix")
@click.option("--headend", default="headend", show_default=True,
              help="the local part of the head-end's own address")
@click.option("--operator", "operators", multiple=True,
              help="ADDRESS=TOKEN_NAME: this address may send commands with that token's "
                   "role; its secret is printed once (repeatable)")
def mail_config(directory, domain, certfile, keyfile, cafile, bind, imaps_port, pop3s_port,
                smtps_port, lmtp_port, headend, operators):
    """Write a private mail server's config, the head-end's mailbox and its settings
    (DIR/headend-mail.json, for `serve --config`). Operators' secrets are printed once;
    only their hashes are kept."""
    mapped = dict(_operator(o) for o in operators)
    address = "%s@%s" % (headend, domain)
    if not mail_commands.is_address(address):
        raise CliError("not an address: %s" % address)
    try:
        mail_server.write(directory, domain, certfile, keyfile, imaps_port=imaps_port,
                          pop3s_port=pop3s_port, smtps_port=smtps_port, lmtp_port=lmtp_port,
                          bind=bind)
        password = secrets.token_urlsafe(18)
        mail_server.add_account(directory, address, password)
    except (OSError, mail_server.MailServerError) as e:
        raise CliError(str(e)) from None
    table, shown = {}, []
    for op_address, name in mapped.items():
        secret = secrets.token_urlsafe(12)
        table[op_address] = {"token": name, "secret": mail_commands.hash_secret(secret)}
        shown.append("%s (%s): token: %s" % (op_address, name, secret))
    settings = {"mail_address": address, "mail_password": password,
                "mail_host": "127.0.0.1" if bind in ("0.0.0.0", "") else bind,
                "mail_imap_port": imaps_port, "mail_smtp_port": smtps_port,
                "mail_cafile": str(Path(cafile).resolve()), "mail_operators": table}
    path = Path(directory) / SETTINGS
    path.write_text(json.dumps(settings, indent=2) + "\n")
    path.chmod(0o600)
    click.echo("wrote %s, %s/postfix and %s" % (Path(directory) / mail_server.DOVECOT_CONF,
                                                directory, path))
    for line in shown:
        click.echo("operator secret, shown once: %s" % line)
    click.echo("run: backchannel mail-serve --dir %s   (as root)" % directory)


@click.command("mail-account")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
@click.argument("address")
@click.option("--password", help="default: a random one, printed")
def mail_account(directory, address, password):
    """Create (or reset) the mailbox ADDRESS on the private mail server of DIR."""
    if not mail_commands.is_address(address):
        raise CliError("not an address: %r (user@domain)" % address)
    password = password or secrets.token_urlsafe(12)
    try:
        mail_server.add_account(directory, address.lower(), password)
    except (OSError, mail_server.MailServerError) as e:
        raise CliError(str(e)) from None
    click.echo(password)


@click.command("mail-serve")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False))
def mail_serve(directory):
    """Run the private mail server of DIR (postfix and dovecot) until interrupted."""
    path = Path(directory) / SETTINGS
    if not path.exists():
        raise CliError("%s has no %s (run mail-config first)" % (directory, SETTINGS))
    try:
        conf = json.loads(path.read_text())
        ports = [int(conf["mail_imap_port"]), int(conf["mail_smtp_port"])]
        host = str(conf.get("mail_host") or "127.0.0.1")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CliError("%s: not a mail-config settings file (%s)" % (path, e)) from None
    reason = mail_server.missing()
    if reason:
        raise CliError(reason)
    try:
        procs = mail_server.start(directory, ports, host=host)
    except mail_server.MailServerError as e:
        raise CliError(str(e)) from None
    click.echo("mail server running (IMAPS %d, SMTPS %d); Ctrl-C stops it"
               % tuple(ports))
    try:
        procs[-1].wait()
    except KeyboardInterrupt:
        pass
    finally:
        mail_server.stop(procs)
