"""The meter's side of an exchange: store outbox items once per (device, epoch, seq), apply
each new one (results, presence, sends), note `done`, and compute the ack of the request's
epoch. A meter whose flash was wiped starts a new outbox epoch at seq 1: its items are new,
nothing of the old epoch is touched, and the new epoch is recorded as a notice."""

import logging

from . import escalation, fleet_presence, outcomes, routing, updates, workq
from .db import dumps

log = logging.getLogger("backchannel.ingest")

def ingest(hub, device, req, now):
    """Store and apply req.items and req.done for device; returns the new ack."""
    db = hub.db
    epoch = req.epoch
    ack = switch_epoch(db, device, epoch, now)
    for item in req.items:
        cur = db.run("INSERT INTO items(device, epoch, seq, kind, body, received) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", device, epoch, item.seq,
                     item.kind, dumps(item.body), now)
        if cur.rowcount == 1:
            apply(hub, device, item.kind, item.body, now)
    workq.mark_executed(db, device, req.done)
    fleet_presence.contact(hub, device, now)
    return advance_ack(db, device, epoch, [item.seq for item in req.items], ack)


def switch_epoch(db, device, epoch, now):
    """The device's ack follows the epoch of its latest request. An epoch never seen before,
    after another, is a new outbox life (flash wiped, board swapped): recorded as a notice
    (seq 0 of the new epoch). Returns the device's ack before this request (None after a
    switch)."""
    row = db.one("SELECT epoch, ack FROM devices WHERE id = ?", device)
    if row["epoch"] == epoch:
        return row["ack"]
    db.write("UPDATE devices SET epoch = ?, ack = NULL WHERE id = ?", epoch, device)
    if row["epoch"] is None or db.one("SELECT 1 FROM items WHERE device = ? AND epoch = ? "
                                      "LIMIT 1", device, epoch):
        return None     # its first epoch, or an older request of an epoch already seen
    note = {"what": "new outbox epoch", "count": 1, "epoch": epoch, "previous": row["epoch"]}
    db.run("INSERT INTO items(device, epoch, seq, kind, body, received) "
           "VALUES (?, ?, 0, 'notice', ?, ?)", device, epoch, dumps(note), now)
    log.warning("%s: new outbox epoch %s (was %s): its flash was wiped or replaced",
                device, epoch, row["epoch"])
    return None


def apply(hub, device, kind, body, now):
    if kind == "result":
        ok = outcomes.on_result(hub, device, body, now)
    elif kind == "presence":
        ok = fleet_presence.stated(hub, device, body, now)
    elif kind == "send":
        ok = routing.handle_send(hub, device, body) is not None
    elif kind == "update":
        ok = updates.on_item(hub, device, body, now)
    elif kind in escalation.ALARM_ITEMS:
        escalation.on_item(hub, device, kind, body, now)
        ok = True
    else:
        ok = True      # readings, events, notices and unknown kinds are only stored
    if not ok:
        log.warning("%s: %s item had no effect: %s", device, kind, dumps(body)[:200])


def advance_ack(db, device, epoch, seqs, ack):
    """Highest contiguous seq stored, from the device's stored `ack` (switch_epoch's). A
    request carries the meter's oldest unacked items, so a seq missing below its first item
    will never come (the meter skipped or dropped it): counting resumes from there. A gap
    among the items holds the ack back."""
    stored = ack
    if seqs:
        ack = max(ack if ack is not None else -1, min(seqs) - 1)
    elif ack is None:
        return 0
    while True:
        rows = db.all("SELECT seq FROM items WHERE device = ? AND epoch = ? AND seq > ? "
                      "ORDER BY seq LIMIT 500", device, epoch, ack)
        for row in rows:
            if row["seq"] != ack + 1:
                break
            ack += 1
        else:
            if len(rows) == 500:
                continue
        break
    if ack != stored:
        db.write("UPDATE devices SET ack = ? WHERE id = ?", ack, device)
    return ack
