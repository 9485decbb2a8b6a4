"""Readings and events of one meter as CSV or JSON, for spreadsheets and time-series tools.

CSV has a fixed column per known field (numbers written with repr(), so they read back
exactly) and an `extra` column holding, as JSON, every field that has no column or whose
value does not fit it (a null `f`, a string where a number belongs). An empty cell means
the field was absent. parse_csv() reads a file back into the stored records: the export
round-trips.

The time range selects on the meter's own clock (`t` + `t_ms`/1000 of a reading,
`start_s` + `start_ms`/1000 of an event: exact to the ms, docs/protocol.md), falling back
to when the head-end received the item (notices carry no time)."""

import csv
import io
import json
import math
import re

from . import retention
from .db import loads

READING_KINDS = ("reading",)
EVENT_KINDS = ("event", "event_start", "notice")
NUM, TEXT = "num", "text"
READING_FIELDS = [("type", TEXT)] + [(n, NUM) for n in (
    "t", "t_ms", "vrms", "irms", "p", "q", "s", "pf", "f", "import_wh", "export_wh", "import_varh",
    "export_varh", "demand_w", "vmin", "vmax", "imin", "imax", "pmin", "pmax")]
EVENT_FIELDS = [("type", TEXT), ("kind", TEXT), ("start_s", NUM), ("start_ms", NUM),
                ("duration_ms", NUM),
                ("residual_v", NUM), ("extreme_pct", NUM), ("category", TEXT), ("what", TEXT)]
FIELDS = {"readings": (READING_KINDS, READING_FIELDS), "events": (EVENT_KINDS, EVENT_FIELDS)}
HEAD = ["seq", "item", "received"]
CHUNK = 500
_INT = re.compile(r"-?\d+\Z")
# the meter's time of an item, read from the stored body by each store's JSON functions
# (SQLite's json_extract; on PostgreSQL bc_json(), schema.py); a body it cannot read, e.g.
# one holding NaN, counts at its received time
def _exact(key, ms_key):
    # whole seconds plus the ms when they are an int 0..999 (as meter_time.record_time)
    return ("json_extract(body, '$.%s') + CASE WHEN json_type(body, '$.%s') = 'integer' "
            "AND json_extract(body, '$.%s') BETWEEN 0 AND 999 THEN json_extract(body, '$.%s') "
            "/ 1000.0 ELSE 0 END" % (key, ms_key, ms_key, ms_key))


def _exact_pg(key, ms_key):
    number = "CASE WHEN jsonb_typeof(j->'%s') = 'number' THEN (j->>'%s')::float8 END"
    return ("%s + CASE WHEN (j->>'%s') ~ '^[0-9]{1,3}$' THEN (j->>'%s')::float8 / 1000.0 "
            "ELSE 0 END" % (number % (key, key), ms_key, ms_key))


_WHEN = {
    "sqlite": "(CASE WHEN json_valid(body) THEN COALESCE(%s, %s, received) ELSE received END)"
    % (_exact("t", "t_ms"), _exact("start_s", "start_ms")),
    "postgresql": "(SELECT COALESCE(%s, %s, received) FROM (SELECT bc_json(body) AS j) AS b)"
    % (_exact_pg("t", "t_ms"), _exact_pg("start_s", "start_ms")),
}


def columns(what):
    return HEAD + [name for name, _ in FIELDS[what][1]] + ["extra"]


def rows(db, device, what, since=None, until=None, chunk=CHUNK):
    """The stored items of `what` ("readings" or "events") in seq order, as
    {"seq", "kind", "received", "body"}; read `chunk` at a time (an export of a year of
    readings is never held in memory). Readings downsampled by retention come first, as
    their aggregates (retention.records: kind reading_15m or reading_1d, by bucket start)."""
    if what == "readings":
        yield from retention.records(db, device, since, until, chunk)
    kinds = FIELDS[what][0]
    where = ["device = ?", "kind IN (%s)" % ",".join("?" * len(kinds)), "rowid > ?"]
    args = [device, *kinds]
    tail = []
    when = _WHEN[db.dialect.name]
    if since is not None:
        where.append("%s >= ?" % when)
        tail.append(since)
    if until is not None:
        where.append("%s < ?" % when)
        tail.append(until)
    # in storage order: a meter's seq restarts with each outbox epoch (docs/protocol.md)
    sql = ("SELECT rowid, seq, kind, received, body FROM items WHERE %s ORDER BY rowid LIMIT ?"
           % " AND ".join(where))
    last = -1
    while True:
        batch = db.all(sql, *args, last, *tail, chunk)
        for r in batch:
            yield {"seq": r["seq"], "kind": r["kind"], "received": r["received"],
                   "body": loads(r["body"])}
        if len(batch) < chunk:
            return
        last = batch[-1]["rowid"]


def _num(v):
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fits(v, kind):
    return _num(v) if kind == NUM else isinstance(v, str) and v != ""


def csv_row(what, record):
    """One record as CSV cells (strings), in columns(what) order."""
    body = record["body"]
    cells = [str(record["seq"]), record["kind"], repr(float(record["received"]))]
    extra = {}
    for name, kind in FIELDS[what][1]:
        v = body.get(name)
        if name not in body:
            cells.append("")
        elif _fits(v, kind):
            cells.append(repr(v) if kind == NUM else v)
        else:
            cells.append("")
            extra[name] = v
    known = {name for name, _ in FIELDS[what][1]}
    extra.update((k, v) for k, v in body.items() if k not in known)
    cells.append(json.dumps(extra, separators=(",", ":"), ensure_ascii=False) if extra else "")
    return cells


def csv_text(rows_):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    for cells in rows_:
        w.writerow(cells)
    return out.getvalue()


def stream_csv(what, records):
    """CSV text in pieces: the header, then one piece per batch of records."""
    yield csv_text([columns(what)])
    batch = []
    for r in records:
        batch.append(csv_row(what, r))
        if len(batch) >= CHUNK:
            yield csv_text(batch)
            batch = []
    if batch:
        yield csv_text(batch)


def stream_json(records):
    """A JSON array, one record per line."""
    first = True
    for r in records:
        yield ("[\n" if first else ",\n") + json.dumps(r, separators=(",", ":"),
                                                     ensure_ascii=False)
        first = False
    yield "[]\n" if first else "\n]\n"


def _read_num(text):
    return int(text) if _INT.match(text) else float(text)


def parse_csv(what, text):
    """Records back from an export (the inverse of csv_row); a wrong header is an error."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != columns(what):
        raise ValueError("not a %s export: header %r" % (what, header))
    out = []
    for cells in reader:
        body = {}
        for (name, kind), cell in zip(FIELDS[what][1], cells[3:-1]):
            if cell != "":
                body[name] = _read_num(cell) if kind == NUM else cell
        if cells[-1]:
            body.update(json.loads(cells[-1]))
        out.append({"seq": int(cells[0]), "kind": cells[1], "received": float(cells[2]),
                     "body": body})
    return out
