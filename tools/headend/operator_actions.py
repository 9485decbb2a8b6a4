"""Operator actions taken outside the REST API (chat over XMPP now, mail later): queue work
for a meter with the REST API's checks in the same order (scope, role, size, policy, quota),
recorded in the audit log the same way. A refusal is an ActionRefused with the status and
reason the REST API would answer."""

import time

from . import audit, devices, policy, work_size, workq
from .auth import Principal
from .db import dumps, loads


class ActionRefused(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def principal_named(db, name, now=None):
    """The Principal of the newest live token called `name`, or None."""
    now = time.time() if now is None else now
    row = db.one("SELECT role, groups FROM tokens WHERE name = ? AND revoked IS NULL AND "
                 "(expires IS NULL OR expires > ?) ORDER BY created DESC LIMIT 1", name, now)
    if row is None:
        return None
    groups = loads(row["groups"])
    return Principal(name, row["role"], None if groups is None else tuple(groups))


def queue(hub, who, device_id, op, args, channel, expires_in=3600):
    """Queue `op` for `device_id` as `who`; returns the work row. Audited as
    `<channel>:add_work` with the outcome."""
    try:
        row = _queue(hub, who, device_id, op, args, expires_in)
    except ActionRefused as e:
        _audit(hub, who, channel, device_id, "%d: %s" % (e.status, e.reason), op, args)
        raise
    _audit(hub, who, channel, device_id, "ok", op, args)
    return row


def _queue(hub, who, device_id, op, args, expires_in):
    db = hub.db
    dev = devices.get(db, device_id)
    if dev is None or not who.sees(db, device_id):
        raise ActionRefused(404, "unknown device %s" % device_id)
    refused = who.may_send(op)
    if refused:
        raise ActionRefused(403, refused)
    expires = workq.expiry(hub.now(), expires_in)
    size = work_size.item_bytes(op, args, who.work_role, who.origin, expires, device_id)
    too_large = work_size.refusal(size, dev["transport"], device_id)
    if too_large:
        raise ActionRefused(413, too_large)
    try:
        with hub.tx() as db:
            policy.check_operator_send(hub, who, device_id, op)
            policy.check_quota(hub, device_id, len(dumps(args)))
            work_id = workq.enqueue(hub, device_id, op, args, who.work_role, who.origin,
                                    expires)
            return workq.get(db, work_id)
    except policy.Refused as e:
        raise ActionRefused(e.status, e.reason) from None


def _audit(hub, who, channel, device_id, outcome, op, args):
    audit.record(hub.db, who.name, who.role, "%s:add_work" % channel, "device:%s" % device_id,
                 outcome, {"op": op, "args": args})
