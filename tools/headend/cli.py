"""`backchannel`: run the head-end, register devices and tokens (directly on the database),
and drive the operator API (--url/--token or BACKCHANNEL_URL/BACKCHANNEL_TOKEN)."""

import functools
import os
import sqlite3
import sys
import time

import click

from . import broker_cli, render
from . import poll as poll_rule
from .client import Client, CliError, parse_args
from .log_stderr import log_to_stderr
from .settings import ROLES

FINAL = ("done", "rejected", "unknown_op", "expired", "cancelled")


class PollSeconds(click.ParamType):
    """A poll: 0 (continuous long-poll) or 5..3600 seconds (headend/poll.py)."""
    name = "SECONDS"

    def convert(self, value, param, ctx):
        try:
            seconds = int(value)
        except (TypeError, ValueError):
            self.fail("poll must be %s, not %r" % (poll_rule.RULE, value), param, ctx)
        reason = poll_rule.refusal(seconds)
        if reason:
            self.fail(reason, param, ctx)
        return seconds


def api(fn):
    """Add --url/--token/--cacert and pass a Client as the first argument."""
    @click.option("--url", envvar="BACKCHANNEL_URL", default="http://127.0.0.1:8080",
                  show_default=True, help="head-end URL [env BACKCHANNEL_URL]")
    @click.option("--token", envvar="BACKCHANNEL_TOKEN",
                  help="bearer token [env BACKCHANNEL_TOKEN]")
    @click.option("--cacert", envvar="BACKCHANNEL_CACERT", help="CA bundle for https")
    @functools.wraps(fn)
    def wrapper(url, token, cacert, **kw):
        return fn(Client(url, token, cacert), **kw)
    return wrapper


def db_option(fn):
    return click.option("--db", "db_path", envvar="BACKCHANNEL_DB", default="backchannel.db",
                        show_default=True, help="SQLite file or postgresql:// URL; on "
                        "PostgreSQL set BACKCHANNEL_DB_KEY to the device-key file "
                        "[env BACKCHANNEL_DB]")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """backchannel head-end: exchange endpoint, work queues, groups, presence."""


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS cert")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS key")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False),
              help='JSON list of {"name", "role", "token"}')
@click.option("--transform", help="rendezvous hook module:function")
@click.option("--releases", type=click.Path(file_okay=False),
              help="published releases served to meters (default: `releases` next to --db)")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="JSON file of settings (docs/headend.md)")
@click.option("--db-key", envvar="BACKCHANNEL_DB_KEY",
              help="device-key file (default: <db>.key; required with a postgresql:// --db) "
                   "[env BACKCHANNEL_DB_KEY]")
@click.option("--replay-window", type=float, help="seconds (default 300)")
@click.option("--max-wait", type=float, help="long-poll cap in seconds (default 25)")
@click.option("--default-poll", type=PollSeconds(),
              help="`next` for new devices (default 0: continuous long-poll)")
@click.option("--sweep-interval", type=float, help="background task period (default 1)")
@broker_cli.bridge_options
@click.option("--insecure-http", is_flag=True,
              help="serve plain HTTP on a non-loopback --host (tokens travel in clear): "
                   "for a closed test network only")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="head-end processes behind a private HAProxy on --host/--port "
                   "(more than 1 needs a postgresql:// --db)")
