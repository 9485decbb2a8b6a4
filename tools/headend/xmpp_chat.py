"""What an operator may type in a chat with a meter's JID (docs/xmpp.md): `read`,
`relay open|close`, `presence`, `events`, `ack ALARM`, `help` (and `ping`, which the
gateway answers itself: xmpp_probe.py). Work goes through the same
queue, roles, policy and audit as the REST API (operator_actions.py); the answer to `read`
and `relay` comes back in the chat when the meter has run it (xmpp_gateway.py)."""

import time

from . import devices, escalation, operator_actions, workq
from .db import loads

HELP = ("commands: read | relay open | relay close | presence | ping | events | ack ALARM-ID"
        " | help")
RELAY = {"open": "open", "close": "closed", "closed": "closed"}
EVENTS_SHOWN = 5


def handle(hub, who, meter, text):
    """(reply, work row or None) for `text` typed by `who` in the chat with `meter`."""
    words = text.strip().lower().split()
    if not words or words[0] == "help":
        return HELP, None
    cmd, args = words[0], words[1:]
    if cmd == "ack" and len(args) == 1 and args[0].isdigit():
        return ack_alarm(hub, who, int(args[0])), None
    if devices.get(hub.db, meter) is None or not who.sees(hub.db, meter):
        return "refused: unknown meter %s" % meter, None
    if cmd == "read" and not args:
        return _queue(hub, who, meter, "read", {})
    if cmd == "relay" and len(args) == 1 and args[0] in RELAY:
        return _queue(hub, who, meter, "relay", {"state": RELAY[args[0]]})
    if cmd == "presence" and not args:
        return presence_line(hub, meter), None
    if cmd == "events" and not args:
        return _events(hub, meter), None
    return "unknown command %r; %s" % (text.strip()[:40], HELP), None


def _queue(hub, who, meter, op, args):
    try:
        row = operator_actions.queue(hub, who, meter, op, args, "xmpp")
    except operator_actions.ActionRefused as e:
        return "refused (%d): %s" % (e.status, e.reason), None
    return "queued %s as %s; the answer follows" % (op, workq.wid(row["num"])), row


def ack_alarm(hub, who, alarm_id, channel="xmpp"):
    """An operator's `ack N` over chat or mail: the answer line (refusals included)."""
    alarm = escalation.get(hub.db, alarm_id)
    if alarm is None or not who.sees_group(alarm["grp"]):
        return "refused: unknown alarm %d" % alarm_id
    try:
        escalation.ack(hub, alarm_id, who.name, channel, hub.now())
    except escalation.EscalationError as e:
        return "refused: %s" % e
    return "alarm %d acknowledged" % alarm_id


def presence_line(hub, meter):
    """One meter's presence, its note and last contact, as chat and mail answer it."""
    d = devices.get(hub.db, meter)
    contact = d["last_contact"]
    return "%s: %s%s; last contact %s" % (
        meter, d["presence"], " (%s)" % d["presence_note"] if d["presence_note"] else "",
        time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(contact)) if contact else "never")


def _events(hub, meter):
    rows = hub.db.all("SELECT body, received FROM items WHERE device = ? AND kind = 'event' "
                      "ORDER BY rowid DESC LIMIT ?", meter, EVENTS_SHOWN)
    if not rows:
        return "%s: no events" % meter
    lines = []
    for r in rows:
        e = loads(r["body"])
        lines.append("%s %s %s s" % (time.strftime("%m-%d %H:%M:%SZ", time.gmtime(
            r["received"])), e.get("kind"), e.get("duration_s", "?")))
    return "\n".join(lines)


def result_text(row):
    """The chat line for finished work."""
    result = loads(row["result"]) if row["result"] else None
    wid = workq.wid(row["num"])
    if row["status"] == "done":
        return "%s %s: done%s" % (wid, row["op"], ": %s" % _brief(result) if result else "")
    return "%s %s: %s%s" % (wid, row["op"], row["status"],
                            " (%s)" % row["reason"] if row["reason"] else "")


def _brief(result):
    if isinstance(result, dict) and isinstance(result.get("reading"), dict):
        r = result["reading"]
        return ", ".join("%s=%s" % (k, r[k]) for k in ("vrms", "irms", "p", "pf", "f") if k in r)
    text = str(result)
    return text if len(text) < 300 else text[:297] + "..."
