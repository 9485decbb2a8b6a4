"""`backchannel readings` and `backchannel events`: a meter's newest records in columns,
or (--format csv|json, --since, --until) an export of a time range through the API."""

import datetime
import re
import sys
import time

import click

from . import render
from .client import CliError

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])\Z")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text, now=None):
    """Unix seconds from `1765000000`, an ISO 8601 date/time (local time unless it has an
    offset or Z), or an age such as `15m`, `2h`, `7d` (that long before now)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = _AGO.match(text)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        d = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("%r: expected unix seconds, an ISO date/time or an age "
                                 "like 2h" % text) from None
    return d.timestamp()


class TimeParam(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        return parse_time(value)


def listing(what, title_of, show):
    """The click callback body shared by `readings` and `events`."""
    def run(client, meter, limit, since, until, fmt, output):
        if since is not None and until is not None and until < since:
            raise CliError("--until is before --since")
        params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        if fmt:
            path = "/v1/devices/%s/%s/export" % (meter, what)
            out = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
            try:
                client.stream(path, out, format=fmt, **params)
            finally:
                if output:
                    out.close()
            return
        if output:
            raise CliError("--output goes with --format")
        if params:      # a range: the export's records, newest `limit` of them first
            items = client.get("/v1/devices/%s/%s/export" % (meter, what), format="json",
                               **params)[::-1][:limit]
        else:
            items = client.get("/v1/devices/%s/%s" % (meter, what), limit=limit)
        show(title_of(meter), items)
    return run


def options(fn):
    for opt in reversed([
            click.argument("meter"),
            click.option("--limit", type=click.IntRange(1, 10000), default=20,
                         show_default=True, help="rows in the table"),
            click.option("--since", type=TimeParam(),
                         help="from (unix seconds, ISO date/time, or an age like 2h)"),
            click.option("--until", type=TimeParam(), help="until, exclusive (same forms)"),
            click.option("--format", "fmt", type=click.Choice(["csv", "json"]),
                         help="export every record in the range instead of a table"),
            click.option("--output", "-o", type=click.Path(dir_okay=False),
                         help="write the export to this file (default: stdout)"),
            render.json_option]):
        fn = opt(fn)
    return fn


def commands(api):
    """The click commands, given cli.api (adds --url/--token/--cacert, passes a Client)."""
    readings = listing("readings", lambda m: "readings of %s" % m, render.readings)
    events = listing("events", lambda m: "events and notices of %s" % m, render.events)
    readings.__doc__ = "The newest readings of METER (t, V, I, P, PF, f, kWh), or an export."
    events.__doc__ = ("The newest events and notices of METER (kind, start, duration, residual, "
                      "IEEE 1159 category), or an export.")
    return [click.command("readings")(api(options(readings))),
            click.command("events")(api(options(events)))]
