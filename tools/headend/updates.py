"""Firmware update progress: the meter's `update` items {version, state, percent?, reason?}
(docs/ota.md). The latest state per (device, version) is kept with the time it arrived,
and the device's latest report (plus the last version it installed) on its row."""

from . import releases
from .db import dumps, loads

STATES = ("downloading", "verified", "installing", "installed", "rolled_back", "rejected")
FINAL = ("installed", "rolled_back", "rejected")
REASON_MAX = 200


def parse(body):
    """(version, state, percent, reason) of a well-formed `update` item body, or None."""
    version, state = body.get("version"), body.get("state")
    percent, reason = body.get("percent"), body.get("reason")
    if not isinstance(version, str) or not releases.VERSION.fullmatch(version):
        return None
    if state not in STATES:
        return None
    if percent is not None and (type(percent) is not int or not 0 <= percent <= 100):
        return None
    if reason is not None and not isinstance(reason, str):
        return None
    return version, state, percent, None if reason is None else reason[:REASON_MAX]


def on_item(hub, device, body, now):
    """Record an `update` item; False (stored, no effect) if malformed."""
    parsed = parse(body)
    if parsed is None:
        return False
    version, state, percent, reason = parsed
    db = hub.db
    if state == "rejected" and _installed(db, device, version):
        return True      # a re-offer of the version it runs: refused, and still installed
    db.run("INSERT INTO updates(device, version, state, percent, reason, at) "
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device, version) DO UPDATE SET "
           "state = excluded.state, percent = excluded.percent, reason = excluded.reason, "
           "at = excluded.at", device, version, state, percent, reason, now)
    row = db.one("SELECT firmware FROM devices WHERE id = ?", device)
    before = loads(row["firmware"]) or {}
    installed = version if state == "installed" else before.get("installed")
    db.run("UPDATE devices SET firmware = ? WHERE id = ?",
           dumps({"version": version, "state": state, "percent": percent, "reason": reason,
                  "at": now, "installed": installed}), device)
    return True


def _installed(db, device, version):
    row = db.one("SELECT state FROM updates WHERE device = ? AND version = ?", device, version)
    return row is not None and row["state"] == "installed"


def listing(db, version=None, device=None):
    """Latest states, by device then version; filtered by version and/or device."""
    where, args = [], []
    if version is not None:
        where.append("version = ?")
        args.append(version)
    if device is not None:
        where.append("device = ?")
        args.append(device)
    sql = "SELECT device, version, state, percent, reason, at FROM updates"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [dict(r) for r in db.all(sql + " ORDER BY device, version", *args)]

