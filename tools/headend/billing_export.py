"""A meter's billing snapshots (kind `billing`, firmware/billing.py) as JSON or CSV.

A meter may send a snapshot twice (it offers again one it saved but may not have stored in
its outbox before a power cut): the head-end keeps the first of each id. Register values are
exact: the meter sends integer mWh and mvarh; CSV writes them as Wh and varh with three
decimals (`1234.567`), one row per rate and one `total` row per snapshot."""

import csv
import io

from .db import loads

KIND = "billing"
COLUMNS = ["id", "t", "t_ms", "at", "cause", "tariff", "rate", "import_wh", "export_wh",
           "import_varh", "export_varh", "seq", "received"]


def snapshots(db, device, since=None, until=None):
    """Stored snapshots in storage order, one per id, as {"seq", "received", "body"}; since
    and until select on the snapshot's time (the meter's clock)."""
    seen = set()
    for r in db.all("SELECT seq, received, body FROM items WHERE device = ? AND kind = ? "
                    "ORDER BY rowid", device, KIND):
        body = loads(r["body"])
        if not isinstance(body, dict) or body.get("id") in seen:
            continue
        seen.add(body.get("id"))
        t = body.get("t")
        if isinstance(t, int | float) and ((since is not None and t < since)
                                           or (until is not None and t >= until)):
            continue
        yield {"seq": r["seq"], "received": r["received"], "body": body}


def _wh(milli):
    """Exact Wh from integer mWh ('' when absent or not an int)."""
    if isinstance(milli, bool) or not isinstance(milli, int):
        return ""
    sign = "-" if milli < 0 else ""
    return "%s%d.%03d" % (sign, abs(milli) // 1000, abs(milli) % 1000)


def csv_rows(snaps):
    """CSV rows: per snapshot, one per rate (import and export Wh) then the totals."""
    for s in snaps:
        b = s["body"]
        head = [b.get("id", ""), b.get("t", ""), b.get("t_ms", ""), b.get("at", ""),
                b.get("cause", ""), b.get("tariff", "")]
        tail = [s["seq"], repr(float(s["received"]))]
        rates = b.get("rates") or []
        imp = b.get("rate_import_mwh") or []
        exp = b.get("rate_export_mwh") or []
        for k, rate in enumerate(rates):
            yield head + [rate, _wh(imp[k] if k < len(imp) else None),
                          _wh(exp[k] if k < len(exp) else None), "", ""] + tail
        yield head + ["total", _wh(b.get("import_mwh")), _wh(b.get("export_mwh")),
                      _wh(b.get("import_mvarh")), _wh(b.get("export_mvarh"))] + tail


def csv_text(snaps):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for row in csv_rows(snaps):
        w.writerow(row)
    return out.getvalue()
