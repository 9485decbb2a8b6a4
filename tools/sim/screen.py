"""What `make sim` shows: live tables on a terminal (readings, power-quality events, the
head-end's view), the meter's JSON lines as they come otherwise; and the watch over the
processes it started while it shows them."""

import json
import os
import sys
import time
from collections import deque

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table

from headend.meter_time import record_time
from sim import guard

EIO = 5


def _when(t):
    """Meter time: wall-clock time of day when it is Unix time, else seconds of signal."""
    if t is None:
        return "-"
    if t > 1e9:
        return time.strftime("%H:%M:%S", time.localtime(t)) + ("%.3f" % (t % 1))[1:]
    return "%.3f s" % t


def _fmt(value, digits):
    return "-" if value is None else "%.*f" % (digits, value)


def reading_table(r):
    t = Table(title="meter at %s" % _when(record_time(r)), min_width=60)
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
    for col in ("kind", "start", "duration (ms)", "residual/max (V)", "% declared", "IEEE 1159"):
        t.add_column(col)
    for e in events:
        if e["type"] == "event_start":
            t.add_row(e["kind"], _when(record_time(e)), "in progress", "", "", "")
        else:
            t.add_row(e["kind"], _when(record_time(e)), "%.0f" % e["duration_ms"],
                      "%.1f" % e["residual_v"], "%.1f" % e["extreme_pct"], e["category"])
    return t


class ChildDied(click.ClickException):
    """A process `make sim` started ended on its own: `make sim` stops the rest and exits 1."""


def show(proc, extra, seconds=None, children=None):
    """Show proc's JSON lines until it ends, `seconds` pass, or Ctrl-C; with `children`
    (guard.Children), a child that dies on its own ends the show with ChildDied."""
    events = deque(maxlen=8)
    last = None
    live = sys.stdout.isatty()
    started = time.monotonic()
    stopped = False
    try:
        with Live(auto_refresh=False, transient=False) if live else _NoLive() as screen:
            for line in proc.stdout:
                if seconds and time.monotonic() - started > seconds:
                    stopped = True
                    break
                _check(children)
                if live and not os.isatty(sys.stdout.fileno()):
                    stopped = True   # the terminal hung up, though no SIGHUP came (its
                    break            # session leader, e.g. make, did not pass it on)
                try:
                    record = json.loads(line)
                except ValueError:  # MicroPython prints tracebacks on stdout
                    sys.stderr.write(line)
                    continue
                if not live:
                    print(line, end="", flush=True)
                    continue
                kind = record.get("type")
                if kind == "reading":
                    last = record
                elif kind == "event":
                    for e in [e for e in events if e["type"] == "event_start"]:
                        events.remove(e)
                    events.append(record)
                elif kind == "event_start":
                    events.append(record)
                else:
                    continue
                parts = ([reading_table(last)] if last else []) + [events_table(events)]
                if extra is not None and kind == "reading":
                    parts.append(extra())
                screen.update(Group(*parts), refresh=True)
    except (KeyboardInterrupt, BrokenPipeError):
        stopped = True
    except OSError as exc:  # the terminal went away (EIO): nobody to tell
        if exc.errno != EIO:
            raise
        stopped = True
    if not stopped:          # the meter's output ended: it stopped by itself
        proc.wait()
        _check(children)
        if proc.returncode != 0:
            raise ChildDied("the meter stopped (%s); make sim stopped the rest"
                            % guard.describe_exit(proc.returncode))


def _check(children):
    dead = children.died() if children is not None else None
    if dead is not None:
        name, code, log = dead
        raise ChildDied("the %s stopped (%s); make sim stopped the rest%s" % (
            name, guard.describe_exit(code), _last_words(log)))


def _last_words(log):
    """The end of a child's log, to say why it stopped."""
    if not log:
        return ""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 2000))
            tail = f.read().decode(errors="replace").strip().splitlines()[-3:]
    except OSError:
        tail = []
    return "".join("\n  %s" % line for line in tail) + "\n(see %s)" % log


class _NoLive:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
