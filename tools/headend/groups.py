"""Groups of meters and group commands: one command, one work item per member, an outcome
per member. when_available work is held until the member is available (see workq)."""

import time

from . import devices, workq
from .db import dumps, loads


class GroupError(ValueError):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def create(db, name, members):
    members = sorted(set(members))
    with db.tx():
        if db.one("SELECT 1 FROM groups WHERE name = ?", name):
            raise GroupError(409, "group %s already exists" % name)
        unknown = [m for m in members if devices.get(db, m) is None]
        if unknown:
            raise GroupError(404, "unknown device(s): %s" % ", ".join(unknown))
        now = time.time()
        db.run("INSERT INTO groups(name, created) VALUES (?, ?)", name, now)
        for member in members:
            db.run("INSERT INTO group_members(name, device) VALUES (?, ?)", name, member)
    return get(db, name)


def get(db, name):
    row = db.one("SELECT * FROM groups WHERE name = ?", name)
    if row is None:
        return None
    members = [r["device"] for r in db.all(
        "SELECT device FROM group_members WHERE name = ? ORDER BY device", name)]
    return {"name": name, "created": row["created"], "members": members}


def all_groups(db):
    return [get(db, r["name"]) for r in db.all("SELECT name FROM groups ORDER BY name")]


def send(hub, name, op, args, expires, when_available, origin, role):
    """Queue op for every member; returns the group command view."""
    group = get(hub.db, name)
    if group is None:
        raise GroupError(404, "unknown group %s" % name)
    cur = hub.db.run("INSERT INTO group_work(name, op, args, when_available, expires, created, "
                     "origin) VALUES (?, ?, ?, ?, ?, ?, ?)", name, op, dumps(args),
                     int(when_available), expires, hub.now(), origin)
    gid = cur.lastrowid
    workq.enqueue_many(hub, group["members"], op, args, role, origin, expires,
                       when_available=when_available, gid=gid)
    work = {row["device"]: workq.wid(row["num"])
            for row in hub.db.all("SELECT num, device FROM work WHERE gid = ?", gid)}
    return {"gid": gid, "group": name, "op": op, "expires": expires, "work": work}


def status(db, name, gid):
    cmd = db.one("SELECT * FROM group_work WHERE gid = ? AND name = ?", gid, name)
    if cmd is None:
        raise GroupError(404, "no command %s in group %s" % (gid, name))
    rows = db.all("SELECT w.*, d.presence AS presence FROM work w JOIN devices d "
                  "ON d.id = w.device WHERE w.gid = ? ORDER BY w.device", gid)
    outcomes, counts = {}, {}
    for row in rows:
        state = workq.outcome(row, row["presence"])
        outcomes[row["device"]] = {"work": workq.wid(row["num"]), "status": state,
                                   "reason": row["reason"], "result": loads(row["result"])}
        counts[state] = counts.get(state, 0) + 1
    return {"gid": gid, "group": name, "op": cmd["op"], "args": loads(cmd["args"]),
            "when_available": bool(cmd["when_available"]), "expires": cmd["expires"],
            "created": cmd["created"], "outcomes": outcomes, "counts": counts}


def queued(db, gid):
    return db.all("SELECT * FROM work WHERE gid = ? AND status = 'queued'", gid)
