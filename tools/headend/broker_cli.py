"""`backchannel broker`: run mosquitto in the foreground with the files `backchannel
broker-config` wrote (headend/broker.py); `serve`'s options for the MQTT bridge."""

import os

import click

from .client import CliError


def bridge_options(fn):
    """`serve`'s options for the MQTT bridge: mosquitto (--mqtt-*) or a NATS cluster."""
    for option in reversed(_BRIDGE_OPTIONS):
        fn = option(fn)
    return fn


_BRIDGE_OPTIONS = [
    click.option("--mqtt-dir", type=click.Path(exists=True, file_okay=False),
                 help="MQTT bridge: connect as in this `broker-config` directory"),
    click.option("--mqtt-host", help="MQTT bridge: the broker's host (enables the bridge)"),
    click.option("--mqtt-port", type=click.IntRange(1, 65535),
                 help="default 1883, 8883 with TLS"),
    click.option("--mqtt-user", help="default backchannel-headend"),
    click.option("--mqtt-password", envvar="BACKCHANNEL_MQTT_PASSWORD",
                 help="[env BACKCHANNEL_MQTT_PASSWORD]"),
    click.option("--mqtt-password-file", type=click.Path(exists=True, dir_okay=False)),
    click.option("--mqtt-cafile", type=click.Path(exists=True, dir_okay=False),
                 help="TLS to the broker, verified against this CA"),
    click.option("--mqtt-tls", is_flag=True, default=None,
                 help="TLS to the broker with the system's CAs"),
    click.option("--nats-dir", type=click.Path(exists=True, file_okay=False),
                 help="MQTT over a NATS cluster: connect as in this `nats-config` directory "
                      "(every process runs a bridge; the cluster shares the meters among them)"),
    click.option("--broker", "nats_servers",
                 help="the NATS cluster's nats://host:port URLs, separated by ',' (instead "
                      "of those in --nats-dir)"),
    click.option("--nats-password-file", type=click.Path(exists=True, dir_okay=False),
                 help="the NATS bridge user's password (instead of --nats-dir's)"),
]


@click.command("broker")
@click.option("--dir", "directory", required=True, type=click.Path(exists=True,
                                                                   file_okay=False),
              help="a `broker-config` directory")
@click.option("--mosquitto", help="the mosquitto program (default: found on PATH or sbin)")
def run_broker(directory, mosquitto):
    """Run mosquitto (in the foreground) with the files of `broker-config`."""
    from . import broker
    try:
        argv = broker.command(directory, mosquitto)
    except broker.BrokerError as e:
        raise CliError(str(e)) from None
    if not os.path.isfile(argv[-1]):
        raise CliError("%s: no such file (run `backchannel broker-config` first)" % argv[-1])
    os.execv(argv[0], argv)
