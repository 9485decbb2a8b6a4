"""Rich tables for the CLI, or JSON with --json (every listing)."""

import functools
import json
import time

import click
from rich.console import Console
from rich.table import Table

from .meter_time import record_time

console = Console()
_as_json = [False]


def json_option(fn):
    """Add --json to a command: its listing is printed as JSON instead of a table."""
    @click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
    @functools.wraps(fn)
    def wrapper(*args, as_json=False, **kw):
        _as_json[0] = as_json
        try:
            return fn(*args, **kw)
        finally:
            _as_json[0] = False
    return wrapper


def printed_as_json(data):
    """With --json: print data as JSON and return True."""
    if _as_json[0]:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    return _as_json[0]


def when(t):
    if t is None:
        return "-"
    ago = time.time() - t
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return "%s (%s)" % (stamp, _ago(ago))


def _ago(seconds):
    if seconds < 0:
        return "in %ds" % -seconds
    if seconds < 120:
        return "%ds ago" % seconds
    if seconds < 7200:
        return "%dm ago" % (seconds // 60)
    return "%dh ago" % (seconds // 3600)


def compact(obj, width=80):
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def table(title, columns, rows):
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*["-" if v is None else str(v) for v in row])
    console.print(t)


def devices(items):
    if printed_as_json(items):
        return
    table("devices", ["id", "presence", "last contact", "via", "poll", "ack", "open work",
                      "firmware"],
          [(d["id"], d["presence"], when(d["last_contact"]), d.get("transport"), d["poll"],
            d["ack"], d["open_work"], firmware(d.get("firmware"))) for d in items])


def firmware(f):
    """A device's latest update report, e.g. `1.2.0 downloading 40%`."""
    if not f:
        return None
    text = "%s %s" % (f["version"], f["state"])
    if f.get("percent") is not None and f["state"] == "downloading":
        text += " %d%%" % f["percent"]
    if f.get("installed") and f["installed"] != f["version"]:
        text += " (installed %s)" % f["installed"]
    return text


def work(w):
    """A work item, then its whole result, one field a line (nested fields as a.b)."""
    if printed_as_json(w):
        return
    t = Table(title="work %s" % w["id"], show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for key in ("device", "op", "status", "role", "from", "group", "deliveries", "reason"):
        t.add_row(key, "-" if w.get(key) is None else str(w[key]))
    t.add_row("args", compact(w["args"], 400))
    for key in ("created", "expires", "delivered_at", "finished_at"):
        t.add_row(key, when(w.get(key)))
    console.print(t)
    if w.get("result") is None:
        return
    t = Table(title="result", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for key, value in flatten(w["result"]):
        t.add_row(key, value)
    console.print(t)


def flatten(obj, prefix=""):
    """[(path, text)] for every leaf of a JSON value: {"reading": {"vrms": 230.1}} gives
    ("reading.vrms", "230.1"); times (`t`, `*_unix`) also as a local date."""
    if isinstance(obj, dict) and obj:
        out = []
        for k in obj:
            out += flatten(obj[k], "%s.%s" % (prefix, k) if prefix else str(k))
        return out
    if isinstance(obj, list) and obj and any(isinstance(x, dict | list) for x in obj):
        out = []
        for i, x in enumerate(obj):
            out += flatten(x, "%s[%d]" % (prefix, i))
        return out
    return [(prefix or "value", leaf(obj, prefix))]


def leaf(v, name=""):
    if isinstance(v, float):
        text = "%.10g" % v
        last = name.rsplit(".", 1)[-1]
        if (last == "t" or last.endswith("_unix")) and v > 1e9:
            text += "  (%s)" % time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v))
        return text
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def num(v, fmt):
    return fmt % v if isinstance(v, int | float) and not isinstance(v, bool) else None


def stamp(t):
    """A time to the millisecond: a meter stamps readings and events exactly to it."""
    if not isinstance(t, int | float) or isinstance(t, bool):
        return None
    whole, ms = divmod(round(t * 1000), 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole)) + ".%03d" % ms


def meter_time(r):
    """The meter's time of a stored record (t + t_ms, start_s + start_ms), else when the
    head-end received it."""
    at = r.get("at")
    if at is None:
        at = record_time(r["body"])
    return r["received"] if at is None else at


def readings(title, items):
    """t, V, I, P, PF, f and the import register in kWh, newest first."""
    if printed_as_json(items):
        return
    rows = []
    for r in items:
        b = r["body"]
        wh = b.get("import_wh")
        rows.append((r["seq"], stamp(meter_time(r)), num(b.get("vrms"), "%.1f"),
                     num(b.get("irms"), "%.3f"), num(b.get("p"), "%.1f"),
                     num(b.get("pf"), "%.3f"), num(b.get("f"), "%.3f"),
                     num(wh / 1000.0 if num(wh, "%f") is not None else None, "%.3f")))
    table(title, ["seq", "t", "V", "I", "P (W)", "PF", "f (Hz)", "kWh"], rows)


def events(title, items):
    """kind, start, duration, residual voltage, IEEE 1159 category; notices with their
    text."""
    if printed_as_json(items):
        return
    rows = []
    for r in items:
        b = r["body"]
        kind = b.get("kind") or r["kind"]
        if r["kind"] == "event_start":
            kind = "%s (started)" % kind
        detail = b.get("what") if r["kind"] == "notice" else None
        if b.get("incomplete"):
            detail = "incomplete"
        extra = {k: v for k, v in b.items() if k not in _EVENT_SHOWN}
        if extra and detail is None:
            detail = compact(extra, 60)
        rows.append((r["seq"], kind, stamp(meter_time(r)),
                     num(b.get("duration_ms"), "%.0f ms"), num(b.get("residual_v"), "%.1f V"),
                     b.get("category"), detail))
    table(title, ["seq", "kind", "start", "duration", "residual", "category", "detail"], rows)


_EVENT_SHOWN = ("type", "kind", "start_s", "start_ms", "duration_ms", "residual_v", "extreme_pct",
                "category", "what", "incomplete")


def presence(items):
    if printed_as_json(items):
        return
    table("presence", ["device", "state", "note", "since", "last contact"],
          [(p["device"], p["state"], p["note"], when(p["since"]), when(p["last_contact"]))
           for p in items])


def presence_history(device, items):
    if printed_as_json(items):
        return
    table("presence of %s" % device, ["at", "state", "note", "source"],
          [(when(p["at"]), p["state"], p["note"], p["source"]) for p in items])


def groups(items):
    if printed_as_json(items):
        return
    table("groups", ["name", "members", "created"],
          [(g["name"], " ".join(g["members"]) or "(none)", when(g["created"])) for g in items])


def group_status(s):
    if printed_as_json(s):
        return
    counts = ", ".join("%s %d" % kv for kv in sorted(s["counts"].items()))
    table("group %s command %s: %s (%s)" % (s["group"], s["gid"], s["op"], counts),
          ["device", "work", "status", "reason", "result"],
          [(d, o["work"], o["status"], o["reason"],
            None if o["result"] is None else compact(o["result"], 60))
           for d, o in sorted(s["outcomes"].items())])


def update_outcomes(version, rows):
    if printed_as_json(rows):
        return
    table("update %s" % version, ["meter", "work", "outcome", "reason", "at"],
          [(m, r["work"], r["outcome"], r["reason"], when(r["at"]))
           for m, r in sorted(rows.items())])
