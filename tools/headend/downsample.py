"""Readings folded into 15-minute and daily aggregates (issue 19, item 5; retention.py runs
it). One pass takes a batch of the oldest raw readings, adds them to the aggregate rows of
their buckets and deletes them, in one transaction: a pass cut off anywhere (kill -9, a lost
database) rolls back whole, and every reading is either raw or in its aggregates, never both
and never neither.

A bucket is a UTC-aligned stretch of the meter's clock (`t` + `t_ms`, meter_time.py; the
arrival time for a reading without one). An aggregate row holds, per (device, period,
bucket):
- n, the first and last meter time;
- each energy register's first and last value, exactly as the meter reported it (kept as
  its JSON text: no float sums, no rounding), with the meter times they were read at;
- sum and count of vrms, irms, p, q, s, pf, f (their mean), min of vmin/imin/pmin and max
  of vmax/imax/pmax/demand_w.
Merging is associative (sums add, min/max, first by the earlier time, last by the later), so
readings arriving late for a bucket already aggregated (a meter back after a week offline)
are added to it with the same statement."""

import math

from .db import loads
from .meter_time import record_time

PERIODS = (900, 86400)               # 15 minutes, one day
KIND = {900: "reading_15m", 86400: "reading_1d"}
REGISTERS = ("import_wh", "export_wh", "import_varh", "export_varh")
MEANS = ("vrms", "irms", "p", "q", "s", "pf", "f")
MINS = ("vmin", "imin", "pmin")
MAXES = ("vmax", "imax", "pmax", "demand_w")
_T_LIMIT = 2.0 ** 40                 # a meter time past this (a wild clock) buckets by arrival

TABLE = """
CREATE TABLE IF NOT EXISTS readings_agg (   -- downsampled readings (downsample.py)
    device TEXT NOT NULL, period INTEGER NOT NULL, bucket INTEGER NOT NULL,
    n INTEGER NOT NULL, t_first REAL NOT NULL, t_last REAL NOT NULL,
%s
    PRIMARY KEY (device, period, bucket)
);
CREATE TABLE IF NOT EXISTS retention (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS items_reading_age ON items(device, received) WHERE kind = 'reading';
""" % "\n".join(
    ["    %s_first TEXT, %s_first_t REAL, %s_last TEXT, %s_last_t REAL," % ((r,) * 4)
     for r in REGISTERS]
    + ["    %s_sum REAL, %s_n INTEGER NOT NULL DEFAULT 0," % (f, f) for f in MEANS]
    + ["    %s REAL," % f for f in MINS + MAXES])


def _columns():
    cols = ["device", "period", "bucket", "n", "t_first", "t_last"]
    for r in REGISTERS:
        cols += ["%s_first" % r, "%s_first_t" % r, "%s_last" % r, "%s_last_t" % r]
    for f in MEANS:
        cols += ["%s_sum" % f, "%s_n" % f]
    return cols + list(MINS + MAXES)


COLUMNS = _columns()


def _pick(cond, col):
    return "CASE WHEN %s THEN excluded.%s ELSE readings_agg.%s END" % (cond, col, col)


def _least(col, op):
    # min/max ignoring NULLs, written once for both stores (SQLite's min(a, b) is NULL with
    # a NULL; PostgreSQL's LEAST ignores it)
    return ("CASE WHEN readings_agg.{c} IS NULL THEN excluded.{c} WHEN excluded.{c} IS NULL "
            "THEN readings_agg.{c} WHEN excluded.{c} {op} readings_agg.{c} THEN excluded.{c} "
            "ELSE readings_agg.{c} END").format(c=col, op=op)


def _merge_sql():
    sets = ["n = readings_agg.n + excluded.n",
            "t_first = " + _least("t_first", "<"), "t_last = " + _least("t_last", ">=")]
    for r in REGISTERS:
        earlier = ("readings_agg.{r}_first_t IS NULL OR (excluded.{r}_first_t IS NOT NULL AND "
                   "excluded.{r}_first_t < readings_agg.{r}_first_t)").format(r=r)
        later = ("readings_agg.{r}_last_t IS NULL OR (excluded.{r}_last_t IS NOT NULL AND "
                 "excluded.{r}_last_t >= readings_agg.{r}_last_t)").format(r=r)
        sets += ["%s_first = %s" % (r, _pick(earlier, r + "_first")),
                 "%s_first_t = %s" % (r, _pick(earlier, r + "_first_t")),
                 "%s_last = %s" % (r, _pick(later, r + "_last")),
                 "%s_last_t = %s" % (r, _pick(later, r + "_last_t"))]
    for f in MEANS:
        sets += ["{f}_sum = CASE WHEN excluded.{f}_n = 0 THEN readings_agg.{f}_sum WHEN "
                 "readings_agg.{f}_n = 0 THEN excluded.{f}_sum ELSE readings_agg.{f}_sum + "
                 "excluded.{f}_sum END".format(f=f),
                 "{f}_n = readings_agg.{f}_n + excluded.{f}_n".format(f=f)]
    sets += ["%s = %s" % (f, _least(f, "<")) for f in MINS]
    sets += ["%s = %s" % (f, _least(f, ">")) for f in MAXES]
    return ("INSERT INTO readings_agg(%s) VALUES (%s) ON CONFLICT (device, period, bucket) "
            "DO UPDATE SET %s" % (", ".join(COLUMNS), ", ".join("?" * len(COLUMNS)),
                                  ", ".join(sets)))


