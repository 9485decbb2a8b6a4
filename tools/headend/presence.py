"""Presence: what meters state, `unavailable` derived from missed contacts, and the
history of every change with its time."""

from . import devices

STATES = ("available", "available_restricted", "active", "available_off", "unavailable")
PRESENT = ("available", "active", "available_off")


def record(db, device, state, note, at, source):
    db.run("INSERT INTO presence(device, state, note, at, source) VALUES (?, ?, ?, ?, ?)",
           device, state, note, at, source)
    db.run("UPDATE devices SET presence = ?, presence_note = ?, presence_at = ?, derived = ? "
           "WHERE id = ?", state, note, at, int(source == "derived"), device)


def stated(hub, device, body, now):
    """A `presence` item {"state", "note"?} from the meter."""
    state, note = body.get("state"), body.get("note")
    if state not in STATES:
        return False
    note = note if isinstance(note, str) else None
    hub.db.run("UPDATE devices SET stated = ?, stated_note = ? WHERE id = ?", state, note, device)
    record(hub.db, device, state, note, now, "meter")
    if state in PRESENT:
        hub.wake(device)          # held when_available work may now go out
    return True


def contact(hub, device, now):
    """The meter called in: back to its stated presence if we had derived `unavailable`."""
    row = devices.get(hub.db, device)
    devices.touch(hub.db, device, now)
    if row["derived"]:
        record(hub.db, device, row["stated"], row["stated_note"], now, "contact")
        if row["stated"] in PRESENT:
            hub.wake(device)


def margin(settings, poll):
    return max(settings.margin_min, poll * settings.margin_factor)


def derive(hub, now):
    """Mark meters that missed their expected contact `unavailable`; returns their ids."""
    changed = []
    rows = hub.db.all("SELECT id, poll, last_contact FROM devices WHERE last_contact IS NOT NULL "
                      "AND presence != 'unavailable'")
    for row in rows:
        if hub.active[row["id"]]:
            continue              # an exchange (long-poll) is in progress right now
        expected = row["last_contact"] + row["poll"] + margin(hub.settings, row["poll"])
        if now > expected:
            record(hub.db, row["id"], "unavailable", "missed contact expected by %.0f" % expected,
                   now, "derived")
            changed.append(row["id"])
    return changed


def history(db, device, limit):
    return db.all("SELECT state, note, at, source FROM presence WHERE device = ? "
                  "ORDER BY id DESC LIMIT ?", device, limit)