@click.option("--lb-dir", type=click.Path(file_okay=False),
              help="with --workers: HAProxy's config, log and workers.json here "
                   "(default: a temporary directory)")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(db_path, host, port, certfile, keyfile, config_path, log_level, insecure_http,
          workers, lb_dir, **opts):
    """Run the head-end (HTTP, or HTTPS with --certfile and --keyfile), with the MQTT
    bridge when --mqtt-dir or --mqtt-host is given. Plain HTTP binds loopback only, unless
    --insecure-http."""
    from . import datastore, exposure
    from . import settings as settings_mod
    if bool(certfile) != bool(keyfile):
        raise CliError("--certfile and --keyfile go together")
    if not certfile and not exposure.is_loopback(host):
        if not insecure_http:
            raise CliError("refusing plain HTTP on %s: bearer tokens and meter traffic would "
                           "travel in clear; give --certfile and --keyfile, or "
                           "--insecure-http on a closed test network" % host)
        click.echo("backchannel: warning: plain HTTP on %s (--insecure-http): bearer tokens "
                   "travel in clear" % host, err=True)
    try:
        values = settings_mod.load_config(config_path) if config_path else {}
        values["db"] = db_path
        values.update({k: v for k, v in opts.items() if v is not None})
        settings = settings_mod.Settings(**values)
        if poll_rule.refusal(settings.default_poll):      # from a --config file
            raise ValueError("default_poll: " + poll_rule.refusal(settings.default_poll))
        if settings.token_file and exposure.readable_by_others(settings.token_file):
            click.echo("backchannel: warning: %s is readable by other users: chmod 600 it"
                       % settings.token_file, err=True)
        from . import mqtt_bridge
        if mqtt_bridge.enabled(settings):
            mqtt_bridge.resolve(settings)       # missing or unreadable settings: fail now
        if workers > 1:
            from . import lb_server
            from . import workers as workers_mod
            try:
                return workers_mod.serve(settings, workers, host, port, certfile, keyfile,
                                         lb_dir, log_level, log_to_stderr)
            except lb_server.LbError as e:
                raise CliError(str(e)) from None
        from .webapp import create_app
        app = create_app(settings)
    except (sqlite3.Error, datastore.StoreUnavailable) as e:
        raise CliError("cannot open database %s: %s" % (db_path, e)) from None
    except (OSError, ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    log_to_stderr(log_level)
    from . import metrics, server
    app.state.loopback_only = metrics.loopback_only(host)    # /metrics without a token
    server.run(app, host, port, certfile, keyfile, log_level)


def _db(path):
    from . import datastore
    key = os.environ.get("BACKCHANNEL_DB_KEY") or None
    if datastore.is_postgres(path) and not key:
        raise CliError("a PostgreSQL database needs BACKCHANNEL_DB_KEY (the device-key file "
                       "the head-end uses)")
    try:
        return datastore.open_store(path, key)
    except Exception as e:
        raise CliError("cannot open database %s: %s" % (path, e)) from None


@cli.command("add-device")
@db_option
@click.argument("device_id")
@click.option("--key", help="hex HMAC key (default: 32 random bytes)")
@click.option("--poll", type=PollSeconds(), default=0, show_default=True,
              help="seconds between exchanges; 0 = continuous long-poll")
def add_device(db_path, device_id, key, poll):
    """Register a meter and print its key."""
    from . import audit, devices
    db = _db(db_path)
    try:
        key = devices.create(db, device_id, key, poll)
    except ValueError as e:
        raise CliError(str(e)) from None
    audit.cli_record(db, "add_device", "device:%s" % device_id, detail={"poll": poll})
    click.echo(key)


@cli.command("add-token")
@db_option
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="admin: registers devices; utility: also utility-only ops")
@click.option("--token", help="the token to store (default: random)")
def add_token(db_path, name, role, token):
    """Create a bearer token for the operator API and print it (`token create` also sets
    an expiry and group scopes)."""
    from . import audit, devices, tokens
    if token is not None and len(token) < 16:
        raise CliError("a token must be at least 16 characters")
    db = _db(db_path)
    try:
        made = devices.add_token(db, name, role, token)
    except ValueError as e:
        raise CliError(str(e)) from None
    audit.cli_record(db, "create_token", "token:%s" % tokens.id_of(made),
                     detail={"name": name, "role": role})
    click.echo(made)


@cli.command("broker-config")
@db_option
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="where to write mosquitto.conf, passwd, acl, bridge.json")
@click.option("--port", default=1883, show_default=True, type=click.IntRange(1, 65535),
              help="the plain listener's port")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="the plain listener's address (loopback only, see --insecure-plain)")
@click.option("--insecure-plain", is_flag=True,
              help="let the plain (no TLS) listener bind a non-loopback address: meter "
                   "passwords travel in clear; for a closed test network only")
@click.option("--tls-port", type=click.IntRange(1, 65535),
              help="a TLS listener (default 8883 when --certfile is given)")
@click.option("--tls-bind", help="the TLS listener's address (default: all)")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="CA for the TLS listener (client certificates)")
@click.option("--run-as", help="the user mosquitto runs as when started as root "
                               "(default: the current user)")
@click.option("--reload/--no-reload", default=True, show_default=True,
              help="SIGHUP the directory's running broker so it rereads passwd and acl")
def broker_config(db_path, directory, **opts):
    """Write mosquitto's config, password file and ACL for every registered meter (run it
    again after adding meters)."""
    from . import broker, exposure
    if opts["insecure_plain"] and not exposure.is_loopback(opts["bind"]):
        click.echo("backchannel: warning: the plain MQTT listener on %s carries meter "
                   "passwords in clear (--insecure-plain)" % opts["bind"], err=True)
    try:
        out = broker.write(_db(db_path), directory, **opts)
    except (ValueError, OSError, broker.BrokerError) as e:
        raise CliError(str(e)) from None
    click.echo("%s: %d meter(s), listener %s:%d%s%s" % (
        out["dir"], out["meters"], out["bind"], out["port"],
        ", TLS listener :%d" % out["tls_port"] if out["tls_port"] else "",
        ", broker %d reloaded" % out["reloaded"] if out["reloaded"] else ""))
    click.echo("run: backchannel broker --dir %s" % out["dir"])
    click.echo("then: backchannel serve --db %s --mqtt-dir %s" % (db_path, out["dir"]))


