"""Durable per-device FIFO work queues: enqueue, what is deliverable, delivery, `done`,
final outcomes, and the views the API and the exchange return."""

import math
import re

from . import signing
from .db import dumps, loads

RESULT_STATUSES = ("done", "rejected", "unknown_op", "expired")
FINAL = RESULT_STATUSES + ("cancelled",)
PRESENT = ("available", "active", "available_off")
_WID = re.compile(r"^w-(\d{1,15})$")


def wid(num):
    return "w-%08d" % num


def num_of(work_id):
    m = _WID.match(work_id) if isinstance(work_id, str) else None
    return int(m.group(1)) if m else None


def expiry(now, seconds):
    """Unix seconds (an int) at least `seconds` from now."""
    return int(math.ceil(now + seconds))


def enqueue(hub, device, op, args, role, origin, expires, when_available=False, gid=None,
            reply_to=None, ref=None):
    num = hub.db.insert(
        "INSERT INTO work(device, op, args, role, origin, created, expires, status, "
        "when_available, gid, reply_to, ref) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
        device, op, dumps(args), role, origin, hub.now(), int(expires), int(when_available),
        gid, reply_to, None if ref is None else dumps(ref), key="num")
    hub.wake(device)
    return wid(num)


def enqueue_many(hub, devices, op, args, role, origin, expires, when_available=False,
                 gid=None):
    """The same work for every device (a group command): one executemany, one wake each."""
    text, now = dumps(args), hub.now()
    with hub.tx() as db:          # joins the caller's transaction, if any
        db.many(
            "INSERT INTO work(device, op, args, role, origin, created, expires, status, "
            "when_available, gid) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            [(d, op, text, role, origin, now, int(expires), int(when_available), gid)
             for d in devices])
        for device in devices:
            hub.wake(device)


def get(db, work_id):
    num = num_of(work_id)
    return None if num is None else db.one("SELECT * FROM work WHERE num = ?", num)


def deliverable(db, device, now):
    """Queued work (not held) and delivered work not yet executed, oldest first. The
    device's index: left to itself the planner scanned every device's open work."""
    return db.all(
        "SELECT w.* FROM work w INDEXED BY work_dev JOIN devices d ON d.id = w.device "
        "WHERE w.device = ? AND w.expires >= ? AND (" + _SENDABLE + ") ORDER BY w.num",
        device, now)


# work `w` that may go to its meter `d`: queued and not held for the meter's presence, or
# delivered and not yet executed (deliverable() and waiting() read the same rule)
_SENDABLE = ("(w.status = 'queued' AND (w.when_available = 0 OR "
             "d.presence IN ('available', 'active', 'available_off'))) OR "
             "(w.status = 'delivered' AND w.executed = 0)")


def mark_delivered(db, rows, now):
    """Mark rows delivered; returns their work sequences (docs/protocol.md "Work seq"): the
    device's next one at first delivery, the same one on every redelivery."""
    seqs = []
    for row in rows:
        seq = row["seq"]
        if seq is None:
            seq = db.one("UPDATE devices SET work_seq = work_seq + 1 WHERE id = ? "
                         "RETURNING work_seq", row["device"])["work_seq"]
        seqs.append(seq)
        db.run("UPDATE work SET status = CASE status WHEN 'queued' THEN 'delivered' "
               "ELSE status END, deliveries = deliveries + 1, delivered_at = ?, seq = ? "
               "WHERE num = ?", now, seq, row["num"])
    return seqs


def mark_executed(db, device, work_ids):
    """The meter listed these in `done`: stop redelivering them."""
    for work_id in work_ids:
        num = num_of(work_id)
        if num is not None:
            db.write("UPDATE work SET executed = 1 WHERE num = ? AND device = ?", num, device)


def finish(db, num, status, now, result=None, reason=None):
    """Set the final outcome if the work has none yet; True if this call set it."""
    cur = db.run("UPDATE work SET status = ?, result = ?, reason = ?, finished_at = ?, "
                 "executed = 1 WHERE num = ? AND status IN ('queued', 'delivered')",
                 status, None if result is None else dumps(result), reason, now, num)
    return cur.rowcount == 1


def waiting(db, device, now):
    """Work deliverable() or due() would find for `device` (to deliver or to expire), in
    one read: a long-poll's check while it waits."""
    return db.one(
        "SELECT 1 FROM work w INDEXED BY work_dev JOIN devices d ON d.id = w.device "
        "WHERE w.device = ? AND w.status IN ('queued', 'delivered') AND (w.expires < ? OR "
        + _SENDABLE + ") LIMIT 1", device, now) is not None


def due(db, now, device=None):
    """Open work past its expiry."""
    sql = "SELECT * FROM work %s WHERE status IN ('queued', 'delivered') AND expires < ?"
    if device is None:
        return db.all(sql % "", now)
    return db.all(sql % "INDEXED BY work_dev" + " AND device = ?", now, device)


def outcome(row, presence=None):
    """The status to report: `held` for queued when_available work whose meter is absent."""
    status = row["status"]
    if status == "queued" and row["when_available"] and presence not in PRESENT:
        return "held"
    return status


def view(row, presence=None):
    return {
        "id": wid(row["num"]), "device": row["device"], "op": row["op"],
        "args": loads(row["args"]), "role": row["role"], "from": row["origin"],
        "created": row["created"], "expires": row["expires"],
        "status": outcome(row, presence), "when_available": bool(row["when_available"]),
        "deliveries": row["deliveries"], "delivered_at": row["delivered_at"],
        "finished_at": row["finished_at"], "result": loads(row["result"]),
        "reason": row["reason"], "group": row["gid"],
    }


def wire(row, key, seq):
    """The work item as it goes to the meter (its device's work `seq`), with its `sig`."""
    item = {"id": wid(row["num"]), "device": row["device"], "seq": seq, "op": row["op"],
            "args": signing.canonical(loads(row["args"])),
            "role": row["role"], "from": row["origin"], "expires": int(row["expires"])}
    item["sig"] = signing.sign_work(key, item)
    return item
