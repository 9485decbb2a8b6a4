"""The utility's peer allow rules (issue 12, 4; docs/security.md "Power and time"): sender
group -> target group -> ops, kept in the database and managed through the API
(`/v1/peer-rules`, utility tokens for every meter) and the CLI (`backchannel peer-rule`).
Rules in the head-end's config (`peer_rules`) still apply beside them. Peers are denied by
default: no rule, no send. A rule may name only the peer ops (policy.PEER_OPS); one naming
an op in policy.NEVER_FROM_PEERS (relay, set_config, update, reset_energy, reboot, key or URL
changes, ...) is refused with the reason, whoever asks."""

import time

from . import db as dbmod
from . import groups, policy


class RuleError(ValueError):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status


def parse(rule, db):
    """A rule {from, to, ops} as given: the checked rule (ops deduplicated, in order), or
    RuleError (400 malformed or forbidden, 404 unknown group) with the reason."""
    try:
        (rule,) = policy.check_rules([rule])
    except ValueError as e:
        raise RuleError(400, str(e).replace("peer_rules[0]", "peer rule")) from None
    for end in ("from", "to"):
        name = rule[end]
        if name != policy.ANY and (len(name) > 64 or groups.get(db, name) is None):
            raise RuleError(404, "unknown group %s" % name[:64])
    ops = []
    for op in rule["ops"]:
        if op not in ops:
            ops.append(op)
    return {"from": rule["from"], "to": rule["to"], "ops": ops}


def add(db, rule, by, now=None):
    """Store a checked rule; returns it with its id."""
    rule = parse(rule, db)
    with db.tx():
        db.run("INSERT INTO peer_rules(src, dst, ops, created, \"by\") VALUES (?, ?, ?, ?, ?)",
               rule["from"], rule["to"], dbmod.dumps(rule["ops"]),
               time.time() if now is None else now, by)
        rid = db.one("SELECT MAX(id) AS id FROM peer_rules")["id"]
    return get(db, rid)


def _out(row):
    return {"id": row["id"], "from": row["src"], "to": row["dst"],
            "ops": dbmod.loads(row["ops"]), "created": row["created"], "by": row["by"]}


def get(db, rid):
    row = db.one("SELECT * FROM peer_rules WHERE id = ?", rid)
    return None if row is None else _out(row)


def listing(db):
    return [_out(r) for r in db.all("SELECT * FROM peer_rules ORDER BY id")]


def remove(db, rid):
    """The removed rule, or None if there was none with that id."""
    rule = get(db, rid)
    if rule is not None:
        with db.tx():
            db.run("DELETE FROM peer_rules WHERE id = ?", rid)
    return rule


def in_force(hub):
    """Every rule that applies now: the head-end config's, then the database's. A stored
    rule is checked again as it is read: one that would let peers cut power never applies,
    even if written into the database behind the API's back."""
    out = list(hub.settings.peer_rules or ())
    for row in hub.db.all("SELECT src, dst, ops FROM peer_rules ORDER BY id"):
        rule = {"from": row["src"], "to": row["dst"], "ops": dbmod.loads(row["ops"])}
        try:
            policy.check_rules([rule])
        except ValueError:
            continue
        out.append(rule)
    return out