@cli.command("devices")
@api
@render.json_option
def list_devices(client):
    """List meters with presence, last contact and open work."""
    render.devices(client.get("/v1/devices"))


@cli.command()
@api
@click.argument("meter")
@click.argument("op")
@click.argument("args_json", required=False)
@click.option("--expires-in", type=click.IntRange(1, 30 * 86400), default=3600,
              show_default=True, help="seconds")
@click.option("--when-available", is_flag=True, help="hold until the meter is available")
@click.option("--wait", is_flag=True, help="wait for the outcome and print it")
@click.option("--timeout", type=click.FloatRange(0, 30 * 86400, min_open=True),
              help="seconds to wait (default: until expiry)")
@render.json_option
def send(client, meter, op, args_json, expires_in, when_available, wait, timeout):
    """Queue work OP with ARGS_JSON (a JSON object) for METER; print its id."""
    body = {"op": op, "args": parse_args(args_json), "expires_in": expires_in,
            "when_available": when_available}
    work = client.post("/v1/devices/%s/work" % meter, body)
    if not wait:
        if not render.printed_as_json(work):
            click.echo(work["id"])
        return
    end = time.monotonic() + (timeout if timeout is not None else expires_in + 5)
    while work["status"] not in FINAL:
        if time.monotonic() > end:
            raise CliError("no outcome for %s yet (status %s)" % (work["id"], work["status"]))
        time.sleep(0.5)
        work = client.get("/v1/work/%s" % work["id"])
    render.work(work)
    if work["status"] != "done":
        raise CliError("%s ended %s%s" % (work["id"], work["status"],
                                          ": %s" % work["reason"] if work["reason"] else ""))


@cli.command("poll")
@api
@click.argument("meter")
@click.argument("seconds", type=PollSeconds())
def set_poll(client, meter, seconds):
    """Set how often METER exchanges: SECONDS 0 (continuous long-poll) or 5..3600. The
    head-end owns the poll rate and sends it as every response's `next`."""
    dev = client.patch("/v1/devices/%s" % meter, {"poll": seconds})
    click.echo("%s: poll %s" % (dev["id"], dev["poll"] or "0 (continuous long-poll)"))


@cli.command("work")
@api
@click.argument("work_id")
@render.json_option
def show_work(client, work_id):
    """Show a work item and its outcome."""
    render.work(client.get("/v1/work/%s" % work_id))


@cli.command()
@api
@click.argument("work_id")
def cancel(client, work_id):
    """Cancel work that has not been delivered yet."""
    work = client.delete("/v1/work/%s" % work_id)
    click.echo("%s %s" % (work["id"], work["status"]))


@cli.command()
@api
@click.argument("meter", required=False)
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@render.json_option
def presence(client, meter, limit):
    """Presence of every meter, or the history of METER."""
    if meter:
        render.presence_history(meter, client.get("/v1/devices/%s/presence" % meter, limit=limit))
    else:
        render.presence(client.get("/v1/presence"))


from . import (  # noqa: E402
    alarm_cli,
    audit_cli,
    backup_cli,
    billing_cli,
    group_cli,
    mail_cli,
    nats_cli,
    peer_cli,
    records_cli,
    release_cli,
    rotate_cli,
    token_cli,
    update_cli,
    waveform_cli,
    xmpp_cli,
)

cli.add_command(release_cli.release)
cli.add_command(token_cli.command(db_option, _db))
cli.add_command(audit_cli.command(api))
cli.add_command(group_cli.command(api))
cli.add_command(billing_cli.command(api))
cli.add_command(peer_cli.command(api))
cli.add_command(rotate_cli.command(api))
for _command in alarm_cli.commands(api):
    cli.add_command(_command)
for _command in records_cli.commands(api):
    cli.add_command(_command)
cli.add_command(update_cli.command(api))
cli.add_command(waveform_cli.command(api))
cli.add_command(xmpp_cli.xmpp_config)
cli.add_command(xmpp_cli.xmpp_account)
cli.add_command(mail_cli.mail_config)
cli.add_command(mail_cli.mail_account)
cli.add_command(mail_cli.mail_serve)
cli.add_command(broker_cli.run_broker)
for _command in nats_cli.commands(db_option, _db):
    cli.add_command(_command)
cli.add_command(backup_cli.backup)
cli.add_command(backup_cli.restore)


def main(argv=None):
    """Entry point: click errors and API errors become one line on stderr."""
    try:
        rc = cli.main(args=argv, prog_name="backchannel", standalone_mode=False)
    except click.ClickException as e:
        click.echo("backchannel: error: %s" % e.format_message(), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("backchannel: error: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # never a traceback
        click.echo("backchannel: error: %s: %s" % (type(e).__name__, e), err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
