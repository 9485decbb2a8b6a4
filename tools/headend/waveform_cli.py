"""`backchannel waveform METER [EVENT] --out NAME`: a meter's waveform captures, and one
written as COMTRADE 2013 (NAME.cfg + NAME.dat) that tools/replay reads."""

from urllib.parse import quote

import click

from . import render, waveforms
from .client import CliError


def command(api):
    @click.command("waveform")
    @api
    @click.argument("meter")
    @click.argument("event", required=False)
    @click.option("--out", "name", metavar="NAME", help="write NAME.cfg and NAME.dat")
    @render.json_option
    def waveform(client, meter, event, name):
        """List METER's captures, or write EVENT's (its start, as listed) as COMTRADE."""
        if event is None:
            caps = client.get("/v1/devices/%s/waveforms" % quote(meter, safe=""))
            if render.printed_as_json(caps):
                return
            for c in caps:
                click.echo("%s  %-12s %d/%d chunks  %s samples"
                           % (c["event"], c["kind"], c["have"], c["chunks"], c["samples"]))
            return
        if not name:
            raise CliError("--out NAME is needed to write a capture (NAME.cfg, NAME.dat)")
        cap = client.get("/v1/devices/%s/waveforms/%s" % (quote(meter, safe=""),
                                                          quote(event, safe="")))
        cfg, dat = waveforms.comtrade(meter, cap)
        base = name[:-4] if name.lower().endswith(".cfg") else name
        try:
            with open(base + ".cfg", "w", encoding="ascii", newline="") as f:
                f.write(cfg)
            with open(base + ".dat", "wb") as f:
                f.write(dat)
        except OSError as e:
            raise CliError("%s: %s" % (e.filename, e.strerror)) from None
        click.echo("%s.cfg, %s.dat: %d samples at %g Hz" % (base, base, cap["samples"],
                                                          cap["rate"][0] / cap["rate"][1]))

    return waveform
