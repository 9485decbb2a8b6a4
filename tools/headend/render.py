"""Rich tables for the CLI."""

import json
import time

from rich.console import Console
from rich.table import Table

console = Console()


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
    t = Table(title="work %s" % w["id"], show_header=False)
    t.add_column("field")
    t.add_column("value")
    for key in ("device", "op", "status", "role", "from", "group", "deliveries", "reason"):
        t.add_row(key, "-" if w.get(key) is None else str(w[key]))
    t.add_row("args", compact(w["args"]))
    for key in ("created", "expires", "delivered_at", "finished_at"):
        t.add_row(key, when(w.get(key)))
    t.add_row("result", "-" if w.get("result") is None else compact(w["result"], 400))
    console.print(t)


def records(title, items):
    table(title, ["seq", "kind", "received", "body"],
          [(r["seq"], r["kind"], when(r["received"]), compact(r["body"], 100)) for r in items])


def presence(items):
    table("presence", ["device", "state", "note", "since", "last contact"],
          [(p["device"], p["state"], p["note"], when(p["since"]), when(p["last_contact"]))
           for p in items])


def presence_history(device, items):
    table("presence of %s" % device, ["at", "state", "note", "source"],
          [(when(p["at"]), p["state"], p["note"], p["source"]) for p in items])


def group_status(s):
    counts = ", ".join("%s %d" % kv for kv in sorted(s["counts"].items()))
    table("group %s command %s: %s (%s)" % (s["group"], s["gid"], s["op"], counts),
          ["device", "work", "status", "reason", "result"],
          [(d, o["work"], o["status"], o["reason"],
            None if o["result"] is None else compact(o["result"], 60))
           for d, o in sorted(s["outcomes"].items())])


def update_outcomes(version, rows):
    table("update %s" % version, ["meter", "work", "outcome", "reason", "at"],
          [(m, r["work"], r["outcome"], r["reason"], when(r["at"]))
           for m, r in sorted(rows.items())])
