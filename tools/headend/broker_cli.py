"""`backchannel broker`: run mosquitto in the foreground with the files `backchannel
broker-config` wrote (headend/broker.py)."""

import os

import click

from .client import CliError


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
