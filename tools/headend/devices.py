"""Device registry (ids, keys, poll interval, ack) and operator/utility bearer tokens.
Plain functions over a Database, so the CLI admin commands can use them directly."""

import time

from . import signing, tokens
from .ids import check_device_id


class Conflict(ValueError):
    pass


def create(db, device_id, key=None, poll=0):
    """Register a device; returns its hex key (generated when not given)."""
    check_device_id(device_id)
    key = key or signing.new_key()
    if not signing.valid_key(key):
        raise ValueError("key must be 16 to 64 bytes written as hex")
    with db.tx():
        if get(db, device_id) is not None:
            raise Conflict("device %s already exists" % device_id)
        db.run("INSERT INTO devices(id, key, created, poll) VALUES (?, ?, ?, ?)",
               device_id, db.sealer.seal(device_id, key.lower()), time.time(), int(poll))
    return key.lower()


def get(db, device_id):
    """The device's row as a dict, its key opened (None if it does not open), or None."""
    row = db.one("SELECT * FROM devices WHERE id = ?", device_id)
    if row is None:
        return None
    out = dict(row)
    out["key"] = key_of(db, row)
    return out


def key_of(db, row):
    """The hex key of a devices row (its `key` column is sealed at rest)."""
    return db.sealer.open(row["id"], row["key"])


def all_devices(db):
    return db.all("SELECT d.*, (SELECT COUNT(*) FROM work w WHERE w.device = d.id AND "
                  "w.status IN ('queued', 'delivered')) AS open_work FROM devices d ORDER BY d.id")


def set_poll(db, device_id, seconds):
    db.run("UPDATE devices SET poll = ? WHERE id = ?", int(seconds), device_id)


def touch(db, device_id, now):
    db.write("UPDATE devices SET last_contact = ? WHERE id = ?", now, device_id)


def set_transport(db, device_id, transport):
    """How the meter exchanged last (http, mqtt, email or xmpp): work is pushed to it over
    MQTT, email and XMPP."""
    db.write("UPDATE devices SET transport = ? WHERE id = ? AND transport IS DISTINCT FROM ?",
           transport, device_id, transport)


def set_room(db, device_id, room):
    db.write("UPDATE devices SET room = ? WHERE id = ?", max(0, int(room)), device_id)


def next_for(row, settings):
    """`next` for a device: its poll; a meter on MQTT, email or XMPP with poll 0 (continuous
    long-poll, meaningless without a long-poll) heartbeats every settings.mqtt_heartbeat seconds."""
    if not row["poll"] and row["transport"] in ("mqtt", "email", "xmpp"):
        return int(settings.mqtt_heartbeat)
    return row["poll"]


def add_token(db, name, role, token=None, **kw):
    """Store a bearer token (hashed); returns the token (tokens.create)."""
    return tokens.create(db, name, role, token, **kw)


def lookup_token(db, token):
    """(name, role, groups) for a live stored token, or None."""
    return tokens.lookup(db, token)