MERGE = _merge_sql()


_INF = float("inf")


def _number(v):
    # JSON gives exact types: an int, or a finite float (a bool is neither)
    return type(v) is int or (type(v) is float and -_INF < v < _INF)


def reading_time(body, received):
    t = record_time(body)
    if t is None or not math.isfinite(t) or abs(t) >= _T_LIMIT:
        return received
    return t


class Partial:
    """One bucket's aggregate from readings taken in arrival order."""

    def __init__(self, device, period, bucket):
        self.key = (device, period, bucket)
        self.n = 0
        self.t_first, self.t_last = _INF, -_INF
        self.regs = {r: [None, _INF, None, -_INF] for r in REGISTERS}  # first, t, last, t
        self.sums = {f: [0.0, 0] for f in MEANS}
        self.ext = dict.fromkeys(MINS + MAXES)

    def add(self, t, body):
        self.n += 1
        if t < self.t_first:
            self.t_first = t
        if t >= self.t_last:
            self.t_last = t
        get = body.get
        for r, reg in self.regs.items():
            v = get(r)
            if v is None or not _number(v):
                continue
            if t < reg[1]:
                reg[0], reg[1] = v, t
            if t >= reg[3]:
                reg[2], reg[3] = v, t
        for f, acc in self.sums.items():
            v = get(f)
            if v is not None and _number(v):
                acc[0] += v
                acc[1] += 1
        ext = self.ext
        for f in MINS:
            v = get(f)
            if v is not None and _number(v) and (ext[f] is None or v < ext[f]):
                ext[f] = v
        for f in MAXES:
            v = get(f)
            if v is not None and _number(v) and (ext[f] is None or v > ext[f]):
                ext[f] = v

    def row(self):
        out = [*self.key, self.n, self.t_first, self.t_last]
        for r in REGISTERS:
            first, t_first, last, t_last = self.regs[r]
            if first is None:
                out += [None, None, None, None]
            else:        # the meter's value as its JSON text: exact, whatever its type
                out += [repr(first), t_first, repr(last), t_last]   # = json.dumps
        for f in MEANS:
            s, n = self.sums[f]
            out += [s if n else None, n]
        return tuple(out + [self.ext[f] for f in MINS + MAXES])


def fold(rows):
    """Aggregate rows (MERGE's parameters) of raw reading rows {device, body, received}."""
    parts = {}
    for r in rows:
        body = loads(r["body"])
        body = body if isinstance(body, dict) else {}
        t = reading_time(body, r["received"])
        for period in PERIODS:
            key = (r["device"], period, int(t // period) * period)
            part = parts.get(key)
            if part is None:
                part = parts[key] = Partial(*key)
            part.add(t, body)
    return [p.row() for p in parts.values()]


# a device's readings received before the cutoff, and only those its ack covers (or of an
# epoch it left): a reading above a held-back ack may still be sent again, and must still be
# there to be recognised as a duplicate
DUE = ("SELECT i.device, i.epoch, i.seq, i.body, i.received FROM items i "
       "JOIN devices d ON d.id = i.device WHERE i.device = ? AND i.kind = 'reading' "
       "AND i.received < ? AND (i.epoch IS DISTINCT FROM d.epoch OR i.seq <= d.ack) "
       "ORDER BY i.received LIMIT ?")


def downsample(db, cutoff, limit, after="", devices=200):
    """One batch, in the caller's transaction: folds up to `limit` readings received before
    `cutoff` into their aggregates and deletes them, device by device (a device's readings
    share their buckets: one merge for many readings) from the first device id after
    `after`, looking at `devices` devices at most. Returns (readings taken, where to go on:
    a device id, or None once past the last device)."""
    rows = []
    ids = [r["id"] for r in db.all("SELECT id FROM devices WHERE id > ? ORDER BY id LIMIT ?",
                                   after, devices)]
    nxt = None if len(ids) < devices else ids[-1]
    prev = after
    for dev in ids:
        rows += db.all(DUE, dev, cutoff, limit - len(rows))
        if len(rows) >= limit:
            nxt = prev              # it may have more: from it again next time
            break
        prev = dev
    if rows:
        db.many(MERGE, fold(rows))
        db.many("DELETE FROM items WHERE device = ? AND epoch = ? AND seq = ?",
                [(r["device"], r["epoch"], r["seq"]) for r in rows])
    return len(rows), nxt
