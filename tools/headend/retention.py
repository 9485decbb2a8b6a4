"""Retention of readings (issue 19, item 5): raw for `retention_raw_days` after they arrive,
then as 15-minute and daily aggregates (downsample.py); the 15-minute rows are kept
`retention_15m_days` (by bucket), the daily rows for good. Events, results and notices
stay raw.

Only the leader runs it (leader.py: the sweep's process, fenced like every timer write), one
batch of `retention_batch` readings per sweep tick in a transaction of its own while there
is a backlog, then every `retention_interval_s`. A pass goes device by device (at most 200
devices or one batch a tick), so a device's readings share one merge per bucket.

Reads (export.py, the CLI's ranges) show, for each stretch of time, the finest level that
holds it: the raw readings, the 15-minute rows from the daily horizon on, the daily rows
before it (`retention.daily_before`, the start of the first day whose 15-minute rows are
kept)."""

import asyncio
import logging
import time

from .db import loads
from .downsample import KIND, MAXES, MEANS, MINS, REGISTERS, downsample

DAY = 86400
log = logging.getLogger("backchannel.retention")


class Retention:
    def __init__(self, settings):
        self.raw_s = max(0.0, settings.retention_raw_days) * DAY
        self.agg_s = max(0.0, settings.retention_15m_days) * DAY
        self.batch = max(1, settings.retention_batch)
        self.interval = settings.retention_interval_s
        # the first pass a minute after start (not in every short-lived process, test or CLI)
        self.due = time.time() + min(60.0, self.interval)
        self.cursor = ""                  # the pass is past this device id
        self.folded = 0                   # readings folded by this process (metrics, logs)
        self.own = None                   # PostgreSQL: the batches' own connection

    def store(self, hub):
        """Where the batches run: the head-end's own connection on SQLite (a batch is CPU,
        about 50 us a reading, run on the event loop); on PostgreSQL a connection of its
        own, in a worker thread, so the loop is not held while the server works."""
        if hub.db.dialect.name != "postgresql":
            return hub.db
        if self.own is None:
            from .datastore import open_store
            self.own = open_store(hub.settings.db, hub.settings.db_key)
        return self.own

    async def tick(self, hub, now):
        """The leader's step, from the sweeper: one batch in its own fenced transaction."""
        if not self.raw_s or now < self.due:
            return
        if hub.db.dialect.name != "postgresql":
            self.step(hub, hub.db, now)
        else:      # connecting (the first time) and the batch, both off the event loop
            await asyncio.to_thread(lambda: self.step(hub, self.store(hub), now))

    def step(self, hub, db, now):
        # on the head-end's connection through hub.tx (its group commit, its wake-ups)
        with (hub.tx(sync=False) if db is hub.db else db.tx()):
            hub.leadership.fence(db)      # a stale leader writes nothing (NotLeader)
            n, cursor = downsample(db, now - self.raw_s, self.batch, self.cursor)
            if cursor is None:            # past the last device: the 15-minute rows' turn
                prune(db, now, self.agg_s)
        self.folded += n
        self.cursor = cursor or ""
        if cursor is None:
            self.due = now + self.interval
            if self.folded:
                log.info("retention: %d readings folded into aggregates so far", self.folded)

    def close(self):
        if self.own is not None:
            self.own.close()
            self.own = None


def prune(db, now, agg_s):
    """15-minute rows of the days before now - agg_s go (the daily rows hold them)."""
    if not agg_s:
        return
    horizon = (int(now - agg_s) // DAY) * DAY
    db.run("DELETE FROM readings_agg WHERE period = 900 AND bucket < ?", horizon)
    db.run("INSERT INTO retention(name, value) VALUES ('daily_before', ?) ON CONFLICT (name) "
           "DO UPDATE SET value = CASE WHEN excluded.value > retention.value "
           "THEN excluded.value ELSE retention.value END", horizon)


def daily_before(db):
    row = db.one("SELECT value FROM retention WHERE name = 'daily_before'")
    return row["value"] if row else None


def body(r):
    """An aggregate row as a reading-like record body: `t` the bucket's start, the means
    under the readings' own names, each register's last value under its name and its first
    as `<name>_first` (exactly as the meter sent them)."""
    out = {"type": "aggregate", "t": r["bucket"], "period_s": r["period"], "n": r["n"],
           "t_first": r["t_first"], "t_last": r["t_last"]}
    for f in MEANS:
        if r["%s_n" % f]:
            out[f] = r["%s_sum" % f] / r["%s_n" % f]
    for f in MINS + MAXES:
        if r[f] is not None:
            out[f] = r[f]
    for reg in REGISTERS:
        if r["%s_last" % reg] is not None:
            out[reg] = loads(r["%s_last" % reg])
            out["%s_first" % reg] = loads(r["%s_first" % reg])
    return out


def records(db, device, since=None, until=None, chunk=500):
    """The device's aggregates as export records ({seq 0, kind reading_15m|reading_1d,
    received = the last reading's meter time, body}), bucket start in [since, until): daily
    rows before the daily horizon, 15-minute rows from it on, in time order."""
    edge = daily_before(db)
    spans = [(86400, None, edge), (900, edge, None)] if edge is not None else [(900, None, None)]
    for period, lo, hi in spans:
        lo = lo if since is None else (since if lo is None else max(lo, since))
        hi = hi if until is None else (until if hi is None else min(hi, until))
        last = None
        while True:
            where, args = ["device = ?", "period = ?"], [device, period]
            for cond, v in (("bucket >= ?", lo), ("bucket < ?", hi), ("bucket > ?", last)):
                if v is not None:
                    where.append(cond)
                    args.append(v)
            batch = db.all("SELECT * FROM readings_agg WHERE %s ORDER BY bucket LIMIT ?"
                           % " AND ".join(where), *args, chunk)
            for r in batch:
                yield {"seq": 0, "kind": KIND[period], "received": r["t_last"], "body": body(r)}
            if len(batch) < chunk:
                break
            last = batch[-1]["bucket"]
