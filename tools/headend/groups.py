"""Groups of meters and group commands: one command, one work item per member, an outcome
per member. when_available work is held until the member is available (see workq)."""

import time

from . import workq
from .db import dumps, loads


class GroupError(ValueError):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# members checked per statement: well under SQLite's limit on bound parameters
KNOWN_CHUNK = 500


def _known(db, members):
    """Every member a known device, in one query per KNOWN_CHUNK members: a group of 10,000
    took 20,000 round trips on PostgreSQL (a lookup and an insert per member), seconds of
    the event loop, long enough for the proxy to mark the process down."""
    members = list(members)
    found = set()
    for i in range(0, len(members), KNOWN_CHUNK):
        part = members[i:i + KNOWN_CHUNK]
        found.update(r["id"] for r in db.all(
            "SELECT id FROM devices WHERE id IN (%s)" % ",".join("?" * len(part)), *part))
    unknown = [m for m in members if m not in found]
    if unknown:
        raise GroupError(404, "unknown device(s): %s" % ", ".join(unknown))


def _existing(db, name):
    group = get(db, name)
    if group is None:
        raise GroupError(404, "unknown group %s" % name)
    return group


def create(db, name, members):
    members = sorted(set(members))
    with db.tx():
        if db.one("SELECT 1 FROM groups WHERE name = ?", name):
            raise GroupError(409, "group %s already exists" % name)
        _known(db, members)
        now = time.time()
        db.run("INSERT INTO groups(name, created) VALUES (?, ?)", name, now)
        db.many("INSERT INTO group_members(name, device) VALUES (?, ?)",
                [(name, member) for member in members])
    return get(db, name)


def get(db, name):
    row = db.one("SELECT * FROM groups WHERE name = ?", name)
    if row is None:
        return None
    members = [r["device"] for r in db.all(
        "SELECT device FROM group_members WHERE name = ? ORDER BY device", name)]
    return {"name": name, "created": row["created"], "members": members}


def add_members(db, name, members):
    """Add members (already members are fine); returns the group."""
    with db.tx():
        _existing(db, name)
        _known(db, sorted(set(members)))
        db.many("INSERT INTO group_members(name, device) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(name, member) for member in sorted(set(members))])
    return get(db, name)


def remove_members(db, name, members):
    """Remove members; each must be one. Commands already sent keep their outcomes."""
    with db.tx():
        group = _existing(db, name)
        absent = sorted(set(members) - set(group["members"]))
        if absent:
            raise GroupError(404, "not in group %s: %s" % (name, ", ".join(absent)))
        for member in set(members):
            db.run("DELETE FROM group_members WHERE name = ? AND device = ?", name, member)
    return get(db, name)


def delete(db, name):
    """Delete a group, its members and its command history (each member's work stays in its
    own history). Refused (409) while one of its commands still has open work: cancel it
    (DELETE /v1/groups/{name}/work/{gid}) or let it end first."""
    with db.tx():
        group = _existing(db, name)
        busy = db.all("SELECT DISTINCT w.gid AS gid FROM work w JOIN group_work g ON "
                      "g.gid = w.gid WHERE g.name = ? AND w.status IN ('queued', "
                      "'delivered') ORDER BY w.gid", name)
        if busy:
            raise GroupError(409, "group %s has open commands (%s): cancel them or let them "
                             "end first" % (name, ", ".join(str(r["gid"]) for r in busy)))
        db.run("UPDATE work SET gid = NULL WHERE gid IN "
               "(SELECT gid FROM group_work WHERE name = ?)", name)
        db.run("DELETE FROM group_work WHERE name = ?", name)
        db.run("DELETE FROM group_members WHERE name = ?", name)
        db.run("DELETE FROM groups WHERE name = ?", name)
    return group


def all_groups(db):
    return [get(db, r["name"]) for r in db.all("SELECT name FROM groups ORDER BY name")]


def send(hub, name, op, args, expires, when_available, origin, role):
    """Queue op for every member; returns the group command view."""
    group = _existing(hub.db, name)
    if not group["members"]:
        raise GroupError(409, "group %s has no members" % name)
    gid = hub.db.insert("INSERT INTO group_work(name, op, args, when_available, expires, "
                        "created, origin) VALUES (?, ?, ?, ?, ?, ?, ?)", name, op, dumps(args),
                        int(when_available), expires, hub.now(), origin, key="gid")
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
