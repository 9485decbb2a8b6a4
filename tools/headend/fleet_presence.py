"""Presence: what meters state, `unavailable` derived from missed contacts or from an MQTT
Last Will, and the history of every change with its time."""

import time

from . import devices

STATES = ("available", "available_restricted", "active", "available_off", "unavailable")
PRESENT = ("available", "active", "available_off")
WILL = {"state": "unavailable", "note": "connection lost"}   # the MQTT Last Will's payload


def record(db, device, state, note, at, source):
    db.run("INSERT INTO presence(device, state, note, at, source) VALUES (?, ?, ?, ?, ?)",
           device, state, note, at, source)
    db.run("UPDATE devices SET presence = ?, presence_note = ?, presence_at = ?, derived = ? "
           "WHERE id = ?", state, note, at, int(source in ("derived", "lwt")), device)


def stated(hub, device, body, now):
    """A `presence` item {"state", "note"?} from the meter (or its bc/<id>/presence topic)."""
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
    row = hub.db.all("UPDATE devices SET last_contact = ? WHERE id = ? "
                     "RETURNING derived, stated, stated_note", now, device)[0]
    if row["derived"]:
        record(hub.db, device, row["stated"], row["stated_note"], now, "contact")
        if row["stated"] in PRESENT:
            hub.wake(device)


def announced(hub, device, body, now):
    """A message on the meter's MQTT presence topic: its stated presence (source `meter`),
    or the Last Will the broker published when its connection dropped (source `lwt`, kept
    until its next exchange or statement, like a derived `unavailable`). A message equal to
    the current presence (a retained copy seen again, or a statement also sent as an item)
    is not recorded twice. Returns "meter", "lwt", "same", or None if malformed."""
    if not isinstance(body, dict):
        return None
    state, note = body.get("state"), body.get("note")
    if state not in STATES:
        return None
    note = note if isinstance(note, str) and note else None     # "" is no note
    row = devices.get(hub.db, device)
    if (row["presence"], row["presence_note"] or None) == (state, note):
        return "same"
    if {"state": state, "note": note} == WILL:
        record(hub.db, device, state, note, now, "lwt")
        return "lwt"
    stated(hub, device, {"state": state, "note": note}, now)
    return "meter"


def margin(settings, poll):
    return max(settings.margin_min, poll * settings.margin_factor)


def derive(hub, now):
    """Mark meters that missed their expected contact `unavailable`; returns their ids."""
    changed = []
    # every meter is expected at least margin_min after its last contact: only older ones
    # can be late (10,000 rows through Python each second cost ~30 ms of the event loop)
    rows = hub.db.all("SELECT id, poll, transport, last_contact FROM devices WHERE "
                      "last_contact < ? AND presence != 'unavailable'",
                      now - hub.settings.margin_min)
    for row in rows:
        if hub.active[row["id"]]:
            continue              # an exchange (long-poll) is in progress right now
        poll = devices.next_for(row, hub.settings)
        expected = row["last_contact"] + poll + margin(hub.settings, poll)
        if now > expected:
            record(hub.db, row["id"], "unavailable",
                   "missed contact expected by %s" % readable_time(expected), now, "derived")
            changed.append(row["id"])
    return changed


def readable_time(unix):
    """A note's time as a person reads it: UTC to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def history(db, device, limit):
    return db.all("SELECT state, note, at, source FROM presence WHERE device = ? "
                  "ORDER BY id DESC LIMIT ?", device, limit)
