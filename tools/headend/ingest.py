"""The meter's side of an exchange: store outbox items once per (device, seq), apply each
new one (results, presence, sends), note `done`, and compute the ack."""

import logging

from . import fleet_presence, outcomes, routing, updates, workq
from .db import dumps

log = logging.getLogger("backchannel.ingest")

def ingest(hub, device, req, now):
    """Store and apply req.items and req.done for device; returns the new ack."""
    db = hub.db
    for item in req.items:
        cur = db.run("INSERT OR IGNORE INTO items(device, seq, kind, body, received) "
                     "VALUES (?, ?, ?, ?, ?)", device, item.seq, item.kind, dumps(item.body), now)
        if cur.rowcount == 1:
            apply(hub, device, item.kind, item.body, now)
    workq.mark_executed(db, device, req.done)
    fleet_presence.contact(hub, device, now)
    return advance_ack(db, device, [item.seq for item in req.items])


def apply(hub, device, kind, body, now):
    if kind == "result":
        ok = outcomes.on_result(hub, device, body, now)
    elif kind == "presence":
        ok = fleet_presence.stated(hub, device, body, now)
    elif kind == "send":
        ok = routing.handle_send(hub, device, body) is not None
    elif kind == "update":
        ok = updates.on_item(hub, device, body, now)
    else:
        ok = True      # readings, events, notices and unknown kinds are only stored
    if not ok:
        log.warning("%s: %s item had no effect: %s", device, kind, dumps(body)[:200])


def advance_ack(db, device, seqs):
    """Highest contiguous seq stored. A request carries the meter's oldest unacked items, so
    a seq missing below its first item will never come (the meter skipped or dropped it):
    counting resumes from there. A gap among the items holds the ack back."""
    ack = db.one("SELECT ack FROM devices WHERE id = ?", device)["ack"]
    if seqs:
        ack = max(ack if ack is not None else -1, min(seqs) - 1)
    elif ack is None:
        return 0
    while True:
        rows = db.all("SELECT seq FROM items WHERE device = ? AND seq > ? ORDER BY seq LIMIT 500",
                      device, ack)
        for row in rows:
            if row["seq"] != ack + 1:
                break
            ack += 1
        else:
            if len(rows) == 500:
                continue
        break
    db.run("UPDATE devices SET ack = ? WHERE id = ?", ack, device)
    return ack
