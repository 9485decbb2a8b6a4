"""Alarms and their escalation (001 ¶145), one module for every channel (the API and CLI
now; XMPP, email and the dashboard add themselves as channels and presence sources).

The utility keeps a per-group escalation list: operators in order, a timeout (default 120 s)
and the event kinds that raise an alarm. An alarm goes to the first *available* operator on
the list; with no ack within the timeout, to the next available one. At the end of the list
it goes round once more, then to everyone on the list, and is recorded `unacknowledged`.
`ack` is accepted from any channel, at any step (also after `unacknowledged`).

Everything is in the database (alarms, alarm_steps): deadlines are absolute times, so a
restarted head-end carries on where it stopped; tick() runs in the background sweep.

An operator is available when any presence source says so: the on-duty schedule
(duty.py), an open dashboard session, and whatever a channel registers (XMPP presence)."""

import logging

from . import duty
from .db import dumps, loads

log = logging.getLogger("backchannel.alarms")

DEFAULT_TIMEOUT_S = 120
DEFAULT_KINDS = ("interruption", "swell")
ALARM_ITEMS = ("event_start", "alarm")   # the meter's items that may raise an alarm
MAX_OPERATORS = 32


class EscalationError(ValueError):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# --- the lists (utility) ---

def set_list(db, group, operators, timeout_s=DEFAULT_TIMEOUT_S, kinds=DEFAULT_KINDS):
    if db.one("SELECT 1 FROM groups WHERE name = ?", group) is None:
        raise EscalationError(404, "unknown group %s" % group)
    operators = [o.strip() for o in operators]
    if not operators or len(operators) > MAX_OPERATORS or not all(operators):
        raise EscalationError(400, "an escalation list names 1 to %d operators" % MAX_OPERATORS)
    if len(set(operators)) != len(operators):
        raise EscalationError(400, "an operator appears twice in the list")
    if not 10 <= timeout_s <= 86400:
        raise EscalationError(400, "timeout_s must be within 10..86400")
    kinds = sorted(set(kinds))
    if not kinds:
        raise EscalationError(400, "name at least one event kind that raises an alarm")
    with db.tx():
        db.run("INSERT INTO escalation_lists(grp, operators, timeout_s, kinds) "
               "VALUES (?, ?, ?, ?) ON CONFLICT (grp) DO UPDATE SET operators = "
               "excluded.operators, timeout_s = excluded.timeout_s, kinds = excluded.kinds",
               group, dumps(operators), timeout_s, dumps(kinds))
    return get_list(db, group)


def get_list(db, group):
    row = db.one("SELECT * FROM escalation_lists WHERE grp = ?", group)
    if row is None:
        return None
    return {"group": group, "operators": loads(row["operators"]),
            "timeout_s": row["timeout_s"], "kinds": loads(row["kinds"])}


def delete_list(db, group):
    with db.tx():
        return db.run("DELETE FROM escalation_lists WHERE grp = ?", group).rowcount == 1


# --- presence sources and channels ---

def sources(hub):
    """Callables (hub, operator, now) -> a source name when it says the operator is
    available, else None. Channels append theirs (XMPP presence)."""
    if not hasattr(hub, "presence_sources"):
        hub.presence_sources = [duty.on_duty]
    return hub.presence_sources


def channels(hub):
    """Objects with `name` and notify(hub, operator, alarm) -> True if it reached them."""
    if not hasattr(hub, "alarm_channels"):
        hub.alarm_channels = [LogChannel()]
    return hub.alarm_channels


class LogChannel:
    """The head-end's log: always there, reaches the people who read it."""
    name = "log"

    def notify(self, hub, operator, alarm):
        log.warning("ALARM %d %s %s on %s -> %s", alarm["id"], alarm["kind"], alarm["state"],
                    alarm["device"], operator)
        return True


def available(hub, operator, now):
    """The name of the first source that says `operator` is available, or None."""
    for source in sources(hub):
        try:
            said = source(hub, operator, now)
        except Exception:       # one broken source must not stop an alarm
            log.exception("presence source %r failed", source)
            said = None
        if said:
            return said
    return None


# --- alarms ---

def on_item(hub, device, kind, body, now):
    """A stored meter item: raise an alarm for each group of the device whose list names
    the event's kind. Returns the alarm ids raised."""
    if kind not in ALARM_ITEMS or not isinstance(body, dict):
        return []
    if kind == "alarm" and body.get("state", "start") != "start":
        return []       # a meter alarm's end: the alarm it started is already raised
    what = body.get("kind")
    raised = []
    for row in hub.db.all("SELECT e.grp, e.kinds FROM escalation_lists e JOIN group_members m "
                          "ON m.name = e.grp WHERE m.device = ? ORDER BY e.grp", device):
        if what in loads(row["kinds"]):
            raised.append(raise_alarm(hub, device, row["grp"], str(what), body, now))
    return raised


def raise_alarm(hub, device, group, kind, body, now):
    db = hub.db
    with hub.tx():
        aid = db.insert("INSERT INTO alarms(device, grp, kind, body, raised, state, pos, "
                        "round) VALUES (?, ?, ?, ?, ?, 'open', -1, 0)", device, group, kind,
                        dumps(body), now, key="id")
        _step(db, aid, now, "raised", None, "%s on %s (group %s)" % (kind, device, group))
        _advance(hub, aid, now)
    return aid


