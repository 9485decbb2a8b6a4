"""`backchannel billing ...`: time-of-use tariffs and billing snapshots through the API
(docs/billing.md). `compile` runs here, without a head-end, to show what a meter gets."""

import json
import sys
import time

import click

from . import render, tariff
from .client import CliError
from .records_cli import TimeParam


def _load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise CliError("%s: %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise CliError("%s is not JSON: %s" % (path, e)) from None


def command(api):
    @click.group()
    def billing():
        """Time-of-use tariffs, billing freezes and snapshots."""

    @billing.command("compile")
    @click.argument("tariff_file")
    @click.option("--start", type=TimeParam(), help="from (default now)")
    @click.option("--days", type=click.IntRange(1, tariff.MAX_DAYS), default=tariff.DEFAULT_DAYS,
                  show_default=True)
    def compile_(tariff_file, start, days):
        """Print the UTC switch times a meter would get for TARIFF_FILE (local time)."""
        start = int(start if start is not None else time.time())
        try:
            args = tariff.compile_tariff(_load(tariff_file), start, days)
        except tariff.TariffError as e:
            raise CliError("tariff refused: %s" % e) from None
        click.echo(json.dumps(args))

    @billing.command("tariff")
    @api
    @click.argument("meter")
    @click.argument("tariff_file")
    @click.option("--start", type=TimeParam(), help="from (default now)")
    @click.option("--days", type=click.IntRange(1, tariff.MAX_DAYS), default=tariff.DEFAULT_DAYS,
                  show_default=True, help="days of switch times sent (send again before "
                  "they end)")
    def set_tariff(client, meter, tariff_file, start, days):
        """Set METER's tariff from TARIFF_FILE (utility token); print the work id."""
        body = {"tariff": _load(tariff_file), "days": days}
        if start is not None:
            body["start"] = int(start)
        work = client.post("/v1/devices/%s/tariff" % meter, body)
        if not render.printed_as_json(work):
            click.echo(work["id"])

    @billing.command("freeze")
    @api
    @click.argument("meter")
    def freeze(client, meter):
        """Freeze METER's billing registers now (utility token); print the work id."""
        work = client.post("/v1/devices/%s/work" % meter, {"op": "freeze", "args": {}})
        click.echo(work["id"])

    @billing.command("export")
    @api
    @click.argument("meter")
    @click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
                  show_default=True)
    @click.option("--since", type=TimeParam())
    @click.option("--until", type=TimeParam())
    @click.option("--out", "output", metavar="FILE", help="write here instead of stdout")
    def export(client, meter, fmt, since, until, output):
        """METER's billing snapshots (one per freeze) as CSV or JSON."""
        params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            client.stream("/v1/devices/%s/billing/export" % meter, out, format=fmt, **params)
        finally:
            if output:
                out.close()

    return billing
