#!/usr/bin/env python3
"""`make sim`: run the firmware on the MicroPython unix port with the simulated board and
show live readings and power-quality events until Ctrl-C."""

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def micropython_command(script, *args):
    binary = Path(sys.executable).parent / "micropython"
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT / "boards"))
    return [str(binary), str(script), *args], env


def _fmt(value, digits):
    return "-" if value is None else "%.*f" % (digits, value)


def reading_table(r):
    t = Table(title="meter at t = %.1f s" % r["t"], min_width=60)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("min / max (200 ms)", justify="right")
    rows = [
        ("Vrms (V)", r["vrms"], 2, r.get("vmin"), r.get("vmax")),
        ("Irms (A)", r["irms"], 3, r.get("imin"), r.get("imax")),
        ("P (W)", r["p"], 1, r.get("pmin"), r.get("pmax")),
        ("Q (var)", r["q"], 1, None, None),
        ("S (VA)", r["s"], 1, None, None),
        ("PF", r["pf"], 3, None, None),
        ("f (Hz)", r["f"], 3, None, None),
    ]
    for name, value, digits, low, high in rows:
        span = "" if low is None else "%s / %s" % (_fmt(low, digits), _fmt(high, digits))
        t.add_row(name, _fmt(value, digits), span)
    for key in ("import_wh", "export_wh", "import_varh", "export_varh"):
        t.add_row(key.replace("_", " "), "%.3f" % r[key], "")
    t.add_row("15-min demand (W)", _fmt(r.get("demand_w"), 1), "")
    return t


def events_table(events):
    t = Table(title="power-quality events (IEC 61000-4-30)", min_width=60)
    for col in ("kind", "start (s)", "duration (ms)", "residual/max (V)", "% declared", "IEEE 1159"):
        t.add_column(col)
    for e in events:
        if e["type"] == "event_start":
            t.add_row(e["kind"], "%.3f" % e["start_s"], "in progress", "", "", "")
        else:
            t.add_row(e["kind"], "%.3f" % e["start_s"], "%.0f" % e["duration_ms"],
                      "%.1f" % e["residual_v"], "%.1f" % e["extreme_pct"], e["category"])
    return t


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False), default=str(ROOT / "scenarios/normal.json"))
@click.option("--seconds", type=float, default=None, help="Stop after this much signal.")
def main(scenario, seconds):
    """Run SCENARIO (a JSON file in scenarios/) in real time."""
    if not Path(scenario).is_file():
        raise click.UsageError("no such scenario file: %s (see scenarios/)" % scenario)
    try:
        json.loads(Path(scenario).read_text())
    except ValueError as exc:
        raise click.UsageError("scenario %s is not valid JSON: %s" % (scenario, exc))
    args = [scenario, "--realtime"] + (["--seconds", str(seconds)] if seconds else [])
    cmd, env = micropython_command(ROOT / "boards/sim_main.py", *args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    events = deque(maxlen=8)
    last = None
    live = sys.stdout.isatty()
    try:
        with Live(auto_refresh=False, transient=False) if live else _NoLive() as screen:
            for line in proc.stdout:
                record = json.loads(line)
                if not live:
                    print(line, end="", flush=True)
                    continue
                if record["type"] == "reading":
                    last = record
                elif record["type"] == "event":
                    pending = [e for e in events if e["type"] == "event_start"]
                    for e in pending:
                        events.remove(e)
                    events.append(record)
                elif record["type"] == "event_start":
                    events.append(record)
                parts = ([reading_table(last)] if last else []) + [events_table(events)]
                screen.update(Group(*parts), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        proc.terminate()
        proc.wait()
    if proc.returncode not in (0, -15):
        raise click.ClickException("the simulated meter stopped with code %s" % proc.returncode)


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