def tick(hub, now):
    """Move on every alarm whose operator did not ack in time (the background sweep)."""
    due = hub.db.all("SELECT id, operator FROM alarms WHERE state = 'open' AND deadline <= ?",
                     now)
    for row in due:
        with hub.tx():
            _step(hub.db, row["id"], now, "timeout", row["operator"], "no ack in time")
            _advance(hub, row["id"], now)
    return len(due)


def ack(hub, alarm_id, who, channel, now):
    """Acknowledge an alarm from any channel; returns the alarm. 404 unknown, 409 acked."""
    db = hub.db
    with hub.tx():
        alarm = get(db, alarm_id)
        if alarm is None:
            raise EscalationError(404, "unknown alarm %s" % alarm_id)
        if alarm["state"] == "acked":
            raise EscalationError(409, "alarm %s was acknowledged by %s"
                                  % (alarm_id, alarm["acked_by"]))
        db.run("UPDATE alarms SET state = 'acked', acked_by = ?, acked_at = ?, deadline = NULL "
               "WHERE id = ?", who, now, alarm_id)
        _step(db, alarm_id, now, "acked", who, "by %s over %s" % (who, channel))
    return get(db, alarm_id)


def get(db, alarm_id, steps=False):
    row = db.one("SELECT * FROM alarms WHERE id = ?", alarm_id)
    if row is None:
        return None
    alarm = dict(row)
    alarm["body"] = loads(alarm["body"])
    del alarm["pos"]
    if steps:
        alarm["steps"] = [dict(r) for r in db.all(
            "SELECT at, step, operator, detail FROM alarm_steps WHERE alarm = ? ORDER BY id",
            alarm_id)]
    return alarm


def listing(db, state=None, groups=None, limit=100):
    """The newest alarms, optionally of one state and within some groups."""
    where, args = ["1 = 1"], []
    if state:
        where.append("state = ?")
        args.append(state)
    if groups is not None:
        where.append("grp IN (%s)" % ",".join("?" * len(groups)) if groups else "1 = 0")
        args += list(groups)
    rows = db.all("SELECT id FROM alarms WHERE %s ORDER BY id DESC LIMIT ?" % " AND ".join(where),
                  *args, limit)
    return [get(db, r["id"]) for r in rows]


def open_count(db, groups=None):
    """Alarms not yet acknowledged (open or unacknowledged), within `groups` if given."""
    if groups is None:
        return db.one("SELECT COUNT(*) AS n FROM alarms WHERE state != 'acked'")["n"]
    if not groups:
        return 0
    return db.one("SELECT COUNT(*) AS n FROM alarms WHERE state != 'acked' AND grp IN (%s)"
                  % ",".join("?" * len(groups)), *groups)["n"]


def _step(db, aid, now, step, operator, detail):
    db.run("INSERT INTO alarm_steps(alarm, at, step, operator, detail) VALUES (?, ?, ?, ?, ?)",
           aid, now, step, operator, detail)


def _advance(hub, aid, now):
    """Notify the next available operator after the current position (in the caller's
    transaction); at the end of the list go round once more, then tell everyone."""
    db = hub.db
    row = db.one("SELECT * FROM alarms WHERE id = ?", aid)
    esc = get_list(db, row["grp"])
    operators = esc["operators"] if esc else []
    timeout = esc["timeout_s"] if esc else DEFAULT_TIMEOUT_S
    pos, rnd = row["pos"], row["round"]
    while True:
        pos += 1
        if pos >= len(operators):
            if rnd == 0:
                rnd, pos = 1, -1
                _step(db, aid, now, "repeat", None, "end of the list: once more from the top")
                continue
            db.run("UPDATE alarms SET state = 'unacknowledged', operator = NULL, "
                   "deadline = NULL, pos = ?, round = ? WHERE id = ?", pos, rnd, aid)
            alarm = get(db, aid)
            for op in operators:
                reached = _notify(hub, op, alarm)
                _step(db, aid, now, "everyone", op, "notified over %s" % reached)
            _step(db, aid, now, "unacknowledged", None, "nobody acknowledged it")
            return
        op = operators[pos]
        source = available(hub, op, now)
        if source is None:
            _step(db, aid, now, "skipped", op, "unavailable")
            continue
        db.run("UPDATE alarms SET operator = ?, deadline = ?, pos = ?, round = ? WHERE id = ?",
               op, now + timeout, pos, rnd, aid)
        reached = _notify(hub, op, get(db, aid))
        _step(db, aid, now, "notified", op, "available (%s); notified over %s; ack within %g s"
              % (source, reached, timeout))
        return


def _notify(hub, operator, alarm):
    reached = []
    for channel in channels(hub):
        try:
            if channel.notify(hub, operator, alarm):
                reached.append(channel.name)
        except Exception:       # a broken channel must not stop the escalation
            log.exception("alarm channel %s failed", channel.name)
    return ", ".join(reached) or "no channel"
