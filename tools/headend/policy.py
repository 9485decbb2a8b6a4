"""What cuts power or time (docs/security.md "Power and time"; issue 12 items 2 and 4):

- `set_time`, like `reset_energy`, needs a utility token; so does `relay` sent to a group.
- An operator's `relay` goes to one meter at a time: refused (409) while another relay for
  that meter is still open, and at most `relay_per_minute` per token (429, Retry-After).
- Peers (a meter's `send`) are denied by default: only the utility's allow rules (sender
  group -> target group -> ops: peer_rules.py, through the API or the head-end's config
  `peer_rules`) let one through, never
  for the ops in NEVER_FROM_PEERS, and at most `peer_sends_per_minute` per sender.

Counts come from the work table itself (durable, shared by every process on the database)."""

from . import workq

UTILITY_OPS = ("reset_energy", "set_time", "price", "shed", "tariff", "freeze",
               "set_url", "set_encoding")     # the last two: guarded, with fallback
GUARDED_OPS = ("rotate_key",)     # only through their own endpoint (key_rotation.py)
PEER_OPS = ("read", "get_events", "set_presence")       # what a rule may allow
NEVER_FROM_PEERS = ("relay", "set_config", "update", "reset_energy", "reboot", "set_time",
                    "price", "shed", "tariff", "freeze",
                    "send", "message", "update_key", "rotate_key", "set_url", "set_encoding")
ANY = "*"


class Refused(Exception):
    def __init__(self, status, reason, retry_after=None):
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after


def check_operator_send(hub, who, device, op):
    """Refused, or None: the relay rules for one meter's work queued by `who`."""
    if op != "relay" or who.work_role == "utility":
        return
    open_relay = hub.db.one("SELECT num FROM work WHERE device = ? AND op = 'relay' AND "
                            "status IN ('queued', 'delivered') AND executed = 0 AND "
                            "expires >= ? LIMIT 1", device, int(hub.now()))
    if open_relay is not None:
        raise Refused(409, "a relay for %s is still open (%s): wait for its outcome or "
                           "cancel it" % (device, workq.wid(open_relay["num"])))
    limit = hub.settings.relay_per_minute
    since = hub.now() - 60
    recent = hub.db.all("SELECT created FROM work WHERE origin = ? AND op = 'relay' AND "
                        "created > ? ORDER BY created LIMIT ?", who.origin, since, limit)
    if len(recent) >= limit:
        wait = max(1, int(recent[0]["created"] - since + 1))
        raise Refused(429, "an operator may send %d relay commands a minute: try again in "
                           "%d s" % (limit, wait), retry_after=wait)


def check_quota(hub, device, size):
    """Refused (429), or None: may `size` more bytes of work be queued for `device`?"""
    s = hub.settings
    row = hub.db.one("SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(args)), 0) AS bytes FROM work "
                     "WHERE device = ? AND status IN ('queued', 'delivered') AND executed = 0",
                     device)
    if s.max_open_work and row["n"] >= s.max_open_work:
        raise Refused(429, "%s has %d work items open (quota %d): let them run or expire, or "
                           "cancel some" % (device, row["n"], s.max_open_work), retry_after=60)
    if s.max_open_bytes and row["bytes"] + size > s.max_open_bytes:
        raise Refused(429, "%s has %d bytes of work open (quota %d)"
                           % (device, row["bytes"], s.max_open_bytes), retry_after=60)


def check_group_quota(hub, members, size):
    for device in members:
        check_quota(hub, device, size)


def check_group_send(who, op):
    if op == "relay" and who.work_role != "utility":
        raise Refused(403, "relay to a group requires a utility token (an operator's relay "
                           "goes to one meter at a time)")


def check_rules(rules):
    """The `peer_rules` setting, checked when the head-end starts: ValueError saying why."""
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise ValueError("peer_rules must be a list of {from, to, ops}")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or set(rule) != {"from", "to", "ops"}:
            raise ValueError("peer_rules[%d] must be an object with from, to and ops" % i)
        for end in ("from", "to"):
            if not isinstance(rule[end], str) or not rule[end]:
                raise ValueError("peer_rules[%d].%s must be a group name or *" % (i, end))
        ops = rule["ops"]
        if not isinstance(ops, list) or not ops or not all(isinstance(o, str) for o in ops):
            raise ValueError("peer_rules[%d].ops must be a list of ops" % i)
        for op in ops:
            if op in NEVER_FROM_PEERS:
                raise ValueError("peer_rules[%d]: %s is never allowed from a peer" % (i, op))
            if op not in PEER_OPS:
                raise ValueError("peer_rules[%d]: %s is not a peer op (%s)"
                                 % (i, op, ", ".join(PEER_OPS)))
    return rules


def peer_refusal(hub, sender, target, op):
    """None, or why meter `sender` may not send `op` to `target` (the reason goes back to
    the sender as its result)."""
    if op in NEVER_FROM_PEERS:
        return "op %s is never allowed from a peer" % op
    from .peer_rules import in_force
    if not any(op in r["ops"] and _member(hub.db, sender, r["from"])
               and _member(hub.db, target, r["to"]) for r in in_force(hub)):
        return "no peer rule allows %s to send %s to %s" % (sender, op, target)
    limit = hub.settings.peer_sends_per_minute
    n = hub.db.one("SELECT COUNT(*) AS n FROM work WHERE origin = ? AND role = 'peer' AND "
                   "created > ?", "device:%s" % sender, hub.now() - 60)["n"]
    if n >= limit:
        return "rate limit: a meter may send %d peer requests a minute" % limit
    return None


def _member(db, device, group):
    if group == ANY:
        return True
    return db.one("SELECT 1 FROM group_members WHERE name = ? AND device = ?",
                  group, device) is not None
