"""`backchannel nats-config` and `backchannel nats`: the NATS cluster with its MQTT gateway
(nats_config.py, nats_cluster.py; docs/scaling.md "A NATS cluster")."""

import os
import signal

import click

from .client import CliError


def _ports(text, what):
    """A base port, or one port per node ("4222,4223,4224")."""
    if text is None:
        return None
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        raise CliError("--%s-port takes a port or one per node, e.g. 4222,4223,4224, not %r"
                       % (what, text)) from None
    if not all(0 < p < 65536 for p in values):
        raise CliError("--%s-port: ports are 1 to 65535" % what)
    return values[0] if len(values) == 1 else values


def commands(db_option, open_db):
    @click.command("nats-config")
    @db_option
    @click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
                  help="where to write node<i>.conf, users.conf and nats.json")
    @click.option("--node", "hosts", multiple=True,
                  help="a node's address (repeat per node; default three on 127.0.0.1)")
    @click.option("--client-port", help="the bridges' port (default 4222), or one per node")
    @click.option("--cluster-port", help="the routes' port (default 6222), or one per node")
    @click.option("--mqtt-port", help="the meters' MQTT port (default 1883), or one per node")
    @click.option("--http-port", help="the /healthz port (default 8222), or one per node")
    @click.option("--certfile", type=click.Path(exists=True, dir_okay=False),
                  help="TLS on the MQTT listeners (with --keyfile)")
    @click.option("--keyfile", type=click.Path(exists=True, dir_okay=False))
    @click.option("--insecure-plain", is_flag=True,
                  help="plain MQTT on non-loopback nodes: meter passwords travel in clear; "
                       "for a closed test network only")
    @click.option("--reload/--no-reload", default=True, show_default=True,
                  help="SIGHUP the directory's running nodes so they reread users.conf")
    def nats_config(db_path, directory, hosts, client_port, cluster_port, mqtt_port,
                    http_port, certfile, keyfile, insecure_plain, reload):
        """Write a NATS cluster's configs (JetStream, the MQTT gateway, one user with the
        protocol's permissions per registered meter); run it again after adding meters."""
        from . import nats_config as conf
        ports = {"client": _ports(client_port, "client"),
                 "cluster": _ports(cluster_port, "cluster"),
                 "mqtt": _ports(mqtt_port, "mqtt"), "http": _ports(http_port, "http")}
        try:
            out = conf.write(open_db(db_path), directory, hosts or ("127.0.0.1",) * 3,
                             ports, certfile, keyfile, insecure_plain=insecure_plain,
                             reload=reload)
        except (ValueError, OSError) as e:
            raise CliError(str(e)) from None
        click.echo("%s: %d meter(s), nodes %s%s" % (
            out["dir"], out["meters"], ", ".join(out["nodes"]),
            ", %d running node(s) reloaded" % len(out["reloaded"]) if out["reloaded"] else ""))
        if out["skipped"]:
            click.echo("backchannel: warning: left out (NATS refuses '.' in an MQTT topic "
                       "level): %s" % ", ".join(out["skipped"]), err=True)
        click.echo("run each node: backchannel nats --dir %s --node NAME" % out["dir"])
        click.echo("then: backchannel serve --db %s --nats-dir %s" % (db_path, out["dir"]))

    @click.command("nats")
    @click.option("--dir", "directory", required=True,
                  type=click.Path(exists=True, file_okay=False), help="a `nats-config` directory")
    @click.option("--node", "name", help="run this node in the foreground (as each machine "
                                         "of a cluster does); default: every node here")
    def run_nats(directory, name):
        """Run NATS nodes with the files of `nats-config`."""
        from . import nats_cluster, nats_config
        try:
            nodes = [n["name"] for n in nats_config.info(directory)["nodes"]]
        except ValueError as e:
            raise CliError(str(e)) from None
        if name is not None:
            if name not in nodes:
                raise CliError("no node %r in %s (%s)" % (name, directory, ", ".join(nodes)))
            try:
                argv = nats_cluster.command(directory, name)
            except nats_cluster.NatsError as e:
                raise CliError(str(e)) from None
            os.execv(argv[0], argv)
        cluster = nats_cluster.NatsCluster(directory)
        stops = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            cluster.start()
            click.echo("NATS nodes %s running (Ctrl-C stops them)" % ", ".join(nodes))
            signal.sigwait(stops)
        except nats_cluster.NatsError as e:
            raise CliError(str(e)) from None
        finally:
            cluster.stop()

    return [nats_config, run_nats]
